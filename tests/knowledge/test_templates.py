"""Card text and order templates: one `{name}` syntax, filled from facts and checked at load."""

from __future__ import annotations

import pytest

from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import CALL_VALUES, fill, placeholders


def test_a_string_is_filled_and_a_missing_fact_shows_rather_than_fails() -> None:
    assert fill("Stop {medicine} ({order}) {{literal}}", {"medicine": "baclofen"}) == (
        "Stop baclofen ([order?]) {literal}"
    )
    assert fill("deletable: {deletable}", {"deletable": True}) == "deletable: True"


def test_a_resource_template_is_copied_with_its_strings_filled() -> None:
    template = {
        "subject": {"reference": "Patient/{patient_id}"},
        "note": [{"text": "for {medicine}"}],
        "priority": 1,
    }
    filled = fill(template, {"patient_id": "p-1", "medicine": "baclofen"})
    assert filled == {
        "subject": {"reference": "Patient/p-1"},
        "note": [{"text": "for baclofen"}],
        "priority": 1,
    }
    assert template["subject"] == {"reference": "Patient/{patient_id}"}  # not changed


def test_placeholders_are_read_from_strings_lists_and_mappings() -> None:
    template = {"a": "{x} and {y}", "b": ["{z}", 3, "{{not_a_name}}"]}
    assert placeholders(template) == {"x", "y", "z"}


@pytest.mark.parametrize("text", ["{a.b}", "{a[0]}", "{a!r}", "{a:>5}", "{}", "{0}", "{a"])
def test_only_plain_name_placeholders_are_templates(text: str) -> None:
    with pytest.raises(ValueError):
        placeholders(text)


def test_every_card_kind_names_only_its_declared_facts(knowledge: Knowledge) -> None:
    # The loader checks this; here it is read back from what it built, so the check is not vacuous.
    for kind in knowledge.cards.values():
        texts: list[object] = [*kind.text.summaries, kind.text.detail]
        for variant in kind.variants.values():
            texts.extend([*variant.text.summaries, variant.text.detail])
        texts.extend(p.text for phrases in kind.phrases.values() for p in phrases)
        for suggestion in kind.suggestions:
            texts.append(suggestion.label)
            texts.extend(action.description for action in suggestion.actions)
            texts.extend(action.resource for action in suggestion.actions if action.resource)
        named = set().union(*map(placeholders, texts))
        assert named <= {*kind.facts, *kind.phrases, *CALL_VALUES}, kind.key
