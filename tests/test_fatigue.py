"""Snoozing: an override holds a card back for its kind's period while the evidence is the same."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds_service.fatigue import evidence_hash, snoozed
from cds_service.knowledge import Knowledge
from cds_service.rules.evaluation import Finding

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FINDING = Finding(
    "calcium-low", {"value": "8.1", "unit": "mg/dL"}, ("- Calcium 8.1 mg/dL (2026-11-20)",)
)
# Any text an EHR can put in a card (control characters, quotes, non-ASCII, lone surrogates).
TEXT = st.text()
FACT = st.one_of(TEXT, st.booleans(), st.integers(), st.floats(allow_nan=False))


def test_the_evidence_hash_is_the_sorted_compact_json_of_the_card() -> None:
    # Written out by hand, so a change of form (which would stop stored snoozes matching) fails.
    facts = {"value": "8.1", "flag": True, "unit": "mg/dL"}
    canonical = b'["calcium-low",{"flag":true,"unit":"mg/dL","value":"8.1"},["- Ca 8.1 \xc2\xb5"]]'
    expected = hashlib.sha256(canonical).hexdigest()
    assert evidence_hash(Finding("calcium-low", facts, ("- Ca 8.1 \u00b5",))) == expected
    reordered = Finding("calcium-low", dict(reversed(facts.items())), ("- Ca 8.1 \u00b5",))
    assert evidence_hash(reordered) == expected


@given(
    kind=TEXT, facts=st.dictionaries(TEXT, FACT, max_size=8), evidence=st.lists(TEXT, max_size=6)
)
def test_every_finding_has_one_fixed_evidence_hash(
    kind: str, facts: dict[str, Any], evidence: list[str]
) -> None:
    once = evidence_hash(Finding(kind, facts, tuple(evidence)))
    assert once == evidence_hash(Finding(kind, dict(reversed(facts.items())), tuple(evidence)))
    assert len(once) == 64


def test_facts_json_cannot_hold_as_they_are_still_hash() -> None:
    finding = Finding("k", {"count": 2**70, "note": "\ud800", "when": NOW})
    assert evidence_hash(finding) == evidence_hash(Finding("k", dict(finding.facts)))


def test_a_changed_result_changes_the_evidence_hash() -> None:
    changed = Finding(FINDING.kind, FINDING.facts, ("- Calcium 8.0 mg/dL (2026-11-24)",))
    assert evidence_hash(FINDING) != evidence_hash(changed)


def test_an_override_of_the_same_evidence_snoozes(knowledge: Knowledge) -> None:
    days = knowledge.cards["calcium-low"].snooze_days
    assert days > 0
    overrides = {("calcium-low", evidence_hash(FINDING)): NOW - timedelta(days=1)}
    assert snoozed(FINDING, knowledge, overrides, NOW)
    assert snoozed(FINDING, knowledge, overrides, NOW + timedelta(days=days - 2, hours=23))
    assert not snoozed(FINDING, knowledge, overrides, NOW + timedelta(days=days - 1))


def test_other_evidence_or_another_kind_is_not_snoozed(knowledge: Knowledge) -> None:
    changed = Finding(FINDING.kind, FINDING.facts, ("- Calcium 7.9 mg/dL (2026-11-24)",))
    overrides = {("calcium-low", evidence_hash(FINDING)): NOW - timedelta(days=1)}
    assert not snoozed(changed, knowledge, overrides, NOW)
    other_kind = Finding("calcium-workup", FINDING.facts, FINDING.evidence)
    assert not snoozed(other_kind, knowledge, overrides, NOW)
