"""CDS Hooks 2.0 requirements checked at the HTTP surface that no other module covers.

docs/conformance.md maps each requirement ID to these tests. Most calls here use an in-scope patient
(cerebral infarction, leg cramps, 76 years old, no calcium result, on carisoprodol and quinine), so the
response holds cards with create and delete suggestions, override reasons, and sources with and
without a URL.
"""

from __future__ import annotations

import re
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fhir.resources.R4B import get_fhir_model_class
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.clock import Clock
from cds_service.knowledge import Knowledge, load_knowledge
from tests.conftest import ROOT, SERVICE_ID, assert_valid_response, make_settings
from tests.test_api import request_body

SCT = "http://snomed.info/sct"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
USER_TOKENS = {
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
}
# Root-level primitive fields of the patient-view context (CDS Hooks Library, patient-view).
PATIENT_VIEW_FIELDS = {"userId", "patientId", "encounterId"}
TOKEN = re.compile(r"\{\{(.*?)\}\}")
HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(\s[^>]*)?/?>")


def searchset(*resources: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r} for r in resources],
    }


def condition(cid: str, code: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{patient}"},
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": SCT, "code": code}]},
    }


def medication(mid: str, code: str, text: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code}], "text": text},
    }


def in_scope_body(patient: str = "pt-1") -> dict[str, Any]:
    """A patient-view request that produces several cards (see the module docstring)."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": patient},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": patient, "birthDate": "1950-01-01"},
            "conditions": searchset(
                condition("c-infarct", "432504007", patient),  # cerebral infarction
                condition("c-cramp", "449918009", patient),  # cramp in lower leg
            ),
            "observations": None,
            "medications": searchset(
                medication("m-relaxant", "197446", "carisoprodol 350 MG Oral Tablet", patient),
                medication("m-quinine", "9071", "quinine", patient),
            ),
            "medication-statements": None,
            "reports": None,
            "procedures": None,
        },
    }


def call(client: FlaskClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(f"/cds-services/{SERVICE_ID}", json=body)
    assert response.status_code == 200, response.get_data(as_text=True)
    payload: dict[str, Any] = response.get_json()
    assert_valid_response(payload)
    return payload


@pytest.fixture
def cards(client: FlaskClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = call(client, in_scope_body())["cards"]
    assert len(found) >= 3, [c["summary"] for c in found]
    return found


def by_topic(cards: list[dict[str, Any]], code: str) -> dict[str, Any]:
    return next(c for c in cards if c["source"]["topic"]["code"] == code)


def actions(cards: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for card in cards:
        for suggestion in card.get("suggestions", []):
            yield from suggestion.get("actions", [])


def empty_values(value: Any, path: str = "$") -> Iterator[str]:
    """JSON paths of null, "", [] and {} anywhere in value."""
    if value is None or value in ("", [], {}):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from empty_values(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from empty_values(item, f"{path}[{index}]")


def is_absolute_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


# --- JSON and HTTP ----------------------------------------------------------------------------


def test_responses_are_json(client: FlaskClient) -> None:
    discovery = client.get("/cds-services")
    hook = client.post(f"/cds-services/{SERVICE_ID}", json=in_scope_body())
    error = client.post("/cds-services/no-such-service", json=request_body())
    for response in (discovery, hook, error):
        assert response.mimetype == "application/json", response.headers
        assert isinstance(response.get_json(), dict)


def test_no_null_or_empty_json_elements_are_sent(client: FlaskClient) -> None:
    discovery = client.get("/cds-services").get_json()
    assert list(empty_values(discovery)) == []
    full = call(client, in_scope_body())
    assert full["cards"]
    assert list(empty_values(full)) == []
    # The one exception the spec makes: an empty cards array means "no decision support".
    nothing = call(client, request_body())
    assert nothing == {"cards": []}
    error = client.post(f"/cds-services/{SERVICE_ID}", json={"hook": "patient-view"}).get_json()
    assert error["resourceType"] == "OperationOutcome"
    assert list(empty_values(error)) == []


def test_response_is_fast(client: FlaskClient) -> None:
    """CDS Hooks asks for answers "on the order of 500 ms"; this is the service's own share."""
    call(client, in_scope_body())  # warm-up: schema compilation and the like
    durations = []
    for _ in range(5):
        started = time.perf_counter()
        call(client, in_scope_body())
        durations.append(time.perf_counter() - started)
    assert statistics.median(durations) < 0.5, durations


# --- discovery --------------------------------------------------------------------------------


def test_discovery_service_entries(client: FlaskClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    assert isinstance(services, list) and services
    for service in services:
        assert isinstance(service["hook"], str) and service["hook"]
        assert isinstance(service["id"], str) and re.fullmatch(r"[A-Za-z0-9\-._]+", service["id"])
        assert isinstance(service["title"], str) and service["title"]
        assert isinstance(service["description"], str) and service["description"]
        assert isinstance(service["usageRequirements"], str) and service["usageRequirements"]
        assert isinstance(service["prefetch"], dict) and service["prefetch"]
        assert all(isinstance(k, str) and k for k in service["prefetch"])
        assert all(isinstance(v, str) and v for v in service["prefetch"].values())


def test_every_discovered_service_answers_at_base_url_slash_id(client: FlaskClient) -> None:
    for service in client.get("/cds-services").get_json()["services"]:
        body = in_scope_body()
        body["hook"] = service["hook"]
        if service["hook"] in {"order-select", "order-sign"}:
            order = {
                "resourceType": "MedicationRequest",
                "id": "draft-1",
                "status": "draft",
                "intent": "order",
                "medicationCodeableConcept": {"text": "baclofen 10 mg tablet"},
                "subject": {"reference": f"Patient/{body['context']['patientId']}"},
            }
            body["context"]["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": order}],
            }
            if service["hook"] == "order-select":
                body["context"]["selections"] = ["MedicationRequest/draft-1"]
        response = client.post(f"/cds-services/{service['id']}", json=body)
        assert response.status_code == 200, (service["id"], response.get_data(as_text=True))
        assert "cards" in response.get_json()


def test_prefetch_tokens_are_root_context_fields_or_user_ids(client: FlaskClient) -> None:
    for service in client.get("/cds-services").get_json()["services"]:
        for key, query in service["prefetch"].items():
            tokens = TOKEN.findall(query)
            assert tokens, f"{key}: {query} has no {{{{...}}}} token"
            for token in tokens:
                name = token.strip()
                if name in USER_TOKENS:
                    continue
                assert name.startswith("context."), f"{key}: {{{{{token}}}}}"
                field = name.removeprefix("context.")
                # a root-level field (no path below it) that holds a primitive in this hook's context
                assert "." not in field and field in PATIENT_VIEW_FIELDS, f"{key}: {{{{{token}}}}}"
            assert "{" not in TOKEN.sub("", query) and "}" not in TOKEN.sub("", query), query


# Search parameters the prefetch templates may use, by FHIR search-parameter type.
PARAM_TYPES = {
    "patient": "reference",
    "subject": "reference",
    "encounter": "reference",
    "code": "token",
    "status": "token",
    "category": "token",
    "date": "date",
    "_count": "count",
    "_sort": "sort",
}


def test_prefetch_queries_use_the_recommended_subset(client: FlaskClient) -> None:
    for service in client.get("/cds-services").get_json()["services"]:
        for key, query in service["prefetch"].items():
            path, _, search = query.partition("?")
            parts = path.split("/")
            assert re.fullmatch(r"[A-Z][A-Za-z]+", parts[0]), f"{key}: {query}"
            if not search:  # instance read: Type/{{id}}
                assert len(parts) == 2 and TOKEN.fullmatch(parts[1]), f"{key}: {query}"
                continue
            assert len(parts) == 1, f"{key}: a search must be type level: {query}"
            for pair in search.split("&"):
                name, _, value = pair.partition("=")
                base, _, modifier = name.partition(":")
                kind = PARAM_TYPES.get(base)
                assert kind, f"{key}: parameter {name!r} is outside the recommended subset"
                assert value, f"{key}: parameter {name!r} has no value"
                assert "." not in base, f"{key}: chained parameter {name!r}"
                if kind == "token":
                    assert modifier in {"", "in"}, f"{key}: token modifier {name!r}"
                else:
                    assert not modifier, f"{key}: modifier on {name!r}"
                if kind == "date":
                    assert re.match(r"(eq|lt|gt|ge|le)", value), f"{key}: date prefix in {pair!r}"
                if kind == "count":
                    assert value.isdigit(), f"{key}: {pair!r}"


# --- cards ------------------------------------------------------------------------------------


def test_cards_array_and_core_card_attributes(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        assert isinstance(card["summary"], str) and 0 < len(card["summary"]) < 140
        assert card["indicator"] in {"info", "warning", "critical"}
        source = card["source"]
        assert isinstance(source["label"], str) and source["label"]
        topic = source["topic"]
        assert isinstance(topic["system"], str) and topic["system"]
        assert isinstance(topic["code"], str) and topic["code"]
        assert isinstance(topic["display"], str) and topic["display"]
        # Every card names where its evidence can be read (cards/cards.yaml requires source.url).
        assert is_absolute_url(source["url"]), source["url"]


def test_every_card_and_suggestion_has_a_unique_uuid(cards: list[dict[str, Any]]) -> None:
    ids = []
    for card in cards:
        ids.append(card["uuid"])
        ids.extend(s["uuid"] for s in card.get("suggestions", []))
    for value in ids:
        assert isinstance(value, str) and str(uuid.UUID(value)) == value
    assert len(ids) == len(set(ids)), ids


def test_repeated_calls_get_fresh_card_uuids(tmp_path: Path, knowledge: Knowledge) -> None:
    """With the production clock (random UUIDs), the same request twice gives different card uuids."""
    app = create_app(make_settings(tmp_path), clock=Clock(), knowledge=knowledge)
    try:
        client = app.test_client()
        first = [c["uuid"] for c in call(client, in_scope_body())["cards"]]
        second = [c["uuid"] for c in call(client, in_scope_body())["cards"]]
    finally:
        app.extensions["cds_runtime"].close()
    assert len(first) == len(second) > 0
    assert not set(first) & set(second)


def test_detail_is_markdown_not_html(cards: list[dict[str, Any]]) -> None:
    for card in cards:
        detail = card["detail"]
        assert "**Sources:**" in detail and "_Advisory only" in detail, detail  # GFM emphasis
        assert not HTML_TAG.search(detail), detail


def test_long_summaries_are_cut_below_140_characters(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    cards = app.extensions["cds_runtime"].knowledge.cards
    long = "Calcium " + "very " * 60 + "long summary"
    kind = cards["calcium-workup"]
    text = replace(kind.text, summaries=(long,))
    monkeypatch.setitem(cards, "calcium-workup", replace(kind, text=text))
    card = by_topic(call(client, in_scope_body())["cards"], "calcium-workup")
    assert len(card["summary"]) < 140
    assert card["summary"].startswith("Calcium very very")
    assert card["summary"].endswith("very…")  # cut after a whole word, never inside one


def test_suggestions_selection_behavior_and_actions(cards: list[dict[str, Any]]) -> None:
    with_suggestions = [c for c in cards if "suggestions" in c]
    assert with_suggestions
    for card in with_suggestions:
        assert card["selectionBehavior"] in {"at-most-one", "any"}
        assert isinstance(card["suggestions"], list) and card["suggestions"]
        recommended = [s for s in card["suggestions"] if s.get("isRecommended")]
        if card["selectionBehavior"] == "at-most-one":
            assert len(recommended) <= 1
        for suggestion in card["suggestions"]:
            assert isinstance(suggestion["label"], str) and suggestion["label"]
            assert isinstance(suggestion.get("isRecommended", False), bool)
            assert isinstance(suggestion["actions"], list) and suggestion["actions"]
    for action in actions(cards):
        assert action["type"] in {"create", "update", "delete"}
        assert isinstance(action["description"], str) and action["description"]
    for card in cards:
        if "suggestions" not in card:
            assert "selectionBehavior" not in card


def test_create_actions_carry_a_new_valid_fhir_resource(cards: list[dict[str, Any]]) -> None:
    creates = [a for a in actions(cards) if a["type"] == "create"]
    assert creates
    for action in creates:
        resource = action["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert "id" not in resource, "a create proposes a new resource; the client assigns the id"
        assert resource["subject"] == {"reference": "Patient/pt-1"}
        assert "resourceId" not in action


def test_delete_actions_name_the_resource_id_not_a_resource(cards: list[dict[str, Any]]) -> None:
    deletes = [a for a in actions(cards) if a["type"] == "delete"]
    assert {a["resourceId"] for a in deletes} == {
        "MedicationRequest/m-relaxant",
        "MedicationRequest/m-quinine",
    }
    for action in deletes:
        assert "resource" not in action
        assert isinstance(action["resourceId"], str)


def test_override_reasons_are_codings_with_display(cards: list[dict[str, Any]]) -> None:
    with_reasons = [c for c in cards if "overrideReasons" in c]
    assert with_reasons
    for card in with_reasons:
        assert isinstance(card["overrideReasons"], list) and card["overrideReasons"]
        for reason in card["overrideReasons"]:
            assert set(reason) <= {"system", "code", "display"}
            assert all(
                isinstance(reason[k], str) and reason[k] for k in ("system", "code", "display")
            )


def test_source_url_is_not_a_patient_drill_down(client: FlaskClient) -> None:
    first = by_topic(call(client, in_scope_body("pt-1"))["cards"], "beers-muscle-relaxant")
    second = by_topic(call(client, in_scope_body("pt-2"))["cards"], "beers-muscle-relaxant")
    assert first["source"]["url"] == second["source"]["url"]
    for card in (first, second):
        assert "pt-" not in card["source"]["url"] and "m-relaxant" not in card["source"]["url"]


def test_links_are_absolute_without_app_context(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A card's own link comes first, then one for each cited source with an address."""
    copy = tmp_path / "cards"
    shutil.copytree(ROOT / "cards", copy)
    text = (copy / "cards.yaml").read_text(encoding="utf-8")
    link = "    links: [{label: Guideline, url: 'https://example.org/guide'}]\n"
    text = text.replace("  calcium-workup:\n", "  calcium-workup:\n" + link, 1)
    (copy / "cards.yaml").write_text(text, encoding="utf-8")
    cards = app.extensions["cds_runtime"].knowledge.cards
    monkeypatch.setitem(cards, "calcium-workup", load_knowledge(copy).cards["calcium-workup"])
    card = by_topic(call(client, in_scope_body())["cards"], "calcium-workup")
    assert card["links"][0] == {
        "label": "Guideline",
        "url": "https://example.org/guide",
        "type": "absolute",
    }
    assert len(card["links"]) > 1  # and the full references of its sources
    for link in card["links"]:
        assert is_absolute_url(link["url"]) and "appContext" not in link
