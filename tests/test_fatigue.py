"""Snoozing: an override holds a card back for its kind's period, whichever fingerprint form it carries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds_service.fatigue import fingerprint, snoozed
from cds_service.knowledge import Knowledge
from cds_service.rules.base import Finding
from cds_service.store.cards import first_evidence_hash

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
FINDING = Finding(
    "calcium-low", {"value": "8.1", "unit": "mg/dL"}, ("- Calcium 8.1 mg/dL (2026-11-20)",)
)


def first_form(finding: Finding) -> str:
    return first_evidence_hash(finding.kind, finding.facts, finding.evidence)


def test_the_two_forms_differ() -> None:
    assert fingerprint(FINDING) != first_form(FINDING)


def test_an_override_of_the_same_evidence_snoozes(knowledge: Knowledge) -> None:
    days = knowledge.cards["calcium-low"]["snooze_days"]
    assert days > 0
    overrides = {("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=1)}
    assert snoozed(FINDING, knowledge, overrides, NOW)
    assert not snoozed(FINDING, knowledge, overrides, NOW + timedelta(days=days))


def test_an_override_stored_with_the_first_fingerprint_form_still_snoozes(
    knowledge: Knowledge,
) -> None:
    # Feedback recorded by releases before 2026-11-25 carries the first form.
    overrides = {("calcium-low", first_form(FINDING)): NOW - timedelta(days=1)}
    assert snoozed(FINDING, knowledge, overrides, NOW)


def test_the_latest_override_of_either_form_counts(knowledge: Knowledge) -> None:
    days = knowledge.cards["calcium-low"]["snooze_days"]
    overrides = {
        ("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=days + 5),
        ("calcium-low", first_form(FINDING)): NOW - timedelta(days=1),
    }
    assert snoozed(FINDING, knowledge, overrides, NOW)
    overrides = {
        ("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=1),
        ("calcium-low", first_form(FINDING)): NOW - timedelta(days=days + 5),
    }
    assert snoozed(FINDING, knowledge, overrides, NOW)


def test_other_evidence_or_another_kind_is_not_snoozed(knowledge: Knowledge) -> None:
    changed = Finding(FINDING.kind, FINDING.facts, ("- Calcium 7.9 mg/dL (2026-11-24)",))
    overrides = {("calcium-low", fingerprint(FINDING)): NOW - timedelta(days=1)}
    assert not snoozed(changed, knowledge, overrides, NOW)
    other_kind = Finding("calcium-workup", FINDING.facts, FINDING.evidence)
    assert not snoozed(other_kind, knowledge, overrides, NOW)
