"""Snoozing: an override holds a card back for its kind's period unless the evidence changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds_service.fatigue import fingerprint, snoozed
from cds_service.knowledge import Knowledge
from cds_service.rules.base import Finding

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FINDING = Finding(
    "calcium-low", {"value": "8.1", "unit": "mg/dL"}, ("- Calcium 8.1 mg/dL (2026-11-20)",)
)


def test_an_override_of_the_same_evidence_snoozes(knowledge: Knowledge) -> None:
    days = knowledge.cards["calcium-low"]["snooze_days"]
    assert days > 0
    overrides = {("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=1)}
    assert snoozed(FINDING, knowledge, overrides, NOW)
    assert not snoozed(FINDING, knowledge, overrides, NOW + timedelta(days=days))


def test_other_evidence_or_another_kind_is_not_snoozed(knowledge: Knowledge) -> None:
    changed = Finding(FINDING.kind, FINDING.facts, ("- Calcium 7.9 mg/dL (2026-11-24)",))
    overrides = {("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=1)}
    assert not snoozed(changed, knowledge, overrides, NOW)
    other_kind = Finding("calcium-workup", FINDING.facts, FINDING.evidence)
    assert not snoozed(other_kind, knowledge, overrides, NOW)
