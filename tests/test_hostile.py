"""The hostile inputs of issue 19 (and more of each class), kept as data in fixtures/hostile/.

Each class runs against the app; the URL class against a real FHIR server (Medplum on loopback)
behind a recording TCP proxy, the fault class against loopback doubles that drip, flood and nest.
Shared standard: no 5xx, every refusal an OperationOutcome, the access token never leaves the
allowlisted server.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.knowledge import Knowledge
from cds_service.urls import AllowedUrl
from tests.conftest import FIXTURES, NOW, SERVICE_ID, make_settings, release
from tests.support.fhir_server import LocalFhirServer
from tests.support.hostile_http import FaultyFhirServer, RecordingProxy

HOSTILE = FIXTURES / "hostile"
TOKEN = "hostile-suite-token-5f2a"
PATIENT_ID = "example-stroke-cramps"


def cases(name: str, section: str) -> list[dict[str, Any]]:
    loaded: dict[str, list[dict[str, Any]]] = yaml.safe_load((HOSTILE / name).read_text("utf-8"))
    return loaded[section]


def case_id(case: dict[str, Any]) -> str:
    return repr(case.get("url", case.get("value", case.get("fault"))))[:60]


def hook_request(**extra: Any) -> dict[str, Any]:
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT_ID},
        **extra,
    }


def fhir(server: str) -> dict[str, Any]:
    return {
        "fhirServer": server,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/*.read",
            "subject": "hostile-suite",
        },
    }


@pytest.fixture(autouse=True)
def no_secrets_logged(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing of the access token or the patient id reaches a log record, extras included."""
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = json.dumps(record.__dict__, default=str)
        assert TOKEN not in text and PATIENT_ID not in text, text


def assert_outcome(response: Any, status: int | tuple[int, ...]) -> None:
    """The status is as expected, never 5xx; an error is an OperationOutcome."""
    allowed = status if isinstance(status, tuple) else (status,)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.status_code in allowed, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.get_json()["resourceType"] == "OperationOutcome"


def make_app(tmp_path: Path, knowledge: Knowledge, origin: str, **overrides: Any) -> Flask:
    settings = make_settings(
        tmp_path, fhir_server_allowlist=(AllowedUrl.parse(origin),), **overrides
    )
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    app.config["TESTING"] = True
    return app


# --- URLs against the allowlist (item 3, item 8 "http://[::1/x") -----------------------------


@pytest.fixture(scope="module")
def medplum() -> Iterator[RecordingProxy]:
    """A real FHIR server holding the example patient, reached only through a recording proxy."""
    with LocalFhirServer([FIXTURES / "fhir"]) as base:
        parts = urlsplit(base)
        assert parts.path == "/fhir/R4" and parts.hostname and parts.port
        proxy = RecordingProxy(parts.hostname, parts.port)
        with proxy:
            yield proxy


@pytest.fixture
def allowlisted(
    medplum: RecordingProxy, tmp_path: Path, knowledge: Knowledge
) -> Iterator[FlaskClient]:
    app = make_app(tmp_path, knowledge, f"http://127.0.0.1:{medplum.port}/fhir/R4")
    medplum.request_lines.clear()
    yield app.test_client()
    app.extensions["cds_runtime"].close()
    release(app.extensions["cds_runtime"].settings.database_url)


def expand(text: str, port: int) -> str:
    return text.replace("{origin}", f"http://127.0.0.1:{port}").replace("{port}", str(port))


def assert_only_allowlisted_requests(proxy: RecordingProxy) -> None:
    for line, authorized in proxy.request_lines:
        method, target, _ = line.split(" ")
        path = target.split("?", 1)[0]
        assert method == "GET" and path.startswith("/fhir/R4/"), line
        assert not any(bad in path for bad in ("/../", "/./", "//", "\\", "%2e", "%2E", ";")), line
        assert authorized, line


@pytest.mark.fhir_server
@pytest.mark.parametrize("case", cases("urls.yaml", "fhir_server"), ids=case_id)
def test_fhir_server_urls(
    allowlisted: FlaskClient, medplum: RecordingProxy, case: dict[str, Any]
) -> None:
    url = expand(case["url"], medplum.port)
    response = allowlisted.post(f"/cds-services/{SERVICE_ID}", json=hook_request(**fhir(url)))
    if case["expect"] == "refused":
        # 400 when the request schema already refuses the URL, 412 when the allowlist does.
        assert_outcome(response, (400, 412))
        assert medplum.request_lines == []
    else:
        assert_outcome(response, 200)
        assert medplum.request_lines
    assert_only_allowlisted_requests(medplum)


def prefetch_with_next(next_url: str) -> dict[str, Any]:
    """Every key answered, the conditions Bundle with a next link to follow."""
    empty = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    prefetch: dict[str, Any] = {
        "patient": {"resourceType": "Patient", "id": PATIENT_ID, "birthDate": "1950-01-01"},
        "conditions": {**empty, "link": [{"relation": "next", "url": next_url}]},
    }
    for key in ("observations", "medications", "medication-statements", "reports", "procedures"):
        prefetch[key] = copy.deepcopy(empty)
    return prefetch


@pytest.mark.fhir_server
@pytest.mark.parametrize("case", cases("urls.yaml", "next_links"), ids=case_id)
def test_next_links(
    allowlisted: FlaskClient, medplum: RecordingProxy, case: dict[str, Any]
) -> None:
    base = f"http://127.0.0.1:{medplum.port}/fhir/R4"
    body = hook_request(
        prefetch=prefetch_with_next(expand(case["url"], medplum.port)), **fhir(base)
    )
    response = allowlisted.post(f"/cds-services/{SERVICE_ID}", json=body)
    if case["expect"] == "refused":
        assert_outcome(response, 412)
        assert medplum.request_lines == []
    else:
        assert_outcome(response, 200)
        assert len(medplum.request_lines) == 1
    assert_only_allowlisted_requests(medplum)


# --- a FHIR server that answers badly (items 4 and 8) ------------------------------------------

DEADLINE = 1.0
MARGIN = 3.0  # scheduling on a busy shared 2-core machine; the faults run for minutes if not cut


@pytest.fixture(scope="module")
def faulty() -> Iterator[FaultyFhirServer]:
    with FaultyFhirServer() as server:
        yield server


@pytest.fixture
def faulty_client(
    faulty: FaultyFhirServer, tmp_path: Path, knowledge: Knowledge
) -> Iterator[FlaskClient]:
    app = make_app(
        tmp_path,
        knowledge,
        faulty.origin,
        fhir_deadline_seconds=DEADLINE,
        fhir_timeout_seconds=0.5,
        fhir_max_response_bytes=1024 * 1024,
    )
    faulty.reset()
    yield app.test_client()
    app.extensions["cds_runtime"].close()
    release(app.extensions["cds_runtime"].settings.database_url)


def call_and_watch(client: FlaskClient, faulty: FaultyFhirServer, server: str, status: int) -> None:
    """One hook call: its status, its duration, and that no connection outlived it for long."""
    started = time.monotonic()
    response = client.post(f"/cds-services/{SERVICE_ID}", json=hook_request(**fhir(server)))
    answered = time.monotonic()
    assert_outcome(response, status)
    assert answered - started < DEADLINE + MARGIN
    # The fetch threads end by the call's deadline: every connection they opened is closed soon
    # after the answer, and nothing more is downloaded.
    while time.monotonic() < answered + MARGIN and any(c.ended is None for c in faulty.connections):
        time.sleep(0.05)
    connections = faulty.connections
    assert connections, "the service did not call the fault server"
    open_ones = [c.request_line for c in connections if c.ended is None]
    assert not open_ones, open_ones
    sent = sum(c.sent for c in connections)
    time.sleep(0.3)
    assert sum(c.sent for c in faulty.connections) == sent
    assert sent < 60 * 1024 * 1024, sent  # a 100 MB answer is not read to the end


@pytest.mark.parametrize("case", cases("fhir_faults.yaml", "faults"), ids=case_id)
def test_fhir_faults(
    faulty_client: FlaskClient, faulty: FaultyFhirServer, case: dict[str, Any]
) -> None:
    call_and_watch(faulty_client, faulty, faulty.base(case["fault"]), case["expect"])


@pytest.mark.parametrize("case", cases("fhir_faults.yaml", "next_links"), ids=case_id)
def test_fhir_next_links(
    faulty_client: FlaskClient, faulty: FaultyFhirServer, case: dict[str, Any]
) -> None:
    call_and_watch(faulty_client, faulty, faulty.next_base(case["url"]), case["expect"])
    assert all("/admin" not in c.request_line for c in faulty.connections)


# --- timestamps (items 1 and 8) -----------------------------------------------------------------


def issued_card(client: FlaskClient) -> dict[str, Any]:
    """A calcium-low card for the example patient, from a fully prefetched call."""
    response = client.post(f"/cds-services/{SERVICE_ID}", json=example_call())
    assert_outcome(response, 200)
    cards: list[dict[str, Any]] = response.get_json()["cards"]
    return next(c for c in cards if c["source"]["topic"]["code"] == "calcium-low")


def example_call() -> dict[str, Any]:
    """The example patient, prefetched from fixtures/fhir (the same data the FHIR server holds)."""
    bundle = json.loads((FIXTURES / "fhir" / "example-patient.json").read_text("utf-8"))
    resources = [e["resource"] for e in bundle["entry"]]

    def searchset(kind: str) -> dict[str, Any]:
        found = [{"resource": r} for r in resources if r["resourceType"] == kind]
        return {"resourceType": "Bundle", "type": "searchset", "entry": found}

    prefetch = {
        "patient": next(r for r in resources if r["resourceType"] == "Patient"),
        "conditions": searchset("Condition"),
        "observations": searchset("Observation"),
        "medications": searchset("MedicationRequest"),
        "reports": searchset("DiagnosticReport"),
        "procedures": searchset("Procedure"),
    }
    return hook_request(prefetch=prefetch)


@pytest.mark.parametrize("case", cases("timestamps.yaml", "outcome_timestamp"), ids=case_id)
def test_outcome_timestamps(client: FlaskClient, case: dict[str, Any]) -> None:
    card = issued_card(client)
    item = {
        "card": card["uuid"],
        "outcome": "overridden",
        "outcomeTimestamp": case["value"],
        "overrideReason": {"userComment": "hostile suite"},
    }
    response = client.post(f"/cds-services/{SERVICE_ID}/feedback", json={"feedback": [item]})
    assert_outcome(response, case["expect"])
    if case["expect"] == 400:
        issue_paths = [i.get("expression", [""])[0] for i in response.get_json()["issue"]]
        assert "$.feedback[0].outcomeTimestamp" in issue_paths
    after = client.post(f"/cds-services/{SERVICE_ID}", json=example_call())
    assert_outcome(after, 200)
    kinds = [c["source"]["topic"]["code"] for c in after.get_json()["cards"]]
    if case["expect"] == 400:  # a refused override must not hide the card
        assert "calcium-low" in kinds


# --- identifiers (item 11) ----------------------------------------------------------------------


def put(body: dict[str, Any], field: str, value: Any) -> None:
    *parents, last = field.split(".")
    for name in parents:
        body = body[name]
    body[last] = value


@pytest.mark.parametrize("case", cases("identifiers.yaml", "hook_request"), ids=case_id)
def test_hook_identifiers(client: FlaskClient, case: dict[str, Any]) -> None:
    body = example_call()
    put(body, case["field"], case["value"])
    assert_outcome(client.post(f"/cds-services/{SERVICE_ID}", json=body), case["expect"])


@pytest.mark.parametrize("case", cases("identifiers.yaml", "feedback"), ids=case_id)
def test_feedback_identifiers(client: FlaskClient, case: dict[str, Any]) -> None:
    card = issued_card(client)
    item = {
        "card": case["value"].replace("{card}", card["uuid"]),
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T11:00:00Z",
        "overrideReason": {"userComment": "hostile suite"},
    }
    response = client.post(f"/cds-services/{SERVICE_ID}/feedback", json={"feedback": [item]})
    assert_outcome(response, case["expect"])


def test_chunked_body_over_the_limit_is_413(client: FlaskClient, app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    body = json.dumps({**example_call(), "padding": "x" * limit}).encode()
    response = client.post(
        f"/cds-services/{SERVICE_ID}",
        input_stream=io.BytesIO(body),
        content_type="application/json",
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},  # as gunicorn sets it
    )
    assert_outcome(response, 413)
