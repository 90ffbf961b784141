"""Schemathesis against the app in-process (WSGI): every operation of /openapi.json keeps its contract.

The schema is loaded eagerly at import: schemathesis.pytest.from_fixture (lazy loading) reads
`request.node._nodeid`, which pytest 9 no longer has (schemathesis 4.32.5).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.knowledge import load_knowledge
from tests.conftest import NOW, ROOT, SERVICE_ID, make_settings, release
from tests.test_api import request_body
from tests.test_properties import in_scope

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]

_DATABASE_DIR = tempfile.TemporaryDirectory(prefix="cds-schemathesis-")


def _app() -> Flask:
    # Development settings (auth off, responses self-validated) with an empty FHIR server allowlist,
    # so a generated fhirServer is refused rather than called: no network.
    app_settings = make_settings(Path(_DATABASE_DIR.name), fhir_server_allowlist=())
    return create_app(
        app_settings, clock=fixed_clock(NOW), knowledge=load_knowledge(ROOT / "cards")
    )


APP = _app()
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)
# The app runs with CDS_AUTH=off, so the documented bearer requirement is not enforced: no
# Authorization header is generated (or left out on purpose to expect a 401). tests/test_auth.py
# covers the JWT checks.
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=100,
    with_security_parameters=False,
)


@pytest.fixture(scope="module", autouse=True)
def _close_app() -> Iterator[None]:
    yield
    runtime = APP.extensions["cds_runtime"]
    runtime.close()
    release(runtime.settings.database_url)


@schema.parametrize()
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_operation_keeps_its_contract(case: Any) -> None:
    case.call_and_validate(checks=CHECKS)


def test_schema_covers_every_route() -> None:
    # Schemathesis itself skips the operation that serves the schema, so read the raw document.
    documented = {
        (method.upper(), path)
        for path, item in schema.raw_schema["paths"].items()
        for method in item
    }
    routed = {
        (method, rule.rule.replace("<service_id>", "{id}"))
        for rule in APP.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in {"HEAD", "OPTIONS"}
    }
    assert documented == routed


# Generated bodies almost never name a served hook with a complete prefetch, so these hand-made
# requests put the 200 (with cards), 412 and 404 answers through the same checks.
HAND_MADE = [
    ("in-scope-with-cards", SERVICE_ID, in_scope(), 200, True),
    ("out-of-scope-no-cards", SERVICE_ID, request_body(), 200, False),
    ("missing-prefetch-412", SERVICE_ID, request_body(prefetch={}), 412, False),
    ("unserved-hook-400", SERVICE_ID, request_body(hook="order-sign"), 400, False),
    ("unknown-service-404", "no-such-service", request_body(), 404, False),
]


@pytest.mark.parametrize(
    ("service", "body", "status", "cards"),
    [case[1:] for case in HAND_MADE],
    ids=[case[0] for case in HAND_MADE],
)
def test_hand_made_requests_keep_the_contract(
    service: str, body: Any, status: int, cards: bool
) -> None:
    operation = schema["/cds-services/{id}"]["POST"]
    case = operation.Case(path_parameters={"id": service}, body=body, media_type="application/json")
    response = case.call_and_validate(checks=CHECKS)
    assert response.status_code == status, response.text
    if status == 200:
        assert bool(response.json()["cards"]) == cards
