"""Card text: summaries that fit without a cut word, no SNOMED semantic tags, phrases chosen by facts."""

from __future__ import annotations

import json
import re
from html import unescape

import cmarkgfm
import pytest
from flask.testing import FlaskClient
from markdown_it import MarkdownIt

from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import DETAIL_LIMIT, SUMMARY_LIMIT
from cds_service.render import fit_summary, markdown_literal, render_card, shorten, untagged
from cds_service.rules.evaluation import Finding
from tests.conftest import FIXTURES, SERVICE_ID

CALL = {"patient_id": "p", "today": "2026-11-24"}
LONG = "Hemiplegia and hemiparesis following cerebral infarction affecting left non-dominant side"


def test_the_first_summary_that_fits_is_shown() -> None:
    summaries = ("Spasticity ({diagnosis}): review treatment", "Spasticity: review treatment")
    assert (
        fit_summary(summaries, {"diagnosis": "I69.351"}) == "Spasticity (I69.351): review treatment"
    )
    assert fit_summary(summaries, {"diagnosis": LONG * 2}) == "Spasticity: review treatment"


def test_an_overlong_fact_is_shortened_at_a_word_and_the_action_is_kept() -> None:
    summary = fit_summary(
        ("{medicine} with a partner: remove the draft order",), {"medicine": LONG * 3}
    )
    assert len(summary) <= SUMMARY_LIMIT
    assert summary.endswith("…"[:0] + " with a partner: remove the draft order")
    shown = summary.split(" with a partner")[0]
    assert shown.endswith("…")
    assert (shown[:-1] + " ") in (LONG * 3 + " ")  # cut after a whole word


@pytest.mark.parametrize("limit", [12, 40, 60, 88])
def test_shorten_never_cuts_a_word(limit: int) -> None:
    cut = shorten(LONG, limit)
    assert len(cut) <= limit
    assert cut.endswith("…")
    assert LONG.startswith(cut[:-1]) and LONG[len(cut) - 1] == " "


def test_semantic_tags_are_removed_from_displays() -> None:
    assert untagged("Cerebrovascular accident (disorder) (2026-02-14)") == (
        "Cerebrovascular accident (2026-02-14)"
    )
    assert untagged("Spasticity (finding)") == "Spasticity"
    assert untagged("Calcium (mg/dL)") == "Calcium (mg/dL)"


def test_a_card_never_shows_a_semantic_tag(knowledge: Knowledge) -> None:
    finding = Finding(
        "spasticity-review",
        {
            "diagnosis": "Spasticity (finding)",
            "untreated": True,
            "medicines": "",
            "on_medicines": False,
        },
        ("- Spasticity (finding) (2026-02-14; Condition/c-1)",),
    )
    card = render_card(finding, knowledge.cards["spasticity-review"], Clock(), CALL)
    assert "(finding)" not in card["summary"] + card["detail"]
    assert card["summary"] == "Post-stroke spasticity (Spasticity): review antispasticity treatment"


def test_the_hemiparesis_wording_asks_for_an_assessment(knowledge: Knowledge) -> None:
    facts = {"diagnosis": LONG, "untreated": True, "medicines": "", "on_medicines": False}
    finding = Finding("spasticity-review", facts, variant="hemiparesis")
    card = render_card(finding, knowledge.cards["spasticity-review"], Clock(), CALL)
    assert card["summary"] == f"Hemiparesis ({LONG}): assess for spasticity"
    assert "no spasticity diagnosis was found" in card["detail"]


def test_a_phrase_is_chosen_by_the_facts(knowledge: Knowledge) -> None:
    kind = knowledge.cards["spasticity-review"]
    on = {
        "diagnosis": "Spasticity",
        "untreated": False,
        "medicines": "baclofen",
        "on_medicines": True,
    }
    off = {**on, "medicines": "", "on_medicines": False}
    on_card = render_card(Finding("spasticity-review", on), kind, Clock(), CALL)
    off_card = render_card(Finding("spasticity-review", off), kind, Clock(), CALL)
    assert "medicines: baclofen." in on_card["detail"]
    assert "No antispasticity or muscle-relaxant medicine is on file." in off_card["detail"]


def test_evidence_beyond_the_detail_limit_is_counted_not_shown(knowledge: Knowledge) -> None:
    lines = tuple(
        f"- Epilepsy, entry {n} (2020-01-{n % 28 + 1:02}; Condition/c-{n})" for n in range(60)
    )
    facts = {"diagnosis": "Epilepsy", "new_seizure": False, "treated": True}
    card = render_card(
        Finding("eeg-recommended", facts, lines), knowledge.cards["eeg-recommended"], Clock(), CALL
    )
    assert len(card["detail"]) <= DETAIL_LIMIT
    shown = [line for line in lines if line in card["detail"]]
    assert shown == list(lines[: len(shown)]) and 0 < len(shown) < len(lines)
    assert f"- and {len(lines) - len(shown)} more on file" in card["detail"]
    assert card["detail"].endswith(knowledge.cards["eeg-recommended"].citations)


def test_evidence_that_fits_is_shown_whole(knowledge: Knowledge) -> None:
    lines = ("- Epilepsy (2020-01-01; Condition/c-1)",)
    facts = {"diagnosis": "Epilepsy", "new_seizure": False, "treated": True}
    card = render_card(
        Finding("eeg-recommended", facts, lines), knowledge.cards["eeg-recommended"], Clock(), CALL
    )
    assert "more on file" not in card["detail"] and lines[0] in card["detail"]


def test_the_first_evidence_line_is_always_shown(knowledge: Knowledge) -> None:
    first = "- Epilepsy " + "with a very long display " * 45 + "(2020-01-01; Condition/c-1)"
    lines = (first, "- Epilepsy (2021-01-01; Condition/c-2)")
    facts = {"diagnosis": "Epilepsy", "new_seizure": False, "treated": True}
    kind = knowledge.cards["eeg-recommended"]
    card = render_card(Finding("eeg-recommended", facts, lines), kind, Clock(), CALL)
    assert first in card["detail"] and "- and 1 more on file" in card["detail"]


HOSTILE = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) **bold** _x_ # H"


def _visible_text(html: str) -> str:
    """What a reader sees of rendered HTML: the text without tags, entities decoded."""
    return unescape(re.sub(r"<[^>]*>", "", html))


def test_record_text_is_literal_in_the_markdown_detail(client: FlaskClient) -> None:
    """A medicine name from the record is shown as written by CommonMark renderers (markdown-it
    with HTML off; cmark with raw HTML on): no image, link, emphasis or heading; the summary and
    labels (plain text) show it without escaping backslashes."""
    path = FIXTURES / "scenarios" / "130-pv-calcium-10-6-on-supplement-high-warning.json"
    request = json.loads(path.read_text())["request"]
    for entry in request["prefetch"]["medications"]["entry"]:
        concept = entry["resource"]["medicationCodeableConcept"]
        concept["text"] = concept["coding"][0]["display"] = HOSTILE + "\n- item\n1. two"
    response = client.post(f"/cds-services/{SERVICE_ID}", json=request)
    assert response.status_code == 200
    cards = response.get_json()["cards"]
    card = next(c for c in cards if c["source"]["topic"]["code"] == "calcium-high")
    name = HOSTILE + " - item 1. two"  # on one line: a record value cannot start a block
    detail = card["detail"]
    renderers = {
        "markdown-it": MarkdownIt("commonmark", {"html": False}).render,
        "cmark": lambda text: cmarkgfm.markdown_to_html(
            text, options=cmarkgfm.Options.CMARK_OPT_UNSAFE
        ),
    }
    for renderer, render in renderers.items():
        html = render(detail)
        for tag in ("<img", "<a ", "<em>x", "<strong>bold", "<h1", "<ol", "<ul>\n<li>item"):
            assert tag not in html, (renderer, tag, html)
        seen = _visible_text(html)
        assert seen.count(name) == detail.count("\\<img"), (renderer, seen)  # fact and evidence
        assert detail.count("\\<img") >= 2  # in the text and in the evidence bullet
    labels = [s["label"] for s in card.get("suggestions", [])]
    for plain in [card["summary"], *labels]:
        assert "\\" not in plain


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("Calcium carbonate 600 MG", "Calcium carbonate 600 MG"),
        ("2026-01-05", "2026-01-05"),
        ("- x", "\\- x"),
        ("--- ", "\\---"),
        ("1. x", "1\\. x"),
        ("a\r\nb", "a b"),
        ("a\\*b&amp;", "a\\\\\\*b\\&amp;"),
    ],
)
def test_markdown_literal(value: str, written: str) -> None:
    assert markdown_literal(value) == written
