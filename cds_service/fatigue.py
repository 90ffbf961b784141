"""Alert-fatigue control: a card kind a clinician overrode for a patient is not shown to that patient
again for the kind's snooze period (cards/cards.yaml `snooze_days`), unless its evidence changed."""

from __future__ import annotations

from datetime import datetime, timedelta

from cds_service.knowledge import Knowledge
from cds_service.rules.base import Finding
from cds_service.store.cards import evidence_hash


def fingerprint(finding: Finding) -> str:
    """The evidence hash of a finding (what the card says about this patient)."""
    return evidence_hash(finding.kind, finding.facts, finding.evidence)


def snoozed(
    finding: Finding,
    knowledge: Knowledge,
    overrides: dict[tuple[str, str], datetime],
    now: datetime,
) -> bool:
    """Whether an override of the same card with the same evidence is still within its snooze period."""
    days = knowledge.cards[finding.kind]["snooze_days"]
    if not days or not overrides:  # the usual case: no hash to work out
        return False
    overridden_at = overrides.get((finding.kind, fingerprint(finding)))
    return overridden_at is not None and now < overridden_at + timedelta(days=days)
