"""The service's OpenAPI 3.1 document: openapi.yaml, with the CDS Hooks JSON Schemas embedded."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

import yaml

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


@cache
def _template() -> dict[str, Any]:
    """openapi.yaml as loaded (shared: build_openapi copies it)."""
    text = resources.files(__package__).joinpath("openapi.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


# FHIR R4 OperationOutcome as this service writes it (cds_service.errors.operation_outcome).
OPERATION_OUTCOME: dict[str, Any] = _template()["components"]["schemas"]["OperationOutcome"]


def build_openapi(service_ids: list[str]) -> dict[str, Any]:
    """An OpenAPI 3.1 document for this service, whose POST paths accept exactly `service_ids`."""
    from cds_service import __version__

    document = copy.deepcopy(_template())
    document["info"]["version"] = __version__
    if service_ids:
        for path in ("/cds-services/{id}", "/cds-services/{id}/feedback"):
            parameter = document["paths"][path]["post"]["parameters"][0]
            parameter["schema"]["enum"] = sorted(set(service_ids))
    schemas: dict[str, Any] = {}
    for name, component in COMPONENT_NAMES.items():
        schemas.update(_embed(_schema(name), component))
    document["components"]["schemas"] = {**schemas, **document["components"]["schemas"]}
    return document


@cache
def openapi_json(service_ids: tuple[str, ...]) -> str:
    """The document for `service_ids` serialized once, for GET /openapi.json."""
    return json.dumps(build_openapi(list(service_ids)), ensure_ascii=False)


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
