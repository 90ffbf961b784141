"""Alert-fatigue control: a card kind a clinician overrode for a patient is not shown to that patient
again for the kind's snooze period (cards/cards.yaml `snooze_days`), unless its evidence changed."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from cds_service.knowledge import Knowledge
from cds_service.rules.evaluation import Finding


def evidence_hash(finding: Finding) -> str:
    """A fingerprint of what a card says about the patient; a new result changes it.

    SHA-256 of the compact JSON of `[kind, facts (keys sorted), evidence lines]`, UTF-8; a fact JSON
    cannot hold is written as its text.
    """
    canonical = json.dumps(
        [finding.kind, finding.facts, list(finding.evidence)],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def snoozed(
    finding: Finding,
    knowledge: Knowledge,
    overrides: dict[tuple[str, str], datetime],
    now: datetime,
) -> bool:
    """Whether an override of the same card with the same evidence is still within its snooze period."""
    days = knowledge.cards[finding.kind].snooze_days
    overridden_at = overrides.get((finding.kind, evidence_hash(finding))) if days else None
    # A difference, not a sum: a stored time near year 9999 cannot overflow.
    return overridden_at is not None and now - overridden_at < timedelta(days=days)
