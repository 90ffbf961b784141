"""Cause 2, spasticity after upper motor neuron damage: a review of antispasticity treatment."""

from __future__ import annotations

from cds_service.rules.base import Finding, HookInput
from cds_service.rules.common import (
    condition_line,
    conditions_in,
    medication_name,
    medications_in,
    reference,
)


def evaluate(hook: HookInput) -> tuple[list[Finding], bool]:
    """The spasticity review card, and whether spasticity points to this cause."""
    kb = hook.knowledge
    spasticity = conditions_in(hook.record, kb.valueset("spasticity"), active_only=True)
    if not spasticity:
        return [], False
    # Listed: every muscle relaxant; "treated" only by an antispasticity agent (the Beers relaxants
    # such as cyclobenzaprine do not treat spasticity).
    treating = medications_in(hook.record, kb.valueset("muscle-relaxants"))
    antispastic = medications_in(hook.record, kb.valueset("antispasticity-agents"))
    names = sorted({medication_name(hook.record, m) for m in treating})
    facts = {
        "diagnosis": _label(spasticity[0]),
        "untreated": not antispastic,
        "medicines": ", ".join(names) if names else "none on file",
        "treatment_status": (
            "Current antispasticity / muscle-relaxant medicines: " + ", ".join(names) + "."
            if names
            else "No antispasticity or muscle-relaxant medicine is on file."
        ),
    }
    evidence = [condition_line(c) for c in spasticity] + [
        f"- {medication_name(hook.record, m)} ({m.get('status')}; {reference(m)})" for m in treating
    ]
    return [Finding("spasticity-review", facts, tuple(evidence))], True


def _label(condition: dict[str, object]) -> str:
    from cds_service.fhir.data import label

    return label(condition.get("code")) or "spasticity"
