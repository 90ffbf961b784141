"""The patient-view service: who is in scope, then each cause's rule, then the differential."""

from __future__ import annotations

from cds_service.clinical_text import affirmed
from cds_service.fhir.data import status, texts
from cds_service.rules import calcium, medication_safety, seizure, spasticity
from cds_service.rules.common import infarctions
from cds_service.rules.evaluation import (
    USABLE_RESULT,
    Evaluation,
    Finding,
    condition_is_active,
)


def in_scope(ev: Evaluation) -> bool:
    """A cerebral infarction (current or past, not refuted or entered in error) and documented leg cramps."""
    return bool(infarctions(ev)) and cramps_documented(ev)


def cramps_documented(ev: Evaluation) -> bool:
    """Active leg cramps: coded (Condition or Observation), or named in the text of a Condition or
    Observation coded only locally, where the name is not negated (NegEx, cards/eeg-reading.yaml)."""
    if ev.conditions("leg-cramps", active_only=True) or ev.results("leg-cramps"):
        return True
    names = ev.knowledge.valueset("leg-cramps-text").name_pattern
    if names is None:
        return False
    written = [c for c in ev.record.conditions if condition_is_active(c)]
    written += [o for o in ev.record.observations if status(o) in USABLE_RESULT]
    lexicon = ev.knowledge.eeg_reading
    return any(affirmed(text, names, lexicon) for r in written for text in texts(r.get("code")))


def evaluate(ev: Evaluation) -> list[Finding]:
    """All findings for a patient-view call.

    The medication-safety checks run for every patient, as they do when the same medicines are
    ordered (order-select, order-sign): a combination is as dangerous whether or not cramps are
    charted. Quinine is flagged only with documented cramps (it is the cramp use that is unsafe).
    The three causes' cards and the differential need the scope (infarction and leg cramps).
    """
    cramps = cramps_documented(ev)
    safety = medication_safety.evaluate(ev, cramps)
    if not (cramps and infarctions(ev)):
        return [*safety, *calcium.supplement_with_high_calcium(ev)]
    calcium_findings, calcium_points = calcium.evaluate(ev)
    spasticity_findings, spasticity_points = spasticity.evaluate(ev)
    seizure_findings, seizure_points = seizure.evaluate(ev)
    findings = [*calcium_findings, *spasticity_findings, *seizure_findings, *safety]
    if not (calcium_points or spasticity_points or seizure_points):
        # A calcium workup or EEG review card, when shown, holds that part of the workup: the
        # differential points to it rather than saying it twice.
        shown = {f.kind for f in findings}
        reading = calcium.calcium_reading(ev)
        facts = {
            "calcium_card": "calcium-workup" in shown,
            # A calcium in the look-back that is not low: the workup is not "order a calcium",
            # and a high one is no reason to mention calcium + vitamin D.
            "calcium_high": reading is not None and reading.high,
            "calcium_not_low": reading is not None,
            "eeg_card": "eeg-report-review" in shown,
        }
        findings.append(Finding("differential-workup", facts))
    return calcium.offer_dxa(ev, findings)
