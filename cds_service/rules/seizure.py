"""Cause 3, focal seizures: seizure diagnoses, EEG results, and antiepileptic treatment."""

from __future__ import annotations

import re

from cds_service.fhir.data import Resource, clinical_time, codings, texts
from cds_service.rules.base import Finding, HookInput
from cds_service.rules.common import (
    condition_line,
    conditions_in,
    day,
    medication_name,
    medications_in,
    reference,
    results_in,
)

# Statuses that put an EEG "on file" (a preliminary report means the study was done); only final,
# amended and corrected reports are read for their findings.
EEG_ON_FILE = {"preliminary", "final", "amended", "corrected"}
ABNORMAL_INTERPRETATION = {"A", "AA", "ABN"}
_EPILEPTIFORM = re.compile(r"epileptiform|seizure activity|spike[- ]and[- ]wave|sharp waves?|ictal")
_NEGATED = re.compile(r"\b(no|not|without|absence of|negative for|free of)\b[^.;]{0,40}$")


def evaluate(hook: HookInput) -> tuple[list[Finding], bool]:
    """Seizure-related cards, and whether seizures or an abnormal EEG point to this cause."""
    kb = hook.knowledge
    record = hook.record
    seizures = conditions_in(record, kb.valueset("seizure"), active_only=False)
    eeg_vs = kb.valueset("eeg")
    eegs = results_in(record.diagnostic_reports, eeg_vs, EEG_ON_FILE) + results_in(
        record.observations, eeg_vs, EEG_ON_FILE
    )
    eeg_procedures = [
        p
        for p in record.procedures
        if p.get("status") == "completed" and eeg_vs.matches(p.get("code"))
    ]
    abnormal = [
        e for e in eegs if e.get("status") in {"final", "amended", "corrected"} and eeg_abnormal(e)
    ]
    aeds = medications_in(record, kb.valueset("antiepileptics"))
    findings: list[Finding] = []

    if seizures and not eegs and not eeg_procedures:
        findings.append(
            Finding(
                "eeg-recommended",
                {"diagnosis": _names(seizures)},
                tuple(condition_line(c) for c in seizures),
            )
        )
    if abnormal and not aeds:
        latest = abnormal[0]
        findings.append(
            Finding(
                "eeg-epileptiform-untreated",
                {"date": day(clinical_time(latest)), "eeg_finding": _summary_of(latest)},
                tuple(
                    f"- EEG {day(clinical_time(e))}: {_summary_of(e)} ({reference(e)})"
                    for e in abnormal
                ),
            )
        )
    inducers = medications_in(record, kb.valueset("enzyme-inducing-antiepileptics"))
    if inducers:
        names = sorted({medication_name(record, m) for m in inducers})
        findings.append(
            Finding(
                "enzyme-inducing-antiepileptic",
                {"medicines": ", ".join(names)},
                tuple(
                    f"- {medication_name(record, m)} ({m.get('status')}; {reference(m)})"
                    for m in inducers
                ),
            )
        )
    return findings, bool(seizures or abnormal)


def eeg_abnormal(result: Resource) -> bool:
    """Whether an EEG result reports abnormal or epileptiform activity (coded or in its conclusion)."""
    for concept in result.get("interpretation") or []:
        if any(c.code.upper() in ABNORMAL_INTERPRETATION for c in codings(concept)):
            return True
    statements = texts(result.get("conclusionCode") or [])
    for key in ("conclusion", "valueString"):
        if isinstance(result.get(key), str):
            statements.append(result[key])
    statements.extend(texts(result.get("valueCodeableConcept")))
    return any(_affirms_epileptiform(s) for s in statements)


def _affirms_epileptiform(text: str) -> bool:
    lowered = text.lower()
    for match in _EPILEPTIFORM.finditer(lowered):
        if not _NEGATED.search(lowered[: match.start()]):
            return True
    return bool(
        re.search(r"\babnormal\b", lowered)
        and not _NEGATED.search(lowered[: lowered.find("abnormal")])
    )


def _summary_of(result: Resource) -> str:
    if isinstance(result.get("conclusion"), str):
        return str(result["conclusion"])[:120]
    shown = texts(result.get("conclusionCode") or []) + texts(result.get("interpretation") or [])
    return "; ".join(shown)[:120] or "abnormal"


def _names(conditions: list[Resource]) -> str:
    from cds_service.fhir.data import label

    return ", ".join(sorted({label(c.get("code")) or "seizure" for c in conditions}))
