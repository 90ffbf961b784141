"""The prefetch fallback against a real FHIR R4 server (Medplum's engine on loopback).

Each scenario's patient is loaded into the server; calling the service with no prefetch and
`fhirServer` pointing at it must give the same cards as calling it with the full prefetch. The server
pages every search two entries at a time, so the `next`-link path is exercised too.

Deadlines: these tests check what is fetched and what it gives, not how fast. The production
defaults (3 s per FHIR request, 5 s per call) are for a hospital's FHIR server; this one is a Node
process on a shared 2-core machine, holding every scenario's patient and searched by scanning them
all, two entries a page. Under load from other processes one search took over 3 s and the call
answered 412 (scenario 35, a single seen failure), so the outcome depended on the machine. The app
here gets explicit, generous deadlines, and the server is warmed before the first test (Node compiles
Medplum's search code on first use). Deadline behaviour itself is tested in tests/fhir/test_client.py
against a server that delays on demand.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flask import Flask
from flask.testing import FlaskClient

from cds_service.config import Settings
from tests.conftest import FIXTURES, SERVICE_ID, assert_valid_response, make_settings, release
from tests.support.fhir_server import LocalFhirServer, requests_seen, reset_requests

# One xdist worker runs the module: one FHIR server (its start loads ~35 MB of definitions).
pytestmark = [pytest.mark.fhir_server, pytest.mark.xdist_group("fhir-fallback")]

TOKEN = "fallback-test-token-8c1f"
# Seconds: far above the slowest search seen under load, still a bound (a hung server fails the test).
REQUEST_TIMEOUT = 30.0
CALL_DEADLINE = 60.0
# The resource types the patient-view service searches (warmed once before the tests).
SEARCHED_TYPES = ("Condition", "Observation", "MedicationRequest", "DiagnosticReport", "Procedure")


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Development settings with this module's explicit FHIR deadlines (see the module docstring)."""
    settings = make_settings(
        tmp_path, fhir_timeout_seconds=REQUEST_TIMEOUT, fhir_deadline_seconds=CALL_DEADLINE
    )
    yield settings
    release(settings.database_url)


def scenarios() -> list[Path]:
    """Scenarios answered with 200 whose patients have distinct ids (so one server can hold them all)."""
    chosen: list[Path] = []
    seen: set[str] = set()
    for path in sorted((FIXTURES / "scenarios").glob("*.json")):
        scenario = json.loads(path.read_text(encoding="utf-8"))
        request = scenario["request"]
        patient_id = request["context"]["patientId"]
        if (
            scenario["expect"].get("status", 200) != 200
            or patient_id in seen
            or not request.get("prefetch")
        ):
            continue
        seen.add(patient_id)
        chosen.append(path)
    return chosen


def resources_of(prefetch: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for value in prefetch.values():
        if not value:
            continue
        if value.get("resourceType") == "Bundle":
            found.extend(e["resource"] for e in value.get("entry", []) if "resource" in e)
        else:
            found.append(value)
    return found


@pytest.fixture(scope="module")
def fhir_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    seed_dir = tmp_path_factory.mktemp("seed")
    entries = []
    for path in scenarios():
        prefetch = json.loads(path.read_text(encoding="utf-8"))["request"]["prefetch"]
        entries.extend({"resource": r} for r in resources_of(prefetch))
    entries.extend({"resource": r} for r in PAGED_RESOURCES)
    (seed_dir / "scenarios.json").write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    )
    with LocalFhirServer(
        [FIXTURES / "fhir", seed_dir], extra_args=["--default-count", "2"]
    ) as base:
        warm(base)
        yield base


def warm(base: str) -> None:
    """One search per searched type, so the first test does not pay for Node's first-use compiling."""
    with httpx.Client(base_url=base, timeout=REQUEST_TIMEOUT) as http:
        http.get("Patient/example-stroke-cramps").raise_for_status()
        for resource_type in SEARCHED_TYPES:
            http.get(resource_type, params={"patient": "example-stroke-cramps"}).raise_for_status()
    reset_requests(base)


def comparable(cards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cards without their per-call uuids."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "uuid"}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return sorted((strip(c) for c in cards), key=lambda c: (c["indicator"], c["summary"]))


def without_prefetch(request: dict[str, Any], base: str) -> dict[str, Any]:
    fetched = {k: v for k, v in request.items() if k != "prefetch"}
    fetched["hookInstance"] = str(uuid.uuid4())
    fetched["fhirServer"] = base
    fetched["fhirAuthorization"] = {
        "access_token": TOKEN,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "leg-cramps-cds",
    }
    return fetched


@pytest.mark.parametrize("path", scenarios(), ids=lambda p: p.stem)
def test_fetched_data_gives_the_same_cards_as_prefetch(
    client: FlaskClient, fhir_base: str, path: Path
) -> None:
    scenario = json.loads(path.read_text(encoding="utf-8"))
    request = scenario["request"]
    service = scenario.get("service", SERVICE_ID)
    prefetched = client.post(f"/cds-services/{service}", json=request)
    assert prefetched.status_code == 200
    reset_requests(fhir_base)
    fetched = client.post(f"/cds-services/{service}", json=without_prefetch(request, fhir_base))
    assert fetched.status_code == 200, fetched.get_data(as_text=True)
    assert_valid_response(fetched.get_json())
    assert comparable(fetched.get_json()["cards"]) == comparable(prefetched.get_json()["cards"])
    seen = requests_seen(fhir_base)
    assert seen, "the service did not call the FHIR server"
    assert all(r["authorization"] == f"Bearer {TOKEN}" for r in seen)


def test_example_patient_from_the_seed_directory(client: FlaskClient, fhir_base: str) -> None:
    request = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": "example-stroke-cramps"},
    }
    response = client.post(f"/cds-services/{SERVICE_ID}", json=without_prefetch(request, fhir_base))
    assert response.status_code == 200, response.get_data(as_text=True)
    kinds = [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]
    assert kinds == ["calcium-low"]


def condition(patient_id: str, n: int, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"{patient_id}-c{n}",
        "clinicalStatus": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                    "code": "active",
                }
            ]
        },
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


PAGED = "paging-check"
ICD = "http://hl7.org/fhir/sid/icd-10-cm"
PAGED_RESOURCES = [
    {"resourceType": "Patient", "id": PAGED, "birthDate": "1980-05-05"},
    condition(PAGED, 1, ICD, "I63.9"),
    condition(PAGED, 2, ICD, "E11.9"),
    condition(PAGED, 3, ICD, "I10"),
    condition(PAGED, 4, ICD, "E78.5"),
    condition(PAGED, 5, ICD, "R25.2"),
]


def test_paginated_searches_are_followed_to_the_last_page(
    client: FlaskClient, fhir_base: str
) -> None:
    request = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": PAGED},
    }
    reset_requests(fhir_base)
    response = client.post(f"/cds-services/{SERVICE_ID}", json=without_prefetch(request, fhir_base))
    assert response.status_code == 200, response.get_data(as_text=True)
    # Stroke (page 1) and cramps (page 3) are on different pages: only all pages together put the
    # patient in scope.
    kinds = sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])
    assert kinds == ["calcium-workup", "differential-workup"]
    condition_pages = [r for r in requests_seen(fhir_base) if r["path"].endswith("/Condition")]
    assert len(condition_pages) == 3


def test_partial_prefetch_fetches_only_what_is_missing(client: FlaskClient, fhir_base: str) -> None:
    request = {
        "hook": "patient-view",
        "hookInstance": str(uuid.uuid4()),
        "context": {"userId": "Practitioner/dr-1", "patientId": "example-stroke-cramps"},
    }
    body = without_prefetch(request, fhir_base)
    body["prefetch"] = {
        "patient": None,
        "medications": None,
        "reports": {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "timeout"}],
        },
    }
    reset_requests(fhir_base)
    response = client.post(f"/cds-services/{SERVICE_ID}", json=body)
    assert response.status_code == 200
    fetched_types = {r["path"].rsplit("/", 1)[-1] for r in requests_seen(fhir_base)}
    assert "Patient" not in " ".join(fetched_types) and "MedicationRequest" not in fetched_types
    assert {"Condition", "Observation", "DiagnosticReport", "Procedure"} <= fetched_types


def test_the_app_runs_with_this_modules_deadlines(app: Flask) -> None:
    settings = app.extensions["cds_runtime"].settings
    assert (settings.fhir_timeout_seconds, settings.fhir_deadline_seconds) == (
        REQUEST_TIMEOUT,
        CALL_DEADLINE,
    )


UNSENT_MEDICATION = (
    FIXTURES / "scenarios" / "383-medication-reference-not-received-says-unidentified.json"
)


def unsent_medication_request(fhir_server: str) -> dict[str, Any]:
    """Scenario 383's call (tizanidine named only by `Medication/b18-j01-med-tiz`, that Medication not
    in the prefetch, oral ciprofloxacin beside it) with a fhirServer. Scenario 382 seeds the server
    with that Medication."""
    request = json.loads(UNSENT_MEDICATION.read_text(encoding="utf-8"))["request"]
    prefetch = request["prefetch"]
    body = without_prefetch(request, fhir_server)
    body["prefetch"] = prefetch
    return body


def card_kinds(response: Any) -> list[str]:
    return sorted(c["source"]["topic"]["code"] for c in response.get_json()["cards"])


def test_a_referenced_medication_not_prefetched_is_read_from_the_fhir_server(
    client: FlaskClient, fhir_base: str
) -> None:
    reset_requests(fhir_base)
    response = client.post(f"/cds-services/{SERVICE_ID}", json=unsent_medication_request(fhir_base))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_valid_response(response.get_json())
    cards = response.get_json()["cards"]
    [interaction] = [
        c for c in cards if c["source"]["topic"]["code"] == "tizanidine-cyp1a2-interaction"
    ]
    assert interaction["indicator"] == "critical"
    assert "tizanidine 4 mg tablet" in interaction["summary"]
    assert "medication-unidentified" not in card_kinds(response)
    # The prefetch was complete: the one request is the Medication search, with the call's token.
    [seen] = requests_seen(fhir_base)
    assert seen["path"].endswith("/Medication")
    assert seen["query"] == "_id=b18-j01-med-tiz&_count=1"
    assert seen["authorization"] == f"Bearer {TOKEN}"


def test_a_fhir_server_that_is_down_leaves_the_medicine_unidentified(client: FlaskClient) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: every connection is refused
        down = f"http://127.0.0.1:{closed.getsockname()[1]}/fhir/R4"
        response = client.post(f"/cds-services/{SERVICE_ID}", json=unsent_medication_request(down))
    assert response.status_code == 200, response.get_data(as_text=True)
    kinds = card_kinds(response)
    assert "medication-unidentified" in kinds and "tizanidine-cyp1a2-interaction" not in kinds
