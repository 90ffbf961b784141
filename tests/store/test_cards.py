"""Issued cards: batch storing."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from cds_service.store import engine_for, migrate
from cds_service.store.cards import (
    _INSERT_SIZES,
    IssuedCard,
    _chunks,
    patient_hash,
    record_issued,
)
from cds_service.store.schema import issued_cards


@pytest.mark.parametrize("count", [1, 7, 64, 100, 127, 300])
def test_every_card_of_a_batch_is_stored_as_sqlalchemy_would_store_it(
    database_url: str, count: int
) -> None:
    migrate(database_url)
    at = datetime(2026, 11, 24, 9, 30, 1, 250, tzinfo=UTC)
    # A batch holds the cards of several calls, three cards each; a call's cards share one issue
    # time object, as hook calls make them.
    calls = [at + timedelta(seconds=k) for k in range(count // 3 + 1)]
    times = [calls[n // 3] for n in range(count)]
    cards = [
        IssuedCard(f"00000000-0000-7000-8000-{n:012d}", "svc", f"kind-{n}", "info", "p", "e", t)
        for n, t in enumerate(times)
    ]
    record_issued(database_url, cards)
    with engine_for(database_url).connect() as connection:
        rows = connection.execute(select(issued_cards).order_by(issued_cards.c.card_uuid)).all()
    assert [r.card_uuid for r in rows] == [c.card_uuid for c in cards]
    assert [r.card_kind for r in rows] == [c.card_kind for c in cards]
    # Read back through SQLAlchemy's types: each stored time is the one given (SQLite keeps text).
    assert [r.issued_at.replace(tzinfo=UTC) for r in rows] == times


def test_batches_are_cut_into_a_few_statement_sizes() -> None:
    # A connection caches one prepared INSERT per size: a size per batch length grew every
    # worker's memory by megabytes (seen in `make bench`).
    for count in range(300):
        chunks = list(_chunks(count))
        sizes = [size for _, size in chunks]
        assert [start for start, _ in chunks] == [sum(sizes[:i]) for i in range(len(sizes))]
        assert sum(sizes) == count
        assert set(sizes) <= set(_INSERT_SIZES)
        assert len(sizes) <= count // _INSERT_SIZES[0] + len(_INSERT_SIZES)


def test_patient_hashes_are_hmac_sha256_of_the_id_under_the_key() -> None:
    import hmac

    for key, patient in [("k1", "p-1"), ("k1", "p-2"), ("k2", "p-1"), ("k1", "p-1")]:
        expected = hmac.new(key.encode(), patient.encode(), hashlib.sha256).hexdigest()
        assert patient_hash(key, patient) == expected
