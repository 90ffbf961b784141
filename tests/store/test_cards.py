"""Issued cards: storing them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cds_service.store import engine_for, migrate
from cds_service.store.cards import IssuedCard, patient_hash, record_issued
from cds_service.store.schema import issued_cards


@pytest.mark.parametrize("count", [1, 5, 300])
def test_every_card_is_stored(database_url: str, count: int) -> None:
    migrate(database_url)
    at = datetime(2026, 11, 24, 9, 30, 1, 250, tzinfo=UTC)
    times = [at + timedelta(seconds=n // 3) for n in range(count)]
    cards = [
        IssuedCard(f"00000000-0000-4000-8000-{n:012d}", "svc", f"kind-{n}", "info", "p", "e", t)
        for n, t in enumerate(times)
    ]
    record_issued(database_url, cards)
    with engine_for(database_url).connect() as connection:
        rows = connection.execute(select(issued_cards).order_by(issued_cards.c.card_uuid)).all()
    assert [r.card_uuid for r in rows] == [c.card_uuid for c in cards]
    assert [r.card_kind for r in rows] == [c.card_kind for c in cards]
    assert [r.issued_at.replace(tzinfo=UTC) for r in rows] == times


def test_patient_hashes_are_hmac_sha256_of_the_id_under_the_key() -> None:
    import hmac

    for key, patient in [("k1", "p-1"), ("k1", "p-2"), ("k2", "p-1"), ("k1", "p-1")]:
        expected = hmac.new(key.encode(), patient.encode(), hashlib.sha256).hexdigest()
        assert patient_hash(key, patient) == expected
