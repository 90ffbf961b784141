"""Cause 3, focal seizures: seizure diagnoses, EEG results, and antiepileptic treatment."""

from __future__ import annotations

import re

from cds_service.fhir.data import Resource, clinical_time, codings, items, label, status, texts
from cds_service.rules.common import condition_line, day, names
from cds_service.rules.evaluation import Evaluation, Finding, reference

# Statuses that put an EEG "on file" (a preliminary report means the study was done); only final,
# amended and corrected reports are read for their findings.
EEG_ON_FILE = frozenset({"preliminary", "final", "amended", "corrected"})
ABNORMAL_INTERPRETATION = {"A", "AA", "ABN"}
_EPILEPTIFORM = re.compile(
    r"epileptiform|seizure activity|spike[- ]and[- ]wave|sharp waves?|\bictal"
)
_NEGATION = re.compile(r"\b(no|not|without|absence of|negative for|free of|nor)\b")
# A negation reaches only to the end of its clause: "no seizures captured, but frequent epileptiform
# discharges" affirms the discharges.
_CLAUSE_BREAK = re.compile(r"[.;:,]|\b(?:but|however|although|though|yet|whereas)\b")
# EEG conclusions are a few sentences; only the start of an unusually long text is read.
MAX_CONCLUSION = 4000


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """Seizure-related cards, and whether seizures or an abnormal EEG point to this cause."""
    seizures = ev.conditions("seizure", active_only=False)
    eegs = ev.reports("eeg", EEG_ON_FILE) + ev.results("eeg", EEG_ON_FILE)
    eeg_procedures = ev.procedures_done("eeg")
    read = [e for e in eegs if status(e) in {"final", "amended", "corrected"}]
    abnormal = [e for e in read if eeg_abnormal(e)]
    epileptiform = [e for e in read if eeg_epileptiform(e)]
    aeds = ev.medicines("antiepileptics")
    findings: list[Finding] = []

    if seizures and not eegs and not eeg_procedures:
        findings.append(
            Finding(
                "eeg-recommended",
                {"diagnosis": _diagnoses(seizures)},
                tuple(condition_line(c) for c in seizures),
            )
        )
    if epileptiform and not aeds:
        latest = epileptiform[0]
        findings.append(
            Finding(
                "eeg-epileptiform-untreated",
                {"date": day(clinical_time(latest)), "eeg_finding": _summary_of(latest)},
                tuple(
                    f"- EEG {day(clinical_time(e))}: {_summary_of(e)} ({reference(e)})"
                    for e in epileptiform
                ),
            )
        )
    inducers = ev.medicines("enzyme-inducing-antiepileptics")
    if inducers:
        findings.append(
            Finding(
                "enzyme-inducing-antiepileptic",
                {"medicines": names(inducers)},
                tuple(f"- {m.name} ({m.request.get('status')}; {m.ref})" for m in inducers),
            )
        )
    return findings, bool(seizures or abnormal)


def eeg_abnormal(result: Resource) -> bool:
    """Whether an EEG points to seizures: epileptiform activity, or a coded abnormal interpretation.

    The word "abnormal" alone in a conclusion does not count: focal slowing over an infarct is common
    and abnormal, but it is not a sign of seizures.
    """
    for concept in items(result.get("interpretation")):
        if any(c.code.upper() in ABNORMAL_INTERPRETATION for c in codings(concept)):
            return True
    return eeg_epileptiform(result)


def eeg_epileptiform(result: Resource) -> bool:
    """Whether an EEG result reports epileptiform activity (in its conclusion or coded conclusion)."""
    return any(_affirmed(s, _EPILEPTIFORM) for s in _statements(result))


def _statements(result: Resource) -> list[str]:
    statements = texts(items(result.get("conclusionCode")))
    for key in ("conclusion", "valueString"):
        if isinstance(result.get(key), str):
            statements.append(result[key])
    statements.extend(texts(result.get("valueCodeableConcept")))
    return statements


def _affirmed(text: str, finding: re.Pattern[str]) -> bool:
    """Whether `finding` occurs in `text` at least once outside the scope of a negation.

    A negation covers what follows it up to the end of its clause; each clause is scanned once.
    """
    for clause in _CLAUSE_BREAK.split(text[:MAX_CONCLUSION].lower()):
        if not clause:
            continue
        hit = finding.search(clause)
        if hit is None:
            continue
        negation = _NEGATION.search(clause)
        if negation is None or hit.start() < negation.start():
            return True
    return False


def _summary_of(result: Resource) -> str:
    if isinstance(result.get("conclusion"), str):
        return str(result["conclusion"])[:120]
    shown = texts(items(result.get("conclusionCode"))) + texts(items(result.get("interpretation")))
    return "; ".join(shown)[:120] or "abnormal"


def _diagnoses(conditions: list[Resource]) -> str:
    return ", ".join(sorted({label(c.get("code")) or "seizure" for c in conditions}))
