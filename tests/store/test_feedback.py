"""Feedback items: storing them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cds_service.store import migrate
from cds_service.store.cards import IssuedCard, overrides_for, record_issued
from cds_service.store.feedback import save_feedback

CARD = "00000000-0000-4000-8000-000000000001"
ISSUED = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
RECEIVED = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("outcome_timestamp", "instant"),
    [
        ("2026-11-24T09:30:00-05:00", datetime(2026, 11, 24, 14, 30, tzinfo=UTC)),
        ("2026-11-24T23:30:00+09:30", datetime(2026, 11, 24, 14, 0, tzinfo=UTC)),
        ("2026-11-24T14:30:00Z", datetime(2026, 11, 24, 14, 30, tzinfo=UTC)),
    ],
)
def test_an_override_takes_effect_at_its_instant_whatever_its_offset(
    database_url: str, outcome_timestamp: str, instant: datetime
) -> None:
    """SQLite keeps no offset: a local time stored as given was read back as UTC (a snooze hours
    early or late)."""
    migrate(database_url)
    record_issued(database_url, [IssuedCard(CARD, "svc", "kind", "info", "p", "e", ISSUED)])
    item = {"card": CARD, "outcome": "overridden", "outcomeTimestamp": outcome_timestamp}
    at = datetime.fromisoformat(outcome_timestamp.replace("Z", "+00:00"))
    assert save_feedback(database_url, "svc", [item], [at], RECEIVED) == 1
    assert overrides_for(database_url, "p") == {("kind", "e"): instant}
