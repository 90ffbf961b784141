"""A hook call's request validation: every mistake of the caller is found before any FHIR fetch."""

from __future__ import annotations

import json
from typing import Any

from flask import Flask
from pytest_httpserver import HTTPServer

from tests.conftest import FIXTURES

ORDER_SELECT = FIXTURES / "scenarios" / "62-order-select-cyclobenzaprine-age-72-beers.json"


def without_prefetch(httpserver: HTTPServer, selections: list[str]) -> dict[str, Any]:
    """The scenario's order-select request, with nothing prefetched and a FHIR server to ask."""
    request: dict[str, Any] = json.loads(ORDER_SELECT.read_text(encoding="utf-8"))["request"]
    request.pop("prefetch", None)
    request["fhirServer"] = httpserver.url_for("/fhir")
    request["context"]["selections"] = selections
    return request


def test_a_selection_not_among_the_draft_orders_is_refused_before_any_fetch(
    app: Flask, httpserver: HTTPServer
) -> None:
    request = without_prefetch(httpserver, ["MedicationRequest/not-a-draft"])
    response = app.test_client().post("/cds-services/leg-cramps-order-select", json=request)

    assert response.status_code == 400
    issues = response.get_json()["issue"]
    assert [i["expression"] for i in issues] == [["$.context.selections"]]
    assert "'MedicationRequest/not-a-draft' is not in draftOrders" in issues[0]["diagnostics"]
    assert httpserver.log == []  # the FHIR server was never called


def test_a_valid_selection_does_fetch_what_was_not_prefetched(
    app: Flask, httpserver: HTTPServer
) -> None:
    # The control for the test above: the same request with a real selection reaches the server.
    request = without_prefetch(
        httpserver, list(json.loads(ORDER_SELECT.read_text())["request"]["context"]["selections"])
    )
    app.test_client().post("/cds-services/leg-cramps-order-select", json=request)
    assert httpserver.log != []
