"""Order review: one card per combination, however many of its orders find it."""

from __future__ import annotations

from cds_service.rules.evaluation import Finding
from cds_service.rules.orders import _medicines_named, _without_subsumed


def _found(*findings: Finding) -> dict[tuple[str, frozenset[str]], Finding]:
    return {(f.kind, _medicines_named(f)): f for f in findings}


def test_a_combination_named_in_full_by_another_card_of_its_kind_is_dropped() -> None:
    pair = Finding("relaxant-with-cns-depressant", {"relaxants": "A", "depressants": "C"})
    fuller = Finding("relaxant-with-cns-depressant", {"relaxants": "A, B", "depressants": "C"})
    other = Finding("relaxant-with-cns-depressant", {"relaxants": "D", "depressants": "C"})

    assert _without_subsumed(_found(pair, fuller, other)) == [fuller, other]


def test_cards_of_other_kinds_or_tied_to_an_order_are_kept() -> None:
    burden = Finding("cns-active-burden", {"medicines": "A, B, C"})
    pair = Finding("relaxant-with-cns-depressant", {"relaxants": "A", "depressants": "C"})
    # Each order's own card carries its remove action: never folded into another order's card.
    second = Finding("duplicate-muscle-relaxant", {"medicine": "A", "others": "B", "order": "o/1"})
    third = Finding(
        "duplicate-muscle-relaxant", {"medicine": "C", "others": "A, B", "order": "o/2"}
    )

    assert _without_subsumed(_found(burden, pair, second, third)) == [burden, pair, second, third]
