"""Scenario tests as data: each fixtures/scenarios/*.json is a hook request and the cards it must produce.

A scenario file holds `title`, `why`, `request` (a complete CDS Hooks request), an optional `now`
(the ISO date-time the request is evaluated at, for records written on another day; default
tests.conftest.NOW) and `expect`:
`status` (default 200) and `cards`, a list of {kind, indicator, summary_contains?, detail_contains?,
summary_excludes?, detail_excludes?, suggestions?, suggestions_contain?, suggestions_exclude?,
resources_include_codes?, resources_exclude_codes?, delete?}: `*_contains` / `*_excludes` strings
each occur / none occurs in the summary or detail; `suggestions` is the exact list of suggestion
labels, `suggestions_contain` / `suggestions_exclude` strings each occur in some label / in none;
`resources_include_codes` / `resources_exclude_codes` codes each appear / none appears in a coding
of `code` or `medicationCodeableConcept` of a resource the card's suggestions create; `delete` is
the list of resource ids the card's delete actions name. `issue18_item`, where present, is the
item of issue 18 the scenario was written for.
The response must contain exactly the expected card kinds (order aside); every card
must be schema-valid and every suggested resource a valid FHIR R4 resource.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import (
    get_fhir_model_class,  # R4B: the R4-compatible models fhir.resources ships
)
from flask.testing import FlaskClient
from markdown_it import MarkdownIt

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.config import Settings
from cds_service.knowledge import Knowledge
from tests.conftest import FIXTURES, SERVICE_ID, assert_valid_response

SCENARIOS = sorted((FIXTURES / "scenarios").glob("*.json"))
# Issue 18 item 7: a detail a clinician reads in five seconds ("under 1,000 characters").
DETAIL_LIMIT = 1000
# The SNOMED CT semantic tags that reach card text from EHR displays (a subset, written out here
# so that the check does not share the renderer's list).
SEMANTIC_TAGS = re.compile(
    r"\((?:disorder|finding|procedure|substance|product|clinical drug|situation)\)"
)


def load(path: Path) -> dict[str, Any]:
    scenario: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return scenario


def assert_suggested_resources_are_fhir(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        for suggestion in card.get("suggestions", []):
            for action in suggestion["actions"]:
                if "resource" in action:
                    resource = action["resource"]
                    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def suggested_codes(card: dict[str, Any]) -> set[str]:
    """Codes in `code` or `medicationCodeableConcept` of every resource the card's suggestions create."""
    found = set()
    for suggestion in card.get("suggestions", []):
        for action in suggestion["actions"]:
            resource = action.get("resource") or {}
            for field in ("code", "medicationCodeableConcept"):
                for coding in (resource.get(field) or {}).get("coding", []):
                    found.add(coding.get("code"))
    return found


@pytest.fixture
def scenario_client(
    request: pytest.FixtureRequest, settings: Settings, knowledge: Knowledge
) -> Iterator[FlaskClient]:
    """A client whose clock is the scenario's `now`, else the shared test clock."""
    now = load(request.param).get("now")
    if now is None:
        yield request.getfixturevalue("client")
        return
    app = create_app(settings, clock=fixed_clock(datetime.fromisoformat(now)), knowledge=knowledge)
    app.config["TESTING"] = True
    try:
        yield app.test_client()
    finally:
        app.extensions["cds_runtime"].close()


def shown_text(markdown: str) -> str:
    """What a reader sees of Markdown: rendered (CommonMark), tags dropped, entities decoded."""
    return unescape(
        re.sub(r"<[^>]*>", "", MarkdownIt("commonmark", {"html": False}).render(markdown))
    )


@pytest.mark.parametrize(
    ("path", "scenario_client"),
    [(p, p) for p in SCENARIOS],
    ids=[p.stem for p in SCENARIOS],
    indirect=["scenario_client"],
)
def test_scenario(scenario_client: FlaskClient, path: Path) -> None:
    scenario = load(path)
    expect = scenario["expect"]
    service = scenario.get("service", SERVICE_ID)
    response = scenario_client.post(f"/cds-services/{service}", json=scenario["request"])
    assert response.status_code == expect.get("status", 200), response.get_data(as_text=True)
    if response.status_code != 200:
        return
    body = response.get_json()
    assert_valid_response(body)
    assert_suggested_resources_are_fhir(body["cards"])
    cards = body["cards"]
    actual_kinds = sorted(c["source"]["topic"]["code"] for c in cards)
    expected_kinds = sorted(c["kind"] for c in expect["cards"])
    assert actual_kinds == expected_kinds, [c["summary"] for c in cards]
    for card in cards:
        assert len(card["detail"]) < DETAIL_LIMIT, (len(card["detail"]), card["detail"])
        assert not SEMANTIC_TAGS.search(card["summary"] + card["detail"]), card["summary"]
    remaining = list(cards)
    for wanted in expect["cards"]:
        card = next(c for c in remaining if c["source"]["topic"]["code"] == wanted["kind"])
        remaining.remove(card)
        assert card["indicator"] == wanted["indicator"], card["summary"]
        for text in wanted.get("summary_contains", []):
            assert text in card["summary"], card["summary"]
        # As written (Markdown) or as the EHR shows it (record text is escaped in the Markdown).
        detail = shown_text(card["detail"]) + "\n" + card["detail"]
        for text in wanted.get("detail_contains", []):
            assert text in detail, card["detail"]
        for text in wanted.get("summary_excludes", []):
            assert text not in card["summary"], card["summary"]
        for text in wanted.get("detail_excludes", []):
            assert text not in detail, card["detail"]
        labels = [s["label"] for s in card.get("suggestions", [])]
        for text in wanted.get("suggestions_contain", []):
            assert any(text in label for label in labels), labels
        for text in wanted.get("suggestions_exclude", []):
            assert not any(text in label for label in labels), labels
        codes = suggested_codes(card)
        for code in wanted.get("resources_include_codes", []):
            assert code in codes, codes
        for code in wanted.get("resources_exclude_codes", []):
            assert code not in codes, codes
        if "suggestions" in wanted:
            assert [s["label"] for s in card.get("suggestions", [])] == wanted["suggestions"]
        if "delete" in wanted:
            deletes = [
                a["resourceId"]
                for s in card.get("suggestions", [])
                for a in s["actions"]
                if a["type"] == "delete"
            ]
            assert deletes == wanted["delete"]


def test_there_are_enough_scenarios() -> None:
    assert len(SCENARIOS) >= 25
    for path in SCENARIOS:
        scenario = load(path)
        assert scenario["title"] and scenario["why"], path.name
