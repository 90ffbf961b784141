"""Tests the local Medplum FHIR server and its Python helpers against a real process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .fhir_server import (
    FhirServerError,
    LocalFhirServer,
    requests_seen,
    reset_requests,
    start_fhir_server,
)

pytestmark = pytest.mark.fhir_server

LOINC = "http://loinc.org"
PATIENT_URN = "urn:uuid:0b6f3c52-6c57-4c2e-9d0e-3f5b8a1c7d01"


def _observation(obs_id: str, code: str, value: float, subject: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2026-11-01",
        "valueQuantity": {
            "value": value,
            "unit": "mg/dL",
            "system": "http://unitsofmeasure.org",
            "code": "mg/dL",
        },
    }


def _seed_bundle() -> dict[str, Any]:
    resources: list[tuple[str | None, dict[str, Any]]] = [
        (PATIENT_URN, {"resourceType": "Patient", "id": "pt-1", "gender": "male"}),
        (None, {"resourceType": "Patient", "id": "pt-2", "gender": "female"}),
        (None, _observation("obs-ca", "17861-6", 8.1, "Patient/pt-1")),
        # A urn:uuid reference: the server must rewrite it to Patient/pt-1 when seeding.
        (None, _observation("obs-ca-mol", "2000-8", 2.0, PATIENT_URN)),
        (None, _observation("obs-k", "2823-3", 4.1, "Patient/pt-1")),
        (None, _observation("obs-other", "17861-6", 9.0, "Patient/pt-2")),
        (
            None,
            {
                "resourceType": "Condition",
                "id": "cond-1",
                "code": {
                    "coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "R25.2"}]
                },
                "subject": {"reference": "Patient/pt-1"},
            },
        ),
        *((None, resource) for resource in _patient_search_conditions()),
    ]
    entries = []
    for full_url, resource in resources:
        entry: dict[str, Any] = {
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        if full_url:
            entry["fullUrl"] = full_url
        entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def _condition(cond_id: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Condition", "id": cond_id, "subject": {"reference": subject}, **extra}


def _patient_search_conditions() -> list[dict[str, Any]]:
    """Conditions that name patient pt-3 in ways a `patient` search must tell apart: the server
    searches only the resources that mention the id, and Medplum decides which of them match."""
    return [
        _condition("pt3-match", "Patient/pt-3"),
        _condition("pt3-absolute", "http://other.example/fhir/Patient/pt-3"),
        _condition("pt3-prefix", "Patient/pt-30"),
        _condition("pt3-in-note", "Patient/pt-2", note=[{"text": "seen with pt-3"}]),
        _condition("pt3-group", "Group/pt-3"),
    ]


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    seed_dir = tmp_path_factory.mktemp("fhir-seed")
    (seed_dir / "bundle.json").write_text(json.dumps(_seed_bundle()), encoding="utf-8")
    with start_fhir_server([seed_dir]) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=10) as http_client:
        yield http_client


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


def _next_link(bundle: dict[str, Any]) -> str | None:
    for link in bundle.get("link", []):
        if link["relation"] == "next":
            url: str = link["url"]
            return url
    return None


def test_base_url_shape(base_url: str) -> None:
    assert base_url.startswith("http://127.0.0.1:")
    assert base_url.endswith("/fhir/R4")


def test_read_by_id(client: httpx.Client) -> None:
    response = client.get("Patient/pt-1")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    patient = response.json()
    assert patient["resourceType"] == "Patient"
    assert patient["id"] == "pt-1"
    assert patient["gender"] == "male"


def test_search_by_patient_and_codes(client: httpx.Client) -> None:
    response = client.get(
        "Observation",
        params={"patient": "pt-1", "code": f"{LOINC}|17861-6,{LOINC}|2000-8"},
    )
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert sorted(_ids(bundle)) == ["obs-ca", "obs-ca-mol"]
    assert bundle["total"] == 2


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("patient=pt-3", ["pt3-match"]),
        ("patient=Patient/pt-3", ["pt3-match"]),
        ("subject=Patient/pt-3", ["pt3-match"]),
        ("patient=pt-3,pt-2", ["pt3-in-note", "pt3-match"]),
        ("patient=pt-3&_count=1", ["pt3-match"]),
        ("patient:missing=false&subject=Patient/pt-30", ["pt3-prefix"]),
    ],
)
def test_patient_searches_match_as_medplum_decides(
    client: httpx.Client, query: str, expected: list[str]
) -> None:
    # The answers of Medplum's own matching (the server narrows `patient` searches to the
    # resources that mention the id first; that must change no answer).
    bundle = client.get(f"Condition?{query}").json()
    assert sorted(_ids(bundle)) == expected
    assert bundle["total"] == len(expected)


def test_seeding_rewrites_urn_uuid_references(client: httpx.Client) -> None:
    observation = client.get("Observation/obs-ca-mol").json()
    assert observation["subject"] == {"reference": "Patient/pt-1"}


def test_paging_with_count_follows_absolute_next_links(base_url: str, client: httpx.Client) -> None:
    url: str | None = f"{base_url}/Observation?patient=pt-1&_count=1"
    seen: list[str] = []
    pages = 0
    while url is not None:
        assert url.startswith(base_url), url
        response = client.get(url)
        assert response.status_code == 200
        bundle = response.json()
        page_ids = _ids(bundle)
        assert len(page_ids) == 1
        seen += page_ids
        pages += 1
        assert pages <= 10, "next links do not terminate"
        url = _next_link(bundle)
    assert pages == 3
    assert sorted(seen) == ["obs-ca", "obs-ca-mol", "obs-k"]


def test_unknown_id_is_404_operation_outcome(client: httpx.Client) -> None:
    response = client.get("Patient/does-not-exist")
    assert response.status_code == 404
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "not-found"


def test_authorization_header_is_recorded(base_url: str, client: httpx.Client) -> None:
    reset_requests(base_url)
    assert requests_seen(base_url) == []
    client.get("Condition", params={"patient": "pt-1"}, headers={"Authorization": "Bearer t0k3n"})
    client.get("Patient/pt-1")
    seen = requests_seen(base_url)
    assert [(r["method"], r["path"], r["authorization"]) for r in seen] == [
        ("GET", "/fhir/R4/Condition", "Bearer t0k3n"),
        ("GET", "/fhir/R4/Patient/pt-1", None),
    ]
    assert seen[0]["query"] == "patient=pt-1"


def test_missing_node_modules_is_a_clear_error(tmp_path: Path) -> None:
    server = LocalFhirServer([], server_dir=tmp_path)
    with pytest.raises(FhirServerError, match="make test"):
        server.start()


SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"


def test_cors_preflight_with_private_network_access(client: httpx.Client) -> None:
    # What Chrome sends before the public sandbox (an https page) reads a loopback FHIR server
    # with an Authorization header: a CORS preflight that also asks for private network access.
    response = client.options(
        "Patient/pt-1",
        headers={
            "Origin": SANDBOX_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization,accept",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "GET" in response.headers["access-control-allow-methods"].split(", ")
    allowed = {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")
    }
    assert {"authorization", "accept"} <= allowed
    assert response.headers["access-control-allow-private-network"] == "true"
    assert response.content == b""


def test_cors_preflight_without_private_network_request(client: httpx.Client) -> None:
    response = client.options(
        "metadata",
        headers={"Origin": SANDBOX_ORIGIN, "Access-Control-Request-Method": "GET"},
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-private-network" not in response.headers


def test_cross_origin_reads_carry_cors_headers(client: httpx.Client) -> None:
    for path, status in [("metadata", 200), ("Patient/pt-1", 200), ("Patient/nope", 404)]:
        response = client.get(path, headers={"Origin": SANDBOX_ORIGIN})
        assert response.status_code == status
        assert response.headers["access-control-allow-origin"] == "*"
        assert "ETag" in response.headers["access-control-expose-headers"]
