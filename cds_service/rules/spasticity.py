"""Cause 2, spasticity after upper motor neuron damage: a review of antispasticity treatment."""

from __future__ import annotations

from cds_service.fhir.data import label
from cds_service.rules.common import condition_line, names
from cds_service.rules.evaluation import Evaluation, Finding


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """The spasticity review card, and whether spasticity points to this cause."""
    spasticity = ev.conditions("spasticity", active_only=True)
    if not spasticity:
        return [], False
    # Listed: every muscle relaxant; "treated" only by an antispasticity agent (the Beers relaxants
    # such as cyclobenzaprine do not treat spasticity).
    treating = ev.medicines("muscle-relaxants")
    antispastic = ev.medicines("antispasticity-agents")
    listed = names(treating)
    facts = {
        "diagnosis": label(spasticity[0].get("code")) or "spasticity",
        "untreated": not antispastic,
        "medicines": listed or "none on file",
        "treatment_status": (
            f"Current antispasticity / muscle-relaxant medicines: {listed}."
            if listed
            else "No antispasticity or muscle-relaxant medicine is on file."
        ),
    }
    evidence = [condition_line(c) for c in spasticity] + [
        f"- {m.name} ({m.request.get('status')}; {m.ref})" for m in treating
    ]
    return [Finding("spasticity-review", facts, tuple(evidence))], True
