"""Prefetch and FHIR access checked end to end: a hook call over HTTP against a fake FHIR server.

tests/test_prefetch.py checks the prefetch rules on gather() and tests/fhir/test_client.py the FHIR
client; these tests check that a real POST /cds-services/{id} applies them, recording what the
service asks the FHIR server (pytest-httpserver) and with which token.
"""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.conftest import SERVICE_ID, assert_valid_response
from tests.test_conformance_extra import in_scope_body

TOKEN = "conformance-access-token"
OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "too-costly"}],
}


def with_fhir_server(body: dict[str, Any], server: HTTPServer) -> dict[str, Any]:
    body["fhirServer"] = server.url_for("/fhir")
    body["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/*.read",
        "subject": "leg-cramps-cds",
    }
    return body


FHIR_PATHS = (
    "/fhir/Patient/pt-1",
    "/fhir/Condition",
    "/fhir/Observation",
    "/fhir/MedicationRequest",
    "/fhir/MedicationStatement",
    "/fhir/DiagnosticReport",
    "/fhir/Procedure",
)


def serve_everything(server: HTTPServer) -> None:
    """The FHIR server answers every query with what the client would have prefetched."""
    data = in_scope_body()["prefetch"]
    answers = {
        "/fhir/Patient/pt-1": data["patient"],
        "/fhir/Condition": data["conditions"],
        "/fhir/MedicationRequest": data["medications"],
    }

    def handler(request: Request) -> Response:
        found = answers.get(request.path, {"resourceType": "Bundle", "type": "searchset"})
        return Response(json.dumps(found), content_type="application/fhir+json")

    for path in FHIR_PATHS:
        server.expect_request(path).respond_with_handler(handler)


def seen(server: HTTPServer) -> list[tuple[str, str | None]]:
    return [(request.path, request.headers.get("Authorization")) for request, _ in server.log]


def post(client: FlaskClient, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    response = client.post(f"/cds-services/{SERVICE_ID}", json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    payload: dict[str, Any] = response.get_json()
    if status == 200:
        assert_valid_response(payload)
    return payload


def test_without_prefetch_everything_is_read_from_fhir_server_with_the_token(
    client: FlaskClient, httpserver: HTTPServer
) -> None:
    body = with_fhir_server(in_scope_body(), httpserver)
    expected_cards = post(client, in_scope_body())["cards"]
    assert expected_cards
    serve_everything(httpserver)
    del body["prefetch"]
    cards = post(client, body)["cards"]
    assert sorted(c["source"]["topic"]["code"] for c in cards) == sorted(
        c["source"]["topic"]["code"] for c in expected_cards
    )
    requests = seen(httpserver)
    assert sorted(path for path, _ in requests) == sorted(FHIR_PATHS)
    assert {auth for _, auth in requests} == {f"Bearer {TOKEN}"}


def test_null_prefetch_keys_are_not_refetched(client: FlaskClient, httpserver: HTTPServer) -> None:
    body = with_fhir_server(in_scope_body(), httpserver)
    serve_everything(httpserver)
    assert body["prefetch"]["observations"] is None and body["prefetch"]["reports"] is None
    post(client, body)
    assert seen(httpserver) == []


def test_only_absent_and_operation_outcome_keys_are_fetched(
    client: FlaskClient, httpserver: HTTPServer
) -> None:
    body = with_fhir_server(in_scope_body(), httpserver)
    serve_everything(httpserver)
    body["prefetch"]["conditions"] = OUTCOME
    body["prefetch"]["medications"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": OUTCOME}],
    }
    del body["prefetch"]["reports"]
    cards = post(client, body)["cards"]
    assert cards, "the refetched conditions put the patient in scope"
    assert sorted(path for path, _ in seen(httpserver)) == [
        "/fhir/Condition",
        "/fhir/DiagnosticReport",
        "/fhir/MedicationRequest",
    ]


def test_paginated_prefetch_bundle_is_completed_with_the_token(
    client: FlaskClient, httpserver: HTTPServer
) -> None:
    body = with_fhir_server(in_scope_body(), httpserver)
    conditions = body["prefetch"]["conditions"]
    first, rest = conditions["entry"][:1], conditions["entry"][1:]
    body["prefetch"]["conditions"] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": first,
        "link": [{"relation": "next", "url": httpserver.url_for("/fhir/Condition") + "?page=2"}],
    }
    httpserver.expect_request("/fhir/Condition", query_string="page=2").respond_with_json(
        {"resourceType": "Bundle", "type": "searchset", "entry": rest}
    )
    cards = post(client, body)["cards"]
    assert cards, "the cramp diagnosis on page 2 puts the patient in scope"
    assert seen(httpserver) == [("/fhir/Condition", f"Bearer {TOKEN}")]


def test_required_key_the_fhir_server_cannot_answer_is_412(
    client: FlaskClient, httpserver: HTTPServer
) -> None:
    body = with_fhir_server(in_scope_body(), httpserver)
    del body["prefetch"]["conditions"]
    httpserver.expect_request("/fhir/Condition").respond_with_json(OUTCOME, status=500)
    outcome = post(client, body, status=412)
    assert outcome["resourceType"] == "OperationOutcome"
    assert [e for i in outcome["issue"] for e in i["expression"]] == ["prefetch.conditions"]


def test_operation_outcome_key_without_fhir_server_is_412(client: FlaskClient) -> None:
    body = in_scope_body()
    body["prefetch"]["patient"] = OUTCOME
    outcome = post(client, body, status=412)
    assert [e for i in outcome["issue"] for e in i["expression"]] == ["prefetch.patient"]
