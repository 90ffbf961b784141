"""The patient-view service: who is in scope, then each cause's rule, then the differential."""

from __future__ import annotations

from cds_service.rules import calcium, medication_safety, seizure, spasticity
from cds_service.rules.evaluation import Evaluation, Finding


def in_scope(ev: Evaluation) -> bool:
    """A cerebral infarction (current or past, not refuted or entered in error) and documented leg cramps."""
    infarction = ev.conditions("cerebral-infarction", active_only=False)
    cramps = ev.conditions("leg-cramps", active_only=True) or ev.results("leg-cramps")
    return bool(infarction and cramps)


def evaluate(ev: Evaluation) -> list[Finding]:
    """All findings for a patient-view call; none when the patient is out of scope."""
    if not in_scope(ev):
        return []
    calcium_findings, calcium_points = calcium.evaluate(ev)
    spasticity_findings, spasticity_points = spasticity.evaluate(ev)
    seizure_findings, seizure_points = seizure.evaluate(ev)
    findings = [*calcium_findings, *spasticity_findings, *seizure_findings]
    findings.extend(medication_safety.evaluate(ev))
    if not (calcium_points or spasticity_points or seizure_points):
        findings.append(Finding("differential-workup"))
    return calcium.offer_dxa(ev, findings)
