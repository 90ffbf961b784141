"""The OpenAPI 3.1 document: valid, self-contained, faithful to the JSON Schemas, served without auth."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cds_service import __version__
from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.knowledge import Knowledge
from cds_service.protocol.openapi import COMPONENT_NAMES, _embed, build_openapi
from cds_service.protocol.schemas import _format_checker, _schema, validate
from tests.conftest import NOW, ROOT, SERVICE_ID, make_settings, release
from tests.test_api import request_body

# openapi-spec-validator is not a dependency; schemathesis (a test dependency) ships the official
# OpenAPI 3.1 meta-schema (spec.openapis.org/oas/3.1/schema/2022-10-07), which is what it checks.
from schemathesis.specs.openapi.definitions import OPENAPI_31  # isort: skip

DOC_URI = "urn:cds-service:openapi"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_openapi([SERVICE_ID])


def meta_problems(document: dict[str, Any]) -> list[str]:
    return [e.message for e in Draft202012Validator(OPENAPI_31).iter_errors(document)]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local JSON-pointer $ref resolved in document (KeyError when it does not resolve)."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for token in ref[2:].split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def component_validator(document: dict[str, Any], component: str) -> Any:
    """A validator for one component, resolving its $refs inside the whole OpenAPI document."""
    registry: Registry[Any] = Registry().with_resource(
        DOC_URI, Resource.from_contents(document, default_specification=DRAFT202012)
    )
    return Draft202012Validator(
        {"$ref": f"{DOC_URI}#/components/schemas/{component}"},
        registry=registry,
        format_checker=_format_checker(),  # the service's own uuid, uri and date-time checks
    )


# --- the document ----------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    assert meta_problems(document) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("info"),
        lambda d: d["paths"]["/cds-services/{id}"]["post"].update(responses=[]),
        lambda d: d["paths"]["/cds-services/{id}"]["post"]["parameters"][0].pop("in"),
        lambda d: d["components"]["securitySchemes"]["cdsClientJwt"].update(type="jwt"),
    ],
)
def test_meta_schema_check_catches_a_broken_document(document: dict[str, Any], damage: Any) -> None:
    broken = copy.deepcopy(document)
    damage(broken)
    assert meta_problems(broken)


def test_every_ref_resolves(document: dict[str, Any]) -> None:
    found = list(refs(document))
    assert len(found) > 20
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert isinstance(resolve(document, ref), dict), ref


def test_embedded_schemas_carry_no_id_schema_or_defs(document: dict[str, Any]) -> None:
    def keys(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            yield from node
            for value in node.values():
                yield from keys(value)
        elif isinstance(node, list):
            for item in node:
                yield from keys(item)

    found = set(keys(document["components"]["schemas"]))
    assert not found & {"$id", "$schema", "$defs"}


def test_every_component_is_a_valid_2020_12_schema(document: dict[str, Any]) -> None:
    for name, schema in document["components"]["schemas"].items():
        try:
            Draft202012Validator.check_schema(schema)
        except Exception as exc:  # pragma: no cover - the message names the component
            pytest.fail(f"{name}: {exc}")


def test_building_does_not_touch_the_cached_validation_schemas(document: dict[str, Any]) -> None:
    for name in ("request", "response", "discovery"):
        source = _schema(name)
        assert "$defs" in source and "$id" in source and "$schema" in source
        assert any(r.startswith("#/$defs/") for r in refs(source))


def test_a_foreign_ref_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        _embed({"$ref": "https://example.org/other.json"}, "X")


def test_paths_and_statuses(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert set(paths) == {
        "/cds-services",
        "/cds-services/{id}",
        "/cds-services/{id}/feedback",
        "/metrics",
        "/healthz",
        "/readyz",
        "/openapi.json",
    }
    assert set(paths["/cds-services"]["get"]["responses"]) == {"200", "401"}
    post = paths["/cds-services/{id}"]["post"]
    assert post["parameters"][0]["schema"]["enum"] == [SERVICE_ID]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CdsHooksRequest"
    }
    responses = post["responses"]
    assert set(responses) == {"200", "400", "401", "404", "412", "413", "415"}
    assert responses["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CdsHooksResponse"
    }
    for status in ("400", "401", "404", "412", "413", "415"):
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/OperationOutcome"}, status
    feedback = paths["/cds-services/{id}/feedback"]["post"]
    assert feedback["parameters"][0]["schema"]["enum"] == [SERVICE_ID]
    assert feedback["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CdsHooksFeedback"
    }
    assert set(feedback["responses"]) == {"200", "400", "401", "404", "413", "415", "503"}
    assert "Retry-After" in feedback["responses"]["503"]["headers"]
    assert "WWW-Authenticate" in responses["401"]["headers"]
    assert set(paths["/readyz"]["get"]["responses"]) == {"200", "503"}
    assert document["components"]["securitySchemes"]["cdsClientJwt"] == {
        **document["components"]["securitySchemes"]["cdsClientJwt"],
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    for path, item in paths.items():
        for method, operation in item.items():
            assert method in METHODS, (path, method)
            assert operation["operationId"], (path, method)


def test_filled_in_from_the_package(document: dict[str, Any]) -> None:
    # openapi.yaml leaves the version, the service ids and the CDS Hooks schemas to build_openapi.
    assert document["info"]["version"] == __version__
    own = ["OperationOutcome", "FeedbackReceived", "Health", "Readiness"]
    assert [name for name in document["components"]["schemas"] if name in own] == own
    assert set(COMPONENT_NAMES.values()) <= set(document["components"]["schemas"])


def test_no_service_ids_means_no_enum() -> None:
    post = build_openapi([])["paths"]["/cds-services/{id}"]["post"]
    assert post["parameters"][0]["schema"] == {"type": "string"}


# --- faithful to the JSON Schema files ---------------------------------------------------------

FEEDBACK = {
    "feedback": [
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "overrideReason": {"userComment": "not now"},
            "outcomeTimestamp": "2026-11-24T12:00:00Z",
        }
    ]
}
GOOD_RESPONSE = {
    "cards": [
        {
            "summary": "Low calcium",
            "indicator": "warning",
            "source": {"label": "Lab"},
            "suggestions": [{"label": "Order", "isRecommended": True}],
            "selectionBehavior": "at-most-one",
        }
    ]
}


@pytest.mark.parametrize(
    ("schema", "component", "instance"),
    [
        ("request", "CdsHooksRequest", request_body()),
        ("request", "CdsHooksRequest", request_body(hookInstance="nope")),
        ("request", "CdsHooksRequest", request_body(fhirAuthorization={"access_token": "t"})),
        ("request", "CdsHooksRequest", request_body(prefetch={"p": {"id": "no-type"}})),
        ("request", "CdsHooksRequest", request_body(fhirServer="not a url")),
        ("response", "CdsHooksResponse", GOOD_RESPONSE),
        ("response", "CdsHooksResponse", {"cards": [{**GOOD_RESPONSE["cards"][0], "summary": ""}]}),
        (
            "response",
            "CdsHooksResponse",
            {
                "cards": [
                    {**GOOD_RESPONSE["cards"][0], "suggestions": [{"label": "x", "uuid": "1"}]}
                ]
            },
        ),
        ("response", "CdsHooksResponse", {"cards": [], "systemActions": [{"type": "delete"}]}),
        ("feedback", "CdsHooksFeedback", FEEDBACK),
        ("feedback", "CdsHooksFeedback", {"feedback": []}),
        (
            "feedback",
            "CdsHooksFeedback",
            {"feedback": [{**FEEDBACK["feedback"][0], "outcome": "accepted"}]},
        ),
        ("discovery", "CdsHooksDiscovery", {"services": []}),
        ("discovery", "CdsHooksDiscovery", {"services": [{"id": "a b", "hook": "x"}]}),
        (
            "discovery",
            "CdsHooksDiscovery",
            {"services": [{"id": "a", "hook": "h", "description": "d"}]},
        ),
    ],
)
def test_embedded_schema_judges_like_the_file(
    document: dict[str, Any], schema: str, component: str, instance: Any
) -> None:
    validator = component_validator(document, component)
    assert validator.is_valid(instance) == (validate(instance, schema) == [])


# --- served --------------------------------------------------------------------------------------


def test_served_at_openapi_json(client: FlaskClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = response.get_json()
    # One service id may be served for several hooks; the enum lists each id once.
    ids = sorted({s["id"] for s in client.get("/cds-services").get_json()["services"]})
    assert SERVICE_ID in ids
    assert served == build_openapi(ids)
    assert served["paths"]["/cds-services/{id}"]["post"]["parameters"][0]["schema"]["enum"] == ids
    assert client.get("/openapi.json").get_data() == response.get_data()  # built once, cached


def test_error_bodies_match_the_operation_outcome_component(
    client: FlaskClient, document: dict[str, Any]
) -> None:
    validator = component_validator(document, "OperationOutcome")
    responses = [
        client.post("/cds-services/nope", json=request_body()),
        client.post(f"/cds-services/{SERVICE_ID}", json=request_body(hookInstance="x")),
        client.post(f"/cds-services/{SERVICE_ID}", data="x", content_type="text/plain"),
        client.post(f"/cds-services/{SERVICE_ID}", json=request_body(prefetch={})),
    ]
    assert [r.status_code for r in responses] == [404, 400, 415, 412]
    for response in responses:
        assert list(validator.iter_errors(response.get_json())) == []
    assert not validator.is_valid({"resourceType": "OperationOutcome", "issue": []})


def test_health_bodies_match_their_components(
    client: FlaskClient, document: dict[str, Any]
) -> None:
    assert component_validator(document, "Health").is_valid(client.get("/healthz").get_json())
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert list(component_validator(document, "Readiness").iter_errors(ready.get_json())) == []


def test_a_not_ready_body_matches_its_component(
    tmp_path: Path, knowledge: Knowledge, document: dict[str, Any]
) -> None:
    """A pod that does not migrate at start, on a database without the schema: 503 with a reason."""
    settings = make_settings(tmp_path, migrate_at_start=False)
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    try:
        waiting = app.test_client().get("/readyz")
        assert waiting.status_code == 503
        assert waiting.get_json()["status"] == "not ready" and waiting.get_json()["reason"]
        validator = component_validator(document, "Readiness")
        assert list(validator.iter_errors(waiting.get_json())) == []
    finally:
        app.extensions["cds_runtime"].close()
        release(settings.database_url)


def test_served_without_a_token_when_auth_is_on(tmp_path: Path, knowledge: Knowledge) -> None:
    settings = make_settings(
        tmp_path,
        auth="jwt",
        public_base_url="https://cds.example.org",
        trusted_issuers=ROOT / "deploy" / "trusted-issuers.example.json",
    )
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    try:
        client = app.test_client()
        assert client.get("/cds-services").status_code == 401  # the JWT check is really on
        response = client.get("/openapi.json")
        assert response.status_code == 200
        assert response.get_json()["openapi"] == "3.1.0"
    finally:
        app.extensions["cds_runtime"].close()
        release(settings.database_url)
