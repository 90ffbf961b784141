"""Issued-card fingerprints: the hashed text never changes, so snoozes already stored keep matching."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cds_service.store.cards import evidence_hash

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
def test_fingerprints_are_those_already_stored(
    kind: str, facts: dict[str, Any], evidence: list[str]
) -> None:
    assert evidence_hash(kind, facts, tuple(evidence)) == hashed_as_first_released(
        kind, facts, evidence
    )


def test_a_changed_result_changes_the_fingerprint() -> None:
    facts = {"value": "8.1", "unit": "mg/dL"}
    before = evidence_hash("calcium-low", facts, ("- Calcium 8.1 mg/dL (2026-11-01)",))
    after = evidence_hash("calcium-low", facts, ("- Calcium 8.0 mg/dL (2026-11-20)",))
    assert before != after
