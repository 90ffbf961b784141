"""The service's OpenAPI 3.1 document, built from the CDS Hooks JSON Schemas shipped in this package."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from cds_service.protocol.schemas import _schema

__all__ = ["COMPONENT_NAMES", "OPERATION_OUTCOME", "build_openapi", "openapi_json"]

# Each JSON Schema file embedded in the document, under its component name. Its $defs become sibling
# components named "<component>_<def>", so every $ref points at a top-level component (which every
# OpenAPI tool resolves) and the defs of different files cannot collide.
COMPONENT_NAMES = {
    "request": "CdsHooksRequest",
    "response": "CdsHooksResponse",
    "discovery": "CdsHooksDiscovery",
    "feedback": "CdsHooksFeedback",
}

_COMPONENTS = "#/components/schemas/"
_LOCAL_DEFS = "#/$defs/"
_JSON = "application/json"

# The JSON Schemas of the service's own bodies (OperationOutcome, FeedbackReceived, Health,
# Readiness), shipped beside this module, each under its component name.
_OWN_SCHEMAS: dict[str, Any] = json.loads(
    resources.files(__package__).joinpath("openapi-schemas.json").read_text(encoding="utf-8")
)
# FHIR R4 OperationOutcome as this service writes it (cds_service.errors.operation_outcome).
OPERATION_OUTCOME: dict[str, Any] = _OWN_SCHEMAS["OperationOutcome"]

_ERRORS = {
    400: "The body is not valid JSON or breaks the CDS Hooks rules for this endpoint (one issue each).",
    401: "The CDS client JWT is missing or invalid (only when CDS_AUTH=jwt).",
    404: "No CDS service has this id.",
    412: "Required prefetch data was neither sent nor obtainable from fhirServer.",
    413: "The body is larger than CDS_MAX_BODY_BYTES.",
    415: "The body is not declared as JSON (Content-Type: application/json).",
    503: "The database cannot take the feedback now; nothing was kept: send it again after Retry-After.",
}
_CALL_ERRORS = (400, 401, 404, 412, 413, 415)
_FEEDBACK_ERRORS = (400, 401, 404, 413, 415, 503)


def build_openapi(service_ids: list[str]) -> dict[str, Any]:
    """An OpenAPI 3.1 document for this service, whose POST path accepts exactly `service_ids`."""
    from cds_service import __version__

    schemas: dict[str, Any] = {}
    for name, component in COMPONENT_NAMES.items():
        schemas.update(_embed(_schema(name), component))
    schemas.update(copy.deepcopy(_OWN_SCHEMAS))

    id_schema: dict[str, Any] = {"type": "string"}
    if service_ids:
        id_schema["enum"] = sorted(set(service_ids))
    secured: list[dict[str, list[str]]] = [{"cdsClientJwt": []}]
    id_parameter = {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "The service id from discovery.",
        "schema": id_schema,
    }

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "CDS Hooks service: leg muscle cramps after cerebral infarction",
            "version": __version__,
            "description": "CDS Hooks 2.0 discovery, service and feedback endpoints, plus health "
            "checks and metrics. Request and response bodies are the JSON Schemas the service itself "
            "validates with. Every error is a FHIR OperationOutcome.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "paths": {
            "/cds-services": {
                "get": {
                    "operationId": "discovery",
                    "summary": "CDS Hooks discovery: the services with their hooks and prefetch templates",
                    "security": secured,
                    "responses": {
                        "200": _json_response("The services.", _ref("CdsHooksDiscovery")),
                        "401": _error_response(401),
                    },
                }
            },
            "/cds-services/{id}": {
                "post": {
                    "operationId": "callService",
                    "summary": "Call a CDS service with a hook request",
                    "security": secured,
                    "parameters": [id_parameter],
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("CdsHooksRequest")}},
                    },
                    "responses": {
                        "200": _json_response("The cards.", _ref("CdsHooksResponse")),
                        **{str(status): _error_response(status) for status in _CALL_ERRORS},
                    },
                }
            },
            "/cds-services/{id}/feedback": {
                "post": {
                    "operationId": "feedback",
                    "summary": "Feedback on cards the service returned: accepted or overridden",
                    "security": secured,
                    "parameters": [copy.deepcopy(id_parameter)],
                    "requestBody": {
                        "required": True,
                        "content": {_JSON: {"schema": _ref("CdsHooksFeedback")}},
                    },
                    "responses": {
                        "200": _json_response("Stored.", _ref("FeedbackReceived")),
                        **{str(status): _error_response(status) for status in _FEEDBACK_ERRORS},
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "Liveness: the process answers",
                    "responses": {"200": _json_response("Alive.", _ref("Health"))},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Readiness: knowledge loaded; the database's state reported",
                    "responses": {"200": _json_response("Ready.", _ref("Readiness"))},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics (no patient data in any label)",
                    "responses": {
                        "200": {
                            "description": "The Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json_response("OpenAPI 3.1.", {"type": "object"})},
                }
            },
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "cdsClientJwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "CDS Hooks 2.0 §Trusting CDS Clients: a JWT signed by a trusted "
                    "CDS client, audience the called URL. Not checked when CDS_AUTH=off (development).",
                }
            },
        },
    }


@cache
def openapi_json(service_ids: tuple[str, ...]) -> str:
    """The document for `service_ids` serialized once, for GET /openapi.json."""
    return json.dumps(build_openapi(list(service_ids)), ensure_ascii=False)


def _ref(component: str) -> dict[str, str]:
    return {"$ref": _COMPONENTS + component}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _error_response(status: int) -> dict[str, Any]:
    response = _json_response(_ERRORS[status], _ref("OperationOutcome"))
    header = _ERROR_HEADERS.get(status)
    if header:
        name, description = header
        response["headers"] = {
            name: {"description": description, "required": True, "schema": {"type": "string"}}
        }
    return response


_ERROR_HEADERS = {
    401: ("WWW-Authenticate", "The bearer challenge."),
    503: ("Retry-After", "Seconds to wait before sending again."),
}


def _embed(source: dict[str, Any], component: str) -> dict[str, Any]:
    """`source` and each of its $defs as components, with `#/$defs/X` refs rewritten to them."""
    # A shallow copy: the loaded schema is cached and shared with the validators.
    schema = dict(source)
    defs = schema.pop("$defs", {})
    names = {f"{_LOCAL_DEFS}{name}": f"{_COMPONENTS}{component}_{name}" for name in defs}
    embedded = {component: _rewrite(schema, names)}
    for name, definition in defs.items():
        embedded[f"{component}_{name}"] = _rewrite(definition, names)
    return embedded


def _rewrite(node: Any, names: dict[str, str]) -> Any:
    """A copy of `node` without $id and $schema, each $ref mapped through `names` (others: error)."""
    if isinstance(node, list):
        return [_rewrite(item, names) for item in node]
    if not isinstance(node, dict):
        return node
    rewritten: dict[str, Any] = {}
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str):
            if value not in names:
                raise ValueError(f"unsupported $ref {value!r}: only refs to the file's own $defs")
            rewritten[key] = names[value]
        elif key in ("$id", "$schema") and isinstance(value, str):
            continue
        else:
            rewritten[key] = _rewrite(value, names)
    return rewritten
