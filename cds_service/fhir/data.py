"""Plain-dict accessors for the parts of FHIR R4 resources the rules read.

The service reads prefetched JSON as dicts and touches only the elements its rules use, so a
2,000-resource history costs a JSON parse rather than a full model validation per resource. Every
accessor tolerates missing or mistyped elements (returning None or an empty result), because data
from EHRs is imperfect and a malformed element must never turn into a server error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

Resource = dict[str, Any]

# FHIR's date and dateTime forms, digits 0-9 only (\d would take other scripts' digits, and
# fromisoformat alone would read forms FHIR does not allow: "2026-W47-5", "20261120").
_PARTIAL_DATE = re.compile(r"([0-9]{4})(?:-([0-9]{2}))?(?:-([0-9]{2}))?")
_DATE_TIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)


def items(value: Any) -> list[Any]:
    """A FHIR repeating element as a list; anything that is not a list (junk) is no items."""
    return value if isinstance(value, list) else []


def status(resource: Resource) -> str | None:
    """A resource's `status` code, or None when absent or not a string."""
    value = resource.get("status")
    return value if isinstance(value, str) else None


FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def valid_id(value: Any) -> bool:
    """Whether `value` is a FHIR id (what a `Type/id` reference in a suggestion may carry)."""
    return isinstance(value, str) and FHIR_ID.match(value) is not None


class Code(NamedTuple):
    """A coding reduced to what matching needs."""

    system: str
    code: str
    display: str | None = None


def codings(concept: Any) -> list[Code]:
    """The codings of a CodeableConcept (or a list of them) whose system and code are strings."""
    found = []
    for item in concept if isinstance(concept, list) else [concept]:
        for coding in items(item.get("coding")) if isinstance(item, dict) else []:
            if not isinstance(coding, dict):
                continue
            system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
            if isinstance(system, str) and isinstance(code, str):
                found.append(
                    Code(system, code.strip(), display if isinstance(display, str) else None)
                )
    return found


def texts(concept: Any) -> list[str]:
    """The human-readable strings of a CodeableConcept (or a list of them): text, then displays."""
    found: list[str] = []
    for item in concept if isinstance(concept, list) else [concept]:
        if isinstance(item, dict) and isinstance(item.get("text"), str):
            found.append(item["text"])
        found.extend(c.display for c in codings(item) if c.display)
    return found


def label(concept: Any) -> str | None:
    """The best single display name of a CodeableConcept."""
    if isinstance(concept, dict) and isinstance(concept.get("text"), str) and concept["text"]:
        return str(concept["text"])
    found = codings(concept)
    return next((c.display for c in found if c.display), found[0].code if found else None)


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (partial dates start at their first day)."""
    if not isinstance(value, str) or not value:
        return None
    partial = _PARTIAL_DATE.fullmatch(value)
    try:
        if partial:
            year, month, day = partial.groups()
            return datetime(int(year), int(month or 1), int(day or 1), tzinfo=UTC)
        if not _DATE_TIME.fullmatch(value):
            return None
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_date(value: Any) -> date | None:
    """A FHIR date as a date."""
    parsed = parse_datetime(value)
    return parsed.date() if parsed else None


def last_possible_date(value: Any) -> date | None:
    """The last day a FHIR date may stand for: a partial date ("1961", "1961-11") ends with its
    year or month, a full date is itself."""
    partial = _PARTIAL_DATE.fullmatch(value) if isinstance(value, str) else None
    if partial is None:
        return parse_date(value)
    year, month, day = partial.groups()
    try:
        if day:
            return date(int(year), int(month), int(day))
        if month:
            date(int(year), int(month), 1)  # month 13 is no month
            following = date(int(year) + int(month) // 12, int(month) % 12 + 1, 1)
            return following - timedelta(days=1)
        return date(int(year), 12, 31)
    except ValueError:
        return None


def clinical_time(resource: Resource) -> datetime | None:
    """When an Observation, DiagnosticReport or Procedure happened (effective/performed, else issued)."""
    for key in ("effectiveDateTime", "effectiveInstant", "performedDateTime", "issued"):
        found = parse_datetime(resource.get(key))
        if found:
            return found
    for key in ("effectivePeriod", "performedPeriod"):
        period = resource.get(key)
        if isinstance(period, dict):
            found = parse_datetime(period.get("end")) or parse_datetime(period.get("start"))
            if found:
                return found
    return None


def recorded_time(resource: Resource) -> datetime | None:
    """When a Condition began or was recorded."""
    for key in ("onsetDateTime", "recordedDate", "authoredOn"):
        found = parse_datetime(resource.get(key))
        if found:
            return found
    period = resource.get("onsetPeriod")
    if isinstance(period, dict):
        return parse_datetime(period.get("start"))
    return None


@dataclass(frozen=True)
class Quantity:
    """A numeric value with its UCUM code (if coded) and its unit text."""

    value: float
    code: str | None
    unit: str | None
    system: str | None = None
    comparator: str | None = None


def quantity(value: Any) -> Quantity | None:
    """A FHIR Quantity as a Quantity, or None when it carries no number."""
    if not isinstance(value, dict):
        return None
    number = value.get("value")
    if not isinstance(number, int | float) or isinstance(number, bool):
        return None
    code = value.get("code")
    unit = value.get("unit")
    system = value.get("system")
    comparator = value.get("comparator")
    try:
        magnitude = float(number)
    except OverflowError:  # an integer beyond any float is not a lab value
        return None
    return Quantity(
        magnitude,
        code if isinstance(code, str) else None,
        unit if isinstance(unit, str) else None,
        system if isinstance(system, str) else None,
        comparator if isinstance(comparator, str) else None,
    )


_NUMBER_AS_TEXT = re.compile(r"\s*(<=|>=|<|>)?\s*([0-9]+(?:\.[0-9]+)?)\s*")


def reported_quantity(observation: Resource) -> Quantity | None:
    """An Observation's valueQuantity, else a valueString that holds only a number with an
    optional comparator (labs send "<15" or ">60" as text), without a unit."""
    found = quantity(observation.get("valueQuantity"))
    text = observation.get("valueString")
    if found is not None or not isinstance(text, str):
        return found
    match = _NUMBER_AS_TEXT.fullmatch(text)
    if match is None:
        return None
    return Quantity(float(match.group(2)), None, None, None, match.group(1))


def status_of(resource: Resource, element: str) -> set[str]:
    """The codes of a status CodeableConcept (Condition.clinicalStatus, verificationStatus)."""
    return {c.code for c in codings(resource.get(element))}


def reference_id(reference: Any, resource_type: str) -> str | None:
    """The id in a `Type/id` (or absolute) reference to `resource_type`."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    ref = reference["reference"]
    marker = f"{resource_type}/"
    if marker not in ref:
        return None
    tail = ref.rsplit(marker, 1)[1]
    return tail.split("/", 1)[0] or None


def iter_bundle(bundle: Resource) -> Iterator[tuple[str | None, Resource]]:
    """(fullUrl, resource) for each entry of a Bundle that holds a resource."""
    entries = bundle.get("entry")
    if not isinstance(entries, list):
        return
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        resource = entry.get("resource")
        if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
            full_url = entry.get("fullUrl")
            yield (full_url if isinstance(full_url, str) else None, resource)


def age_on(birth_date: date, day: date) -> int:
    """Completed years of age on `day`."""
    years = day.year - birth_date.year
    if (day.month, day.day) < (birth_date.month, birth_date.day):
        years -= 1
    return years
