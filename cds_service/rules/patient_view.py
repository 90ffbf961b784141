"""The patient-view service: who is in scope, then each cause's rule, then the differential."""

from __future__ import annotations

from cds_service.rules import calcium, medication_safety, seizure, spasticity
from cds_service.rules.base import Finding, HookInput
from cds_service.rules.common import conditions_in, results_in


def in_scope(hook: HookInput) -> bool:
    """A cerebral infarction (current or past, not refuted or entered in error) and documented leg cramps."""
    kb = hook.knowledge
    record = hook.record
    infarction = conditions_in(record, kb.valueset("cerebral-infarction"), active_only=False)
    cramps = conditions_in(record, kb.valueset("leg-cramps"), active_only=True) or results_in(
        record, kb.valueset("leg-cramps")
    )
    return bool(infarction and cramps)


def evaluate(hook: HookInput) -> list[Finding]:
    """All findings for a patient-view call; none when the patient is out of scope."""
    if not in_scope(hook):
        return []
    calcium_findings, calcium_points = calcium.evaluate(hook)
    spasticity_findings, spasticity_points = spasticity.evaluate(hook)
    seizure_findings, seizure_points = seizure.evaluate(hook)
    findings = [*calcium_findings, *spasticity_findings, *seizure_findings]
    findings.extend(medication_safety.evaluate(hook))
    if not (calcium_points or spasticity_points or seizure_points):
        findings.append(Finding("differential-workup"))
    return findings
