"""Issued cards: fingerprints that stay fixed (stored snoozes keep matching), and batch storing."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cds_service.store import engine_for, migrate
from cds_service.store.cards import (
    _INSERT_SIZES,
    IssuedCard,
    _chunks,
    evidence_hash,
    first_evidence_hash,
    patient_hash,
    record_issued,
)
from cds_service.store.schema import issued_cards

# Any text an EHR can put in a card (control characters, quotes, non-ASCII, astral planes).
TEXT = st.text()
FACT = st.one_of(TEXT, st.booleans(), st.integers(), st.floats(allow_nan=False))


def hashed_as_first_released(kind: str, facts: dict[str, Any], evidence: list[str]) -> str:
    """The fingerprint as the first release stored it."""
    canonical = json.dumps([kind, sorted((k, str(v)) for k, v in facts.items()), list(evidence)])
    return hashlib.sha256(canonical.encode()).hexdigest()


@given(
    kind=TEXT, facts=st.dictionaries(TEXT, FACT, max_size=8), evidence=st.lists(TEXT, max_size=6)
)
def test_first_release_fingerprints_are_those_it_stored(
    kind: str, facts: dict[str, Any], evidence: list[str]
) -> None:
    assert first_evidence_hash(kind, facts, tuple(evidence)) == hashed_as_first_released(
        kind, facts, evidence
    )


def test_the_fingerprint_is_the_sorted_compact_json_of_the_card() -> None:
    # Written out by hand, so a change of form (which would stop stored snoozes matching) fails.
    facts = {"value": "8.1", "flag": True, "unit": "mg/dL"}
    canonical = b'["calcium-low",{"flag":true,"unit":"mg/dL","value":"8.1"},["- Ca 8.1 \xc2\xb5"]]'
    expected = hashlib.sha256(canonical).hexdigest()
    assert evidence_hash("calcium-low", facts, ("- Ca 8.1 \u00b5",)) == expected
    assert (
        evidence_hash("calcium-low", dict(reversed(facts.items())), ["- Ca 8.1 \u00b5"]) == expected
    )


@given(
    kind=TEXT, facts=st.dictionaries(TEXT, FACT, max_size=8), evidence=st.lists(TEXT, max_size=6)
)
def test_every_finding_has_one_fixed_fingerprint(
    kind: str, facts: dict[str, Any], evidence: list[str]
) -> None:
    # Text JSON cannot hold as it is (lone surrogates) takes the first release's form, every time.
    once = evidence_hash(kind, facts, tuple(evidence))
    assert once == evidence_hash(kind, dict(reversed(facts.items())), list(evidence))
    assert len(once) == 64


def test_unencodable_facts_are_hashed_in_the_first_form() -> None:
    facts = {"count": 2**70, "note": "\ud800"}
    assert evidence_hash("k", facts, ()) == hashed_as_first_released("k", facts, [])


def test_a_changed_result_changes_the_fingerprint() -> None:
    facts = {"value": "8.1", "unit": "mg/dL"}
    before = evidence_hash("calcium-low", facts, ("- Calcium 8.1 mg/dL (2026-11-01)",))
    after = evidence_hash("calcium-low", facts, ("- Calcium 8.0 mg/dL (2026-11-20)",))
    assert before != after


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
