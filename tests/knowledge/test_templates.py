"""Suggestion templates are filled exactly as string.Template.safe_substitute fills them."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from cds_service.knowledge.loader import fill_template

NAMES = ["medicine", "order", "patient_id", "today", "Medicine", "_x1"]
PIECES = st.sampled_from(
    ["$", "$$", "${", "}", "{", " ", "x", "1", ".", "é", *(f"${n}" for n in NAMES)]
    + [f"${{{n}}}" for n in NAMES]
)


@given(
    st.lists(PIECES, max_size=12).map("".join),
    st.dictionaries(st.sampled_from(NAMES), st.text(max_size=5)),
)
def test_strings_are_filled_as_safe_substitute_fills_them(
    template: str, facts: dict[str, str]
) -> None:
    assert fill_template(template, facts) == string.Template(template).safe_substitute(facts)


def test_a_resource_template_is_copied_with_its_strings_filled() -> None:
    template = {
        "subject": {"reference": "Patient/${patient_id}"},
        "note": [{"text": "for ${medicine}, $$5 ${unknown}"}],
        "priority": 1,
    }
    filled = fill_template(template, {"patient_id": "p-1", "medicine": "baclofen"})
    assert filled == {
        "subject": {"reference": "Patient/p-1"},
        "note": [{"text": "for baclofen, $5 ${unknown}"}],
        "priority": 1,
    }
    assert template["subject"] == {"reference": "Patient/${patient_id}"}  # not changed
