"""The FHIR client against an in-process fake server: the faults a real server will not produce on demand."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from cds_service.errors import PreconditionFailed
from cds_service.fhir.client import FhirClient, FhirFetchError
from cds_service.knowledge.loader import PrefetchTemplate
from cds_service.prefetch import gather
from cds_service.urls import AllowedUrl

TOKEN = "secret-access-token-123"
PATIENT = {"resourceType": "Patient", "id": "pt-1", "birthDate": "1950-01-01"}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        yield client


def make_client(server: HTTPServer, http: httpx.Client, **kw: Any) -> FhirClient:
    base = server.url_for("/fhir")
    allow = (AllowedUrl.parse(f"http://{server.host}:{server.port}"),)
    return FhirClient(http=http, base_url=base, allowlist=allow, access_token=TOKEN, **kw)


def test_read_sends_the_bearer_token(httpserver: HTTPServer, http: httpx.Client) -> None:
    httpserver.expect_request(
        "/fhir/Patient/pt-1", headers={"Authorization": f"Bearer {TOKEN}"}
    ).respond_with_json(PATIENT)
    assert make_client(httpserver, http).query("Patient/pt-1") == PATIENT


def test_read_of_a_missing_resource_is_no_data(httpserver: HTTPServer, http: httpx.Client) -> None:
    httpserver.expect_request("/fhir/Patient/nobody").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": []}, status=404
    )
    assert make_client(httpserver, http).query("Patient/nobody") is None


def page(ids: list[str], next_url: str | None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": {"resourceType": "Observation", "id": i}} for i in ids],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def test_search_follows_next_links_and_merges_pages(
    httpserver: HTTPServer, http: httpx.Client
) -> None:
    httpserver.expect_request("/fhir/Observation", query_string="patient=pt-1").respond_with_json(
        page(["a", "b"], httpserver.url_for("/fhir/Observation") + "?page=2")
    )
    httpserver.expect_request(
        "/fhir/Observation", query_string="page=2", headers={"Authorization": f"Bearer {TOKEN}"}
    ).respond_with_json(page(["b", "c"], None))
    bundle = make_client(httpserver, http).query("Observation?patient=pt-1")
    assert bundle is not None
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a", "b", "c"]
    assert "link" not in bundle


def test_paging_stops_at_the_page_cap(httpserver: HTTPServer, http: httpx.Client) -> None:
    next_url = httpserver.url_for("/fhir/Observation") + "?page=n"
    httpserver.expect_request("/fhir/Observation", query_string="page=n").respond_with_json(
        page(["x"], next_url)
    )
    httpserver.expect_request("/fhir/Observation", query_string="patient=pt-1").respond_with_json(
        page(["a"], next_url)
    )
    bundle = make_client(httpserver, http, max_pages=3).query("Observation?patient=pt-1")
    assert bundle is not None
    assert len(httpserver.log) == 3
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["a", "x"]


def test_next_link_to_another_server_is_not_followed(
    httpserver: HTTPServer, http: httpx.Client
) -> None:
    httpserver.expect_request("/fhir/Observation").respond_with_json(
        page(["a"], "https://attacker.example.org/steal?page=2")
    )
    with pytest.raises(FhirFetchError, match="outside the FHIR server"):
        make_client(httpserver, http).query("Observation?patient=pt-1")


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"resourceType": "OperationOutcome"}, "refused the request \\(401\\)"),
        (403, {"resourceType": "OperationOutcome"}, "refused the request \\(403\\)"),
        (500, {"resourceType": "OperationOutcome"}, "answered 500"),
        (200, "<html>not json</html>", "not JSON"),
        (200, ["a", "list"], "not a FHIR resource"),
    ],
)
def test_server_faults_become_fetch_errors(
    httpserver: HTTPServer, http: httpx.Client, status: int, body: Any, message: str
) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    httpserver.expect_request("/fhir/Patient/pt-1").respond_with_data(text, status=status)
    with pytest.raises(FhirFetchError, match=message) as failure:
        make_client(httpserver, http).query("Patient/pt-1")
    assert TOKEN not in str(failure.value)


def test_slow_server_times_out(httpserver: HTTPServer, http: httpx.Client) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(json.dumps(PATIENT), content_type="application/fhir+json")

    httpserver.expect_request("/fhir/Patient/pt-1").respond_with_handler(slow)
    with pytest.raises(FhirFetchError, match=r"did not answer within 0\.2 s"):
        make_client(httpserver, http, timeout_seconds=0.2).query("Patient/pt-1")


def test_unreachable_server(http: httpx.Client) -> None:
    client = FhirClient(
        http=http,
        base_url="http://127.0.0.1:9/fhir",
        allowlist=(AllowedUrl.parse("http://127.0.0.1"),),
    )
    with pytest.raises(FhirFetchError, match="could not be reached"):
        client.query("Patient/pt-1")


@pytest.mark.parametrize(
    ("base", "allow", "reason"),
    [
        ("https://ehr.example.org/fhir", "https://other.example.org", "allowlist"),
        ("https://ehr.example.org.evil.com/fhir", "https://ehr.example.org", "allowlist"),
        ("https://ehr.example.org/fhirx", "https://ehr.example.org/fhir", "allowlist"),
        ("http://ehr.example.org/fhir", "http://ehr.example.org", "https"),
        ("ftp://ehr.example.org/fhir", "https://ehr.example.org", "http"),
    ],
)
def test_servers_off_the_allowlist_are_never_contacted(
    http: httpx.Client, base: str, allow: str, reason: str
) -> None:
    with pytest.raises(FhirFetchError, match=reason):
        FhirClient(http=http, base_url=base, allowlist=(AllowedUrl.parse(allow),))


@pytest.fixture
def threaded_server() -> Iterator[HTTPServer]:
    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_missing_keys_are_fetched_concurrently(
    threaded_server: HTTPServer, http: httpx.Client
) -> None:
    httpserver = threaded_server
    in_flight = 0
    most = 0
    lock = threading.Lock()

    def handler(request: Request) -> Response:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
        time.sleep(0.2)
        with lock:
            in_flight -= 1
        return Response(
            json.dumps({"resourceType": "Bundle", "type": "searchset"}),
            content_type="application/fhir+json",
        )

    httpserver.expect_request("/fhir/Observation").respond_with_handler(handler)
    templates = [
        PrefetchTemplate(f"k{i}", f"Observation?patient={{{{context.patientId}}}}&n={i}")
        for i in range(4)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        client = make_client(httpserver, http)
        data = gather(templates, {}, {"patientId": "pt-1"}, lambda: client, pool, 5.0)
    assert set(data) == {"k0", "k1", "k2", "k3"}
    assert most >= 2, "missing prefetch keys were fetched one after another"


def test_overall_deadline_fails_with_412(httpserver: HTTPServer, http: httpx.Client) -> None:
    def slow(request: Request) -> Response:
        time.sleep(1.0)
        return Response(json.dumps(PATIENT), content_type="application/fhir+json")

    httpserver.expect_request("/fhir/Patient/pt-1").respond_with_handler(slow)
    templates = [PrefetchTemplate("patient", "Patient/{{context.patientId}}")]
    with ThreadPoolExecutor(max_workers=2) as pool, pytest.raises(PreconditionFailed) as failure:
        client = make_client(httpserver, http)
        gather(templates, {}, {"patientId": "pt-1"}, lambda: client, pool, 0.2)
    assert "deadline" in failure.value.issues[0].message
