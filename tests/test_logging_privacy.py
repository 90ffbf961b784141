"""Logs never carry secrets or patient data: whole flows run with every log captured at DEBUG."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pytest_httpserver import HTTPServer

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.knowledge import Knowledge
from cds_service.logs import JsonFormatter, configure_logging
from cds_service.rules import RULES
from cds_service.urls import AllowedUrl
from tests.conftest import NOW, SERVICE_ID, make_settings, release
from tests.support.builders import searchset

URL = f"/cds-services/{SERVICE_ID}"
NAME = "Zebulon Quixote-Marchetti"
FAMILY = "Quixote-Marchetti"
MRN = "MRN-99887766"
PATIENT_ID = "pt-zq-4711"
TOKEN = "tok-SECRET-abc123"
SECRETS = {
    "patient name": NAME,
    "family name": FAMILY,
    "MRN": MRN,
    "patient id": PATIENT_ID,
    "token": TOKEN,
}
NOT_ALLOWLISTED = "https://ehr.not-allowlisted.example/fhir"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"

# LogRecord attributes every record has; anything else on a record was passed as `extra`.
STANDARD_ATTRIBUTES = set(vars(logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None))) | {
    "message",
    "asctime",
}


def patient() -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "identifier": [{"type": {"text": "MRN"}, "system": "urn:oid:1.2.3.4", "value": MRN}],
        "name": [{"text": NAME, "family": FAMILY, "given": ["Zebulon"]}],
        "birthDate": "1950-01-01",
    }


def condition(cid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{PATIENT_ID}", "display": NAME},
        "code": {"coding": [{"system": ICD10, "code": code}], "text": f"{code} in {NAME}"},
    }


def hook_request(fhir_server: str = NOT_ALLOWLISTED, **prefetch_overrides: Any) -> dict[str, Any]:
    """An in-scope patient-view call whose prefetch names the patient everywhere it can."""
    prefetch: dict[str, Any] = {
        "patient": patient(),
        "conditions": searchset(condition("c-1", "I63.9"), condition("c-2", "R25.2")),
        "observations": searchset(
            {
                "resourceType": "Observation",
                "id": "o-1",
                "status": "final",
                "subject": {"reference": f"Patient/{PATIENT_ID}", "display": NAME},
                "code": {"coding": [{"system": LOINC, "code": "17861-6"}]},
                "effectiveDateTime": "2026-11-01",
                "valueQuantity": {"value": 7.1, "unit": "mg/dL"},
                "note": [{"text": f"{NAME} ({MRN}) fasting"}],
            }
        ),
        "medications": None,
        "medication-statements": None,
        "reports": None,
        "procedures": None,
    }
    prefetch.update(prefetch_overrides)
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "fhirServer": fhir_server,
        "fhirAuthorization": {
            "access_token": TOKEN,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/Patient.read user/Observation.read",
            "subject": "cds-service",
            "patient": PATIENT_ID,
        },
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT_ID},
        "prefetch": {k: v for k, v in prefetch.items() if v is not _ABSENT},
    }


_ABSENT = object()


@pytest.fixture
def fhir_server(httpserver: HTTPServer) -> HTTPServer:
    """A FHIR server that refuses every request with 401."""
    httpserver.expect_request("").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "login"}]},
        status=401,
    )
    return httpserver


@pytest.fixture
def debug_app(tmp_path: Path, knowledge: Knowledge, fhir_server: HTTPServer) -> Iterator[Flask]:
    settings = make_settings(
        tmp_path,
        log_level="DEBUG",
        fhir_server_allowlist=(AllowedUrl.parse(fhir_server.url_for("/")),),
    )
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    yield app
    app.extensions["cds_runtime"].close()
    release(settings.database_url)


class Logs:
    """Everything logged during a test: the captured records, and the JSON lines the app wrote."""

    def __init__(self, caplog: pytest.LogCaptureFixture, output: io.StringIO) -> None:
        self.caplog = caplog
        self.output = output

    @property
    def stderr(self) -> str:
        return self.output.getvalue()

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stderr.splitlines()]

    def records(self) -> list[logging.LogRecord]:
        # werkzeug's records are the fake FHIR server's own request log (it runs in this process).
        return [r for r in self.caplog.records if r.name != "werkzeug"]

    def texts(self) -> dict[str, str]:
        """Each place a secret could surface, as text: the output, and each record in full."""
        found = {"JSON output": self.stderr}
        formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
        for index, record in enumerate(self.records()):
            extras = {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRIBUTES}
            # The formatted record includes its exception and stack text, if any.
            found[f"record {index} ({record.name})"] = f"{formatter.format(record)} {extras!r}"
        return found

    def assert_clean(self) -> None:
        leaks = [
            f"{what} in {where}: …{text[max(0, text.find(secret) - 150) : text.find(secret) + 80]!r}…"
            for where, text in self.texts().items()
            for what, secret in SECRETS.items()
            if secret in text
        ]
        assert leaks == [], "\n".join(leaks)


@pytest.fixture
def logs(debug_app: Flask, caplog: pytest.LogCaptureFixture) -> Iterator[Logs]:
    """Logs of the test; the app's JSON handler writes into a buffer while it runs.

    configure_logging binds its handler to the sys.stderr of the first app built in the process,
    which under pytest is an earlier test's capture, so capfd/capsys would not see its lines.
    """
    caplog.set_level(logging.DEBUG)  # the root logger: the service's and every library's records
    handlers = [
        h
        for h in logging.getLogger("cds_service").handlers
        if isinstance(h.formatter, JsonFormatter)
    ]
    assert len(handlers) == 1
    handler = handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    output = io.StringIO()
    previous = handler.setStream(output)
    try:
        yield Logs(caplog, output)
    finally:
        handler.setStream(previous)


def test_full_flows_log_no_secret_or_patient_data(
    debug_app: Flask, fhir_server: HTTPServer, logs: Logs
) -> None:
    client: FlaskClient = debug_app.test_client()

    assert client.get("/cds-services").status_code == 200

    # In scope: the rules run on the named patient and cards are rendered and recorded.
    answered = client.post(URL, json=hook_request())
    assert answered.status_code == 200, answered.get_data(as_text=True)
    assert answered.get_json()["cards"]

    # A required key missing, fhirServer not allowlisted (so never called): 412.
    missing = client.post(URL, json=hook_request(conditions=_ABSENT))
    assert missing.status_code == 412, missing.get_data(as_text=True)

    # Invalid requests that quote the secrets back (the caller sent them; the log must not).
    invalid = hook_request()
    invalid["hookInstance"] = f"{NAME} {MRN}"
    invalid["context"]["userId"] = TOKEN
    assert client.post(URL, json=invalid).status_code == 400
    unknown = client.post("/cds-services/no-such-service", json=hook_request())
    assert unknown.status_code == 404
    assert client.post(URL, data=f"{{{NAME}", content_type="application/json").status_code == 400

    # The allowlisted fake FHIR server refuses the token: the fetch fails, the call is a 412.
    refused = client.post(
        URL, json=hook_request(fhir_server=fhir_server.url_for("/fhir"), conditions=_ABSENT)
    )
    assert refused.status_code == 412, refused.get_data(as_text=True)
    assert "refused" in refused.get_data(as_text=True)
    # The token did reach the FHIR server, so the log had every chance to see it.
    sent = [request for request, _ in fhir_server.log]
    assert sent and all(r.headers.get("Authorization") == f"Bearer {TOKEN}" for r in sent)
    assert any(PATIENT_ID in r.full_path for r in sent)

    records = logs.records()
    assert any(r.name == "cds_service.prefetch" for r in records)  # the failure was logged
    assert any(r.name == "cds_service.access" for r in records)
    logs.assert_clean()


def test_a_fhir_server_the_call_did_not_need_is_not_warned_about(
    debug_app: Flask, logs: Logs
) -> None:
    """Every key prefetched: the fhirServer (not allowlisted here) is never checked, so no warning.
    A key to fetch from that server: refused, warned about once, and the call is a 412."""
    client: FlaskClient = debug_app.test_client()
    assert client.post(URL, json=hook_request(NOT_ALLOWLISTED)).status_code == 200
    lines = logs.json_lines()
    assert [line["logger"] for line in lines] == ["cds_service.access"]
    assert [line["level"] for line in lines] == ["INFO"]

    fetch = client.post(URL, json=hook_request(NOT_ALLOWLISTED, conditions=_ABSENT))
    assert fetch.status_code == 412, fetch.get_data(as_text=True)
    assert "allowlist" in fetch.get_data(as_text=True)
    warnings = [line for line in logs.json_lines()[1:] if line["level"] == "WARNING"]
    assert [w["message"] for w in warnings] == ["fhirServer refused"]
    assert "allowlist" in warnings[0]["reason"]


def test_an_optional_key_the_ehr_did_not_send_is_no_warning(debug_app: Flask, logs: Logs) -> None:
    """Many EHRs prefetch no MedicationStatements (an optional key): with a fhirServer off the
    allowlist that key is skipped, the call answers, and the refusal is a DEBUG line (with many
    EHRs it is every call)."""
    body = hook_request(NOT_ALLOWLISTED)
    del body["prefetch"]["medication-statements"]
    assert debug_app.test_client().post(URL, json=body).status_code == 200
    assert_access_line_and_debug(logs.json_lines(), "fhirServer refused")


def assert_access_line_and_debug(lines: list[dict[str, Any]], message: str) -> None:
    """Above DEBUG only the call's access line; `message` logged once, at DEBUG."""
    assert [(line["level"], line["logger"]) for line in lines if line["level"] != "DEBUG"] == [
        ("INFO", "cds_service.access")
    ]
    assert [line["level"] for line in lines if line["message"] == message] == ["DEBUG"]


def test_a_medication_no_server_may_be_asked_for_is_no_info_line(
    debug_app: Flask, logs: Logs
) -> None:
    """An order naming a Medication the EHR did not send, and no fhirServer: the card says the
    medicine could not be identified; the log says so only at DEBUG (with some EHRs, every call)."""
    scenario = Path(__file__).parent.parent / "fixtures/scenarios"
    path = scenario / "383-medication-reference-not-received-says-unidentified.json"
    body = json.loads(path.read_text(encoding="utf-8"))["request"]
    assert "fhirServer" not in body
    assert debug_app.test_client().post(URL, json=body).status_code == 200
    assert_access_line_and_debug(logs.json_lines(), "referenced medications not looked up")


def test_an_unexpected_error_logs_where_not_what(
    debug_app: Flask, logs: Logs, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(hook: Any) -> Any:
        raise ValueError(f"cannot read {NAME} ({MRN}) with {TOKEN}, patient {PATIENT_ID}")

    spec = debug_app.extensions["cds_runtime"].knowledge.services[0]
    monkeypatch.setitem(RULES, spec.rules, crash)
    response = debug_app.test_client().post(URL, json=hook_request())
    assert response.status_code == 500
    assert NAME not in response.get_data(as_text=True)

    errors = [line for line in logs.json_lines() if line["level"] == "ERROR"]
    assert errors and errors[0]["exception"] == "ValueError" and errors[0]["stack"]
    leaks = [what for what, secret in SECRETS.items() if secret in logs.stderr]
    assert leaks == [], logs.stderr


def test_access_log_line_names_route_status_and_latency(debug_app: Flask, logs: Logs) -> None:
    client = debug_app.test_client()
    assert client.post(URL, json=hook_request()).status_code == 200
    assert client.post("/cds-services/no-such-service", json=hook_request()).status_code == 404

    access = [line for line in logs.json_lines() if line["logger"] == "cds_service.access"]
    assert len(access) == 2, access
    ok, not_found = access
    assert ok["message"] == "request"
    assert ok["method"] == "POST"
    assert ok["route"] == "/cds-services/<service_id>"
    assert ok["status"] == 200
    assert isinstance(ok["latency_ms"], int | float) and ok["latency_ms"] >= 0
    assert ok["service_id"] == SERVICE_ID and ok["hook"] == "patient-view" and ok["cards"] >= 1
    assert not_found["status"] == 404 and not_found["route"] == "/cds-services/<service_id>"
    # The JSON lines carry only the documented fields.
    allowed = {"time", "level", "logger", "message", "exception", "stack"}
    from cds_service.logs import ALLOWED_FIELDS

    for line in logs.json_lines():
        assert set(line) <= allowed | set(ALLOWED_FIELDS), line


@pytest.mark.parametrize("logger", ["gunicorn.error", "werkzeug"])
def test_http_server_lines_keep_the_kind_of_error_and_drop_the_request(
    logger: str, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("INFO")
    server_log = logging.getLogger(logger)
    with caplog.at_level(logging.INFO, logger=logger):
        server_log.warning(f"Invalid request from ip=127.0.0.1: Invalid HTTP Header: {TOKEN!r}")
        server_log.error("code %d, message %s", 400, f"Bad request syntax ('GET /?p={PATIENT_ID}')")
        try:
            raise OSError("reset")
        except OSError:
            server_log.exception("Error handling request %s %s", "GET", f"/x?patient={PATIENT_ID}")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "Invalid request from ip=127.0.0.1: Invalid HTTP Header: [redacted]",
        "code 400, message Bad request syntax ([redacted])",
        "Error handling request [redacted]",
    ]
    assert caplog.records[2].exc_info is not None  # the traceback still says where it failed
