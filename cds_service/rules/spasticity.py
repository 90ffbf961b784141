"""Cause 2, spasticity after upper motor neuron damage: a review of antispasticity treatment."""

from __future__ import annotations

from cds_service.clinical_text import affirmed
from cds_service.fhir.data import Resource, label, texts
from cds_service.rules.common import condition_line, medicine_line, names
from cds_service.rules.evaluation import Evaluation, Finding, condition_is_active


def evaluate(ev: Evaluation) -> tuple[list[Finding], bool]:
    """The spasticity review card, and whether spasticity points to this cause.

    Spasticity is documented by a code of the spasticity set, or written in the text of another
    active Condition (a local code: "Spastic right leg after stroke"). When every code on file
    documents hemiparesis or paralysis without stating spasticity, the card asks for an assessment
    for spasticity (its `hemiparesis` wording) and states none.
    """
    coded = ev.conditions("spasticity", active_only=True)
    written = written_spasticity(ev, coded)
    if not (coded or written):
        return [], False
    stated = [c for c in coded if states_spasticity(ev, c)] + written
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
    evidence = [condition_line(c) for c in [*coded, *written]] + list(map(medicine_line, treating))
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


def written_spasticity(ev: Evaluation, coded: list[Resource]) -> list[Resource]:
    """Active Conditions outside the spasticity codes whose text affirms spasticity (NegEx, not
    negated or hedged; cards/valuesets/spasticity-written.yaml)."""
    words = ev.knowledge.valueset("spasticity-written").name_pattern
    if words is None:
        return []
    lexicon = ev.knowledge.eeg_reading
    return [
        c
        for c in ev.record.conditions
        if condition_is_active(c)
        and not any(c is k for k in coded)
        and any(affirmed(t, words, lexicon) for t in texts(c.get("code")))
    ]
