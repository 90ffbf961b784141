"""Alert-fatigue control: a card kind a clinician overrode for a patient is not shown to that patient
again for the kind's snooze period (cards/cards.yaml `snooze_days`), unless its evidence changed."""

from __future__ import annotations

from datetime import datetime, timedelta

from cds_service.knowledge import Knowledge
from cds_service.rules.base import Finding
from cds_service.store.cards import evidence_hash, first_evidence_hash


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
    kind = finding.kind
    # An override of a card issued before the current fingerprint form carries the first one.
    times = (
        overrides.get((kind, fingerprint(finding))),
        overrides.get((kind, first_evidence_hash(kind, finding.facts, finding.evidence))),
    )
    overridden_at = max((t for t in times if t is not None), default=None)
    # A difference, not a sum: a stored time near year 9999 cannot overflow.
    return overridden_at is not None and now - overridden_at < timedelta(days=days)
