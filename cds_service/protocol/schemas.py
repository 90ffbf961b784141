"""Validation of CDS Hooks documents against the JSON Schemas shipped in this package."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs

# jsonschema has no py.typed marker and types-jsonschema is not a project dependency, so its
# objects are handled as Any here; "unused-ignore" keeps mypy quiet once the stubs are added.
from jsonschema import (  # type: ignore[import-untyped, unused-ignore]
    Draft202012Validator,
    FormatChecker,
)
from jsonschema.exceptions import best_match  # type: ignore[import-untyped, unused-ignore]

__all__ = ["SCHEMA_NAMES", "SchemaIssue", "context_schema_for", "parse_date_time", "validate"]

SCHEMA_NAMES = (
    "request",
    "context-patient-view",
    "context-order-select",
    "context-order-sign",
    "response",
    "discovery",
    "feedback",
)

_CONTEXT_SCHEMAS = {
    "patient-view": "context-patient-view",
    "order-select": "context-order-select",
    "order-sign": "context-order-sign",
}

_VALUE_LIMIT = 80  # characters of an offending value quoted in a message
_MESSAGE_LIMIT = 300  # characters of a whole message


@dataclass(frozen=True)
class SchemaIssue:
    """One problem found in a document."""

    path: str  # a JSONPath to the offending element, e.g. "$.context.patientId"
    message: str  # human-readable; quoted values are JSON, truncated


def validate(document: object, schema: str) -> list[SchemaIssue]:
    """All problems of document against the named schema, sorted by path; [] when valid."""
    # Every hook call is validated, so the common case (valid) is answered by the compiled
    # validator (jsonschema-rs, ~1 µs against ~140 µs here); the Python validator, with our own
    # messages and paths, runs only for documents that may have problems, and it has the last word.
    if _fast_validator(schema).is_valid(document):
        return []
    validator = _validator(schema)
    found: dict[tuple[tuple[tuple[int, int, str], ...], str], SchemaIssue] = {}
    try:
        for error in validator.iter_errors(document):
            best = best_match([error]) or error
            location = list(best.absolute_path)
            issue = SchemaIssue(path=_json_path(location), message=_message(best))
            found.setdefault((_sort_key(location), issue.message), issue)
    except RecursionError:
        # JSON nested about a thousand levels deep (the parser's limit): junk or an attack.
        return [SchemaIssue(path="$", message="the document is nested too deeply to be checked")]
    return [found[key] for key in sorted(found)]


def context_schema_for(hook: str) -> str | None:
    """The context schema name for a supported hook, or None."""
    return _CONTEXT_SCHEMAS.get(hook)


# --- loading ----------------------------------------------------------------------------------


@cache
def _schema(name: str) -> dict[str, Any]:
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown schema {name!r}; expected one of {', '.join(SCHEMA_NAMES)}")
    source = resources.files(__name__.rpartition(".")[0]) / "schemas" / f"{name}.schema.json"
    loaded = json.loads(source.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise ValueError(f"schema {name!r} is not a JSON object")
    return loaded


@cache
def _validator(name: str) -> Any:
    schema = _schema(name)
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=_format_checker())


@cache
def _fast_validator(name: str) -> jsonschema_rs.Validator:
    # The same format functions as the Python validator, so "valid" means the same to both.
    return jsonschema_rs.validator_for(
        _schema(name),
        formats=_FORMATS,
        validate_formats=True,
        ignore_unknown_formats=False,
    )


# --- formats ----------------------------------------------------------------------------------
# jsonschema checks "uri" and "date-time" only when the optional rfc3987 / rfc3339-validator
# packages are installed, so all three formats the schemas use are implemented here.

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
# RFC 3339's DIGIT is 0-9 (\d would also take other scripts' digits, e.g. "٣").
_DATE_TIME = re.compile(
    r"^([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}):([0-9]{2})(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
_URI_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f<>\"{}|\\^`]")


def _is_uuid(instance: object) -> bool:
    """A UUID in the canonical 8-4-4-4-12 hex form (no braces, no urn:uuid: prefix)."""
    # 32 hex digits in the 8-4-4-4-12 form are always a UUID: the pattern is the whole check.
    return not isinstance(instance, str) or _UUID.fullmatch(instance) is not None


def _is_uri(instance: object) -> bool:
    """An absolute URL: a scheme and an authority, no spaces or characters RFC 3986 forbids."""
    if not isinstance(instance, str):
        return True
    if _URI_FORBIDDEN.search(instance):
        return False
    try:
        parts = urlsplit(instance)
        _ = parts.port  # raises ValueError for a non-numeric or out-of-range port
    except ValueError:
        return False
    return bool(parts.scheme) and bool(parts.netloc) and bool(parts.hostname)


def _is_date_time(instance: object) -> bool:
    """An RFC 3339 §5.6 date-time, with a time-zone offset (Z or ±hh:mm)."""
    return not isinstance(instance, str) or parse_date_time(instance) is not None


def parse_date_time(text: str) -> datetime | None:
    """An RFC 3339 §5.6 date-time (offset Z or ±hh:mm; "t" and "z" may be lowercase) as an aware
    datetime, a leap second (":60") read as the last microsecond of its minute; None if not one."""
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        return None
    day, hour_minute, second, fraction, offset = match.groups()
    fraction = (fraction or "")[:7]  # datetime takes at most microseconds
    if second == "60":  # a leap second, which datetime cannot represent
        second, fraction = "59", ".999999"
    if offset in ("Z", "z"):
        offset = "+00:00"
    elif int(offset[-2:]) > 59:  # fromisoformat reads "+12:60" as 13 hours
        return None
    try:
        return datetime.fromisoformat(f"{day}T{hour_minute}:{second}{fraction}{offset}")
    except ValueError:
        return None


_FORMATS = {"uuid": _is_uuid, "uri": _is_uri, "date-time": _is_date_time}


@cache
def _format_checker() -> Any:
    checker = FormatChecker(formats=())
    for name, check in _FORMATS.items():
        checker.checks(name)(check)
    return checker


# --- reporting --------------------------------------------------------------------------------

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _json_path(location: Sequence[object]) -> str:
    parts = ["$"]
    for step in location:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        elif isinstance(step, str) and _IDENTIFIER.match(step):
            parts.append(f".{step}")
        else:
            escaped = str(step).replace("\\", "\\\\").replace("'", "\\'")
            parts.append(f"['{escaped}']")
    return "".join(parts)


def _sort_key(location: Iterable[object]) -> tuple[tuple[int, int, str], ...]:
    """Orders paths element by element, array indices numerically."""
    return tuple((0, step, "") if isinstance(step, int) else (1, 0, str(step)) for step in location)


def _render(value: object, limit: int = _VALUE_LIMIT) -> str:
    """A value as JSON, cut to about limit characters."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip(text: str) -> str:
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _message(error: Any) -> str:
    """A message for one jsonschema error that quotes the instance as truncated JSON."""
    keyword = error.validator
    expected = error.validator_value
    instance = error.instance
    shown = _render(instance)
    location = list(error.absolute_path)
    name = location[-1] if location else None
    text: str
    if keyword in ("anyOf", "oneOf") and error.context:
        options: list[str] = []
        for sub in error.context:
            option = _message(sub)
            if option not in options:
                options.append(option)
        text = f"{shown} matches none of the allowed forms: " + "; ".join(options)
    elif keyword == "type":
        kinds = expected if isinstance(expected, list) else [expected]
        text = f"{shown} is not of type {' or '.join(repr(kind) for kind in kinds)}"
    elif keyword == "enum":
        text = f"{shown} is not one of {_render(expected, limit=200)}"
    elif keyword == "const":
        text = f"{shown} must be {_render(expected)}"
    elif keyword == "minLength" and instance == "":
        text = "must not be an empty string"
    elif keyword == "minLength":
        text = f"{shown} is shorter than {_plural(expected, 'character')}"
    elif keyword == "maxLength":
        length = len(instance) if isinstance(instance, str) else 0
        text = f"{shown} has {length} characters; at most {expected} are allowed"
    elif keyword == "pattern":
        text = f"{shown} does not match {expected}"
    elif keyword == "format":
        text = f"{shown} is not a valid {expected}"
    elif keyword == "minItems" and instance == []:
        text = "must not be an empty array"
    elif keyword == "minItems":
        text = f"array has fewer than {_plural(expected, 'item')}"
    elif keyword == "maxItems":
        text = f"array has more than {_plural(expected, 'item')}"
    elif keyword == "minProperties" and instance == {}:
        text = "must not be an empty object"
    elif keyword == "minProperties":
        text = f"object has fewer than {_plural(expected, 'member')}"
    elif keyword == "minimum":
        text = f"{shown} is less than {expected}"
    elif keyword == "maxContains":
        contains = error.schema.get("contains")
        what = contains.get("description") if isinstance(contains, dict) else None
        what = what if isinstance(what, str) else f"match {_render(contains, limit=120)}"
        text = f"at most {_plural(expected, 'item')} may {what}"
    elif keyword == "not" and expected == {} and name is not None:
        # {"not": {}} marks a member that is forbidden here; its description says why.
        why = error.schema.get("description")
        text = f"{_render(name)} is not allowed here" + (f": {why}" if isinstance(why, str) else "")
    else:
        text = str(error.message)
    return _clip(text)
