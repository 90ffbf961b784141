"""Cause 2, spasticity after upper motor neuron damage: a review of antispasticity treatment."""

from __future__ import annotations

from cds_service.clinical_text import affirmed
from cds_service.fhir.data import Resource, label, texts
from cds_service.rules.common import condition_line, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """The spasticity review card, and whether spasticity points to this cause.

    When every code on file documents hemiparesis or paralysis without stating spasticity, the card
    asks for an assessment for spasticity (its `hemiparesis` wording) and states none.
    """
    coded = ev.conditions("spasticity", active_only=True)
    if not coded:
        return [], False
    stated = [c for c in coded if states_spasticity(ev, c)]
    shown = stated or coded
    # Listed: every muscle relaxant; "treated" only by an antispasticity agent (the Beers relaxants
    # such as cyclobenzaprine do not treat spasticity).
    treating = ev.medicines("muscle-relaxants")
    antispastic = ev.medicines("antispasticity-agents")
    facts = {
        "diagnosis": label(shown[0].get("code")) or "",
        "untreated": not antispastic,
        "medicines": names(treating),
        "on_medicines": bool(treating),
    }
    evidence = [condition_line(c) for c in coded] + list(map(medicine_line, treating))
    variant = None if stated else "hemiparesis"
    return [Finding("spasticity-review", facts, tuple(evidence), variant=variant)], True


def states_spasticity(ev: Evaluation, condition: Resource) -> bool:
    """Whether a spasticity-set Condition states spasticity: by a code outside the hemiparesis set,
    or by its text ("Right spastic hemiparesis" on a hemiparesis code)."""
    code = condition.get("code")
    if not ev.coded(code, "hemiparesis"):
        return True
    words = ev.knowledge.valueset("spasticity-text").name_pattern
    lexicon = ev.knowledge.eeg_reading
    return words is not None and any(affirmed(t, words, lexicon) for t in texts(code))
