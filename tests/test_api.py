"""The HTTP surface: discovery, hook calls, CORS, and every error as a FHIR OperationOutcome."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from tests.conftest import NOW, SERVICE_ID, assert_valid_response, make_settings

SANDBOX = "https://sandbox.cds-hooks.org"


def request_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "hook": "patient-view",
        "hookInstance": str(uuid.UUID(int=7)),
        "context": {"userId": "Practitioner/dr-1", "patientId": "pt-1"},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": "pt-1", "birthDate": "1950-01-01"},
            "conditions": None,
            "observations": None,
            "medications": None,
            "reports": None,
            "procedures": None,
        },
    }
    body.update(overrides)
    return body


def assert_outcome(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"] and all(
        i["severity"] and i["code"] and i["diagnostics"] for i in body["issue"]
    )
    assert "Traceback" not in response.get_data(as_text=True)
    return body


def test_discovery_lists_services_with_prefetch(client: FlaskClient) -> None:
    response = client.get("/cds-services")
    assert response.status_code == 200
    services = response.get_json()["services"]
    service = next(s for s in services if s["id"] == SERVICE_ID)
    assert service["hook"] == "patient-view"
    assert service["title"] and service["description"]
    assert service["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    assert "http://loinc.org|17861-6" in service["prefetch"]["observations"]
    from cds_service.protocol.schemas import validate

    assert validate(response.get_json(), "discovery") == []


def test_out_of_scope_patient_gets_no_cards(client: FlaskClient) -> None:
    response = client.post(f"/cds-services/{SERVICE_ID}", json=request_body())
    assert response.status_code == 200
    assert response.get_json() == {"cards": []}
    assert_valid_response(response.get_json())


def test_unknown_fields_and_extensions_are_tolerated(client: FlaskClient) -> None:
    body = request_body(extension={"com.example.flag": True}, futureField=[1, 2])
    body["context"]["extension"] = {"com.example.x": "y"}
    response = client.post(f"/cds-services/{SERVICE_ID}", json=body)
    assert response.status_code == 200


def test_unknown_service_is_404(client: FlaskClient) -> None:
    assert_outcome(client.post("/cds-services/no-such-service", json=request_body()), 404)


def test_wrong_method_is_405(client: FlaskClient) -> None:
    assert_outcome(client.delete(f"/cds-services/{SERVICE_ID}"), 405)
    assert_outcome(client.post("/cds-services"), 405)


def test_non_json_body_is_415(client: FlaskClient) -> None:
    response = client.post(
        f"/cds-services/{SERVICE_ID}", data="hook=patient-view", content_type="text/plain"
    )
    assert_outcome(response, 415)


@pytest.mark.parametrize(
    "raw",
    [
        "{",
        "{'hook': 1}",
        "",
        "\xff\xfe",
        "[1,2",
        '{"hook": NaN}',  # not JSON (RFC 8259), though Python's json module reads it
        '{"hook": Infinity}',
        '{"hook": "\\ud800"}',  # a lone surrogate: no Unicode text
        '{"hook": "patient-view"} trailing',
    ],
)
def test_malformed_json_is_400(client: FlaskClient, raw: str) -> None:
    response = client.post(
        f"/cds-services/{SERVICE_ID}", data=raw.encode("latin-1"), content_type="application/json"
    )
    body = assert_outcome(response, 400)
    assert "not valid JSON" in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["code"] == "structure"


def test_json_nested_past_the_parsers_limit_is_a_400_naming_the_nesting(
    client: FlaskClient,
) -> None:
    response = client.post(
        f"/cds-services/{SERVICE_ID}",
        data='{"a":' * 5000 + "1" + "}" * 5000,
        content_type="application/json",
    )
    body = assert_outcome(response, 400)
    assert body["issue"][0]["code"] == "too-costly"
    assert "nested too deeply" in body["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    ("mutate", "path"),
    [
        (lambda b: b.pop("hookInstance"), "$"),
        (lambda b: b.update(hookInstance="not-a-uuid"), "$.hookInstance"),
        (lambda b: b.update(hook=5), "$.hook"),
        (lambda b: b.update(context="pt-1"), "$.context"),
        (lambda b: b["context"].pop("patientId"), "$.context"),
        (lambda b: b["context"].update(userId="pt-1"), "$.context.userId"),
        (lambda b: b["prefetch"].update(patient="Patient/pt-1"), "$.prefetch.patient"),
        (
            lambda b: b.update(
                fhirAuthorization={
                    "access_token": "t",
                    "token_type": "Bearer",
                    "expires_in": 60,
                    "scope": "s",
                    "subject": "c",
                }
            ),
            "$",
        ),
        (lambda b: b.update(hook="order-sign"), "$.hook"),
    ],
)
def test_invalid_requests_are_400_naming_the_problem(
    client: FlaskClient, mutate: Any, path: str
) -> None:
    body = request_body()
    mutate(body)
    outcome = assert_outcome(client.post(f"/cds-services/{SERVICE_ID}", json=body), 400)
    assert path in [p for i in outcome["issue"] for p in i.get("expression", [])]


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, max_body_bytes=2048), clock=fixed_clock(NOW))
    body = request_body()
    body["extension"] = {"padding": "x" * 4096}
    response = app.test_client().post(f"/cds-services/{SERVICE_ID}", json=body)
    assert_outcome(response, 413)


def test_a_declared_length_over_the_limit_is_413_before_the_body_is_read(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, max_body_bytes=2048), clock=fixed_clock(NOW))
    body = json.dumps(request_body()).encode()
    response = app.test_client().post(
        f"/cds-services/{SERVICE_ID}",
        data=body,
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "999999"},
    )
    assert_outcome(response, 413)


def test_a_body_shorter_than_its_content_length_is_400(client: FlaskClient) -> None:
    body = json.dumps(request_body()).encode()  # complete JSON, but less than declared
    response = client.post(
        f"/cds-services/{SERVICE_ID}",
        data=body,
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)},
    )
    outcome = assert_outcome(response, 400)
    assert outcome["issue"][0]["code"] == "structure"
    assert "shorter than its Content-Length" in outcome["issue"][0]["diagnostics"]


def test_a_connection_broken_mid_body_is_400_not_a_server_error(client: FlaskClient) -> None:
    class Broken(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise ConnectionResetError("peer reset")

    response = client.post(
        f"/cds-services/{SERVICE_ID}",
        input_stream=Broken(b"{}"),
        content_type="application/json",
        environ_overrides={"CONTENT_LENGTH": "2"},
    )
    assert_outcome(response, 400)


def test_a_chunked_body_without_a_length_is_read(client: FlaskClient) -> None:
    body = json.dumps(request_body()).encode()
    response = client.post(
        f"/cds-services/{SERVICE_ID}",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # the server decoded the chunks
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    plain = client.post(f"/cds-services/{SERVICE_ID}", data=body, content_type="application/json")
    summaries = [c["summary"] for c in plain.get_json()["cards"]]
    assert [c["summary"] for c in response.get_json()["cards"]] == summaries


def test_no_prefetch_and_no_fhir_server_is_412(client: FlaskClient) -> None:
    body = request_body()
    del body["prefetch"]
    outcome = assert_outcome(client.post(f"/cds-services/{SERVICE_ID}", json=body), 412)
    keys = {e for i in outcome["issue"] for e in i["expression"]}
    assert {"prefetch.patient", "prefetch.conditions", "prefetch.observations"} <= keys


def test_fhir_server_off_the_allowlist_is_never_called_and_gives_412(client: FlaskClient) -> None:
    body = request_body(fhirServer="https://ehr.example.org/fhir")
    del body["prefetch"]
    outcome = assert_outcome(client.post(f"/cds-services/{SERVICE_ID}", json=body), 412)
    assert "allowlist" in outcome["issue"][0]["diagnostics"]


@pytest.mark.parametrize("path", ["/cds-services", f"/cds-services/{SERVICE_ID}"])
def test_cors_preflight_allows_the_sandbox(client: FlaskClient, path: str) -> None:
    response = client.options(
        path,
        headers={
            "Origin": SANDBOX,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] in {"*", SANDBOX}
    assert {"GET", "POST"} <= set(response.headers["Access-Control-Allow-Methods"].split(", "))
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {"authorization", "content-type"} <= allowed


def test_cors_origins_are_configurable(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, cors_origins=(SANDBOX,)), clock=fixed_clock(NOW))
    client = app.test_client()
    ok = client.get("/cds-services", headers={"Origin": SANDBOX})
    other = client.get("/cds-services", headers={"Origin": "https://evil.example.org"})
    assert ok.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_browser_and_a_server_get_the_same_answer(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path, cors_origins=(SANDBOX,)), clock=fixed_clock(NOW))
    client = app.test_client()
    browser = client.post(
        f"/cds-services/{SERVICE_ID}", json=request_body(), headers={"Origin": SANDBOX}
    )
    server = client.post(f"/cds-services/{SERVICE_ID}", json=request_body())
    assert browser.status_code == server.status_code == 200
    assert browser.headers["Access-Control-Allow-Origin"] == SANDBOX
    assert browser.get_json() == server.get_json()  # an EHR's back end sends no Origin


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    body = ready.get_json()
    assert body["status"] == "ready" and body["store"] == "sqlite"
    assert body["knowledge"]["cardKinds"] > 0
    assert "OFF" in body["warning"]


def test_ready_without_the_database_which_it_reports(tmp_path: Path) -> None:
    # Hook calls work without the database, which every replica shares: a 503 would take them all
    # out of the load balancer at once.
    settings = make_settings(tmp_path, database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = create_app(settings, clock=fixed_clock(NOW))
    response = app.test_client().get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["status"] == "ready"
    assert response.get_json()["store"] == "unreachable (OperationalError)"


def test_unexpected_errors_are_500_without_details(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("patient Jane Doe secret detail")

    monkeypatch.setattr("cds_service.api.call_service", broken)
    response = app.test_client().post(f"/cds-services/{SERVICE_ID}", json=request_body())
    outcome = assert_outcome(response, 500)
    assert "Jane" not in json.dumps(outcome)


ORDER_SERVICES = {"order-select": "leg-cramps-order-select", "order-sign": "leg-cramps-order-sign"}


def order_body(hook: str) -> dict[str, Any]:
    body = request_body(hook=hook)
    draft = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "carisoprodol 350 MG Oral Tablet"},
        "subject": {"reference": "Patient/pt-1"},
    }
    body["context"]["draftOrders"] = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"resource": draft}],
    }
    if hook == "order-select":
        body["context"]["selections"] = ["MedicationRequest/draft-1"]
    return body


def test_each_service_id_names_one_hook(client: FlaskClient) -> None:
    """A service's URL is /cds-services/{id}: one id per hook, so clients that keep services by URL
    (the CDS Hooks sandbox) see both order reviews."""
    services = client.get("/cds-services").get_json()["services"]
    ids = [s["id"] for s in services]
    assert len(ids) == len(set(ids))
    assert {s["hook"]: s["id"] for s in services if s["hook"] != "patient-view"} == ORDER_SERVICES
    for hook, service in ORDER_SERVICES.items():
        response = client.post(f"/cds-services/{service}", json=order_body(hook))
        assert response.status_code == 200, response.get_data(as_text=True)
        kinds = sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])
        assert kinds == ["beers-muscle-relaxant", "carisoprodol-schedule-iv"]  # the patient is 76
        other = "order-sign" if hook == "order-select" else "order-select"
        wrong = client.post(f"/cds-services/{service}", json=order_body(other))
        outcome = assert_outcome(wrong, 400)
        assert f"supports: {hook}" in outcome["issue"][0]["diagnostics"]
