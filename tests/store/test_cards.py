"""Issued cards: fingerprints that stay fixed (stored snoozes keep matching), and storing them."""

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
from cds_service.store.cards import IssuedCard, evidence_hash, patient_hash, record_issued
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
def test_fingerprints_are_those_the_first_release_stored(
    kind: str, facts: dict[str, Any], evidence: list[str]
) -> None:
    once = evidence_hash(kind, facts, tuple(evidence))
    assert once == hashed_as_first_released(kind, facts, evidence)
    assert once == evidence_hash(kind, dict(reversed(facts.items())), list(evidence))


def test_the_fingerprint_form_is_fixed() -> None:
    # Written out by hand, so a change of form (which would stop stored snoozes matching) fails.
    facts = {"value": 8.1, "flag": True, "unit": "mg/dL"}
    canonical = '["calcium-low", [["flag", "True"], ["unit", "mg/dL"], ["value", "8.1"]], ["- Ca"]]'
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert evidence_hash("calcium-low", facts, ("- Ca",)) == expected


def test_facts_json_cannot_hold_still_have_a_fingerprint() -> None:
    facts = {"count": 2**70, "note": "\ud800"}
    assert evidence_hash("k", facts, ()) == hashed_as_first_released("k", facts, [])


def test_a_changed_result_changes_the_fingerprint() -> None:
    facts = {"value": "8.1", "unit": "mg/dL"}
    before = evidence_hash("calcium-low", facts, ("- Calcium 8.1 mg/dL (2026-11-01)",))
    after = evidence_hash("calcium-low", facts, ("- Calcium 8.0 mg/dL (2026-11-20)",))
    assert before != after


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
