"""Shared readings of the record used by several rules: what counts as current, usable, in a window."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.fhir.data import (
    Resource,
    clinical_time,
    label,
    recorded_time,
    status,
    status_of,
)
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.valuesets import ValueSet
from cds_service.rules.base import HookInput

# FHIR statuses that make a result or diagnosis count (R4 ObservationStatus, condition-ver-status).
USABLE_RESULT = {"final", "amended", "corrected"}
NOT_A_DIAGNOSIS = {"refuted", "entered-in-error"}
ACTIVE_CLINICAL = {"active", "recurrence", "relapse"}
CURRENT_MEDICATION = {"active", "on-hold"}
_UNDATED = datetime.min.replace(tzinfo=UTC)


def condition_counts(condition: Resource) -> bool:
    """A Condition counts unless refuted or entered in error."""
    return not (status_of(condition, "verificationStatus") & NOT_A_DIAGNOSIS)


def condition_is_active(condition: Resource) -> bool:
    """A counting Condition whose clinical status is active (or unstated, which FHIR reads as active)."""
    clinical = status_of(condition, "clinicalStatus")
    return condition_counts(condition) and (not clinical or bool(clinical & ACTIVE_CLINICAL))


def conditions_in(record: PatientRecord, vs: ValueSet, active_only: bool) -> list[Resource]:
    """The patient's Conditions coded in `vs` that count (and are active, if asked)."""
    check = condition_is_active if active_only else condition_counts
    return [c for c in record.conditions if vs.matches(c.get("code")) and check(c)]


def results_in(
    resources: Iterable[Resource], vs: ValueSet, statuses: set[str] = USABLE_RESULT
) -> list[Resource]:
    """Observations or reports coded in `vs` with a usable status, newest first (undated last)."""
    found = [r for r in resources if status(r) in statuses and vs.matches(r.get("code"))]
    return sorted(found, key=lambda r: clinical_time(r) or _UNDATED, reverse=True)


def within(resource: Resource, now: datetime, days: float) -> bool:
    """Whether a result was taken within `days` before `now` (future-dated results do not count)."""
    when = clinical_time(resource)
    return when is not None and now - timedelta(days=days) <= when <= now + timedelta(minutes=5)


def medication_concepts(record: PatientRecord, request: Resource) -> list[Any]:
    """The CodeableConcepts that name a MedicationRequest's medicine (its own, or its Medication's)."""
    concepts: list[Any] = []
    if isinstance(request.get("medicationCodeableConcept"), dict):
        concepts.append(request["medicationCodeableConcept"])
    medication = record.medication_of(request)
    if medication and isinstance(medication.get("code"), dict):
        concepts.append(medication["code"])
    ref = request.get("medicationReference")
    if isinstance(ref, dict) and isinstance(ref.get("display"), str):
        concepts.append({"text": ref["display"]})
    return concepts


def current_medications(record: PatientRecord) -> list[Resource]:
    """MedicationRequests (and MedicationStatements) the patient currently takes."""
    return [m for m in record.medication_requests if status(m) in CURRENT_MEDICATION]


def medications_in(
    record: PatientRecord, vs: ValueSet, requests: Iterable[Resource] | None = None
) -> list[Resource]:
    """Medicines (current ones unless `requests` is given) in `vs` by product or ingredient code or name."""
    pool = current_medications(record) if requests is None else requests
    memo = record.memberships
    found = []
    for request in pool:
        key = (vs.id, id(request))
        if key not in memo:
            memo[key] = vs.matches_medication(medication_concepts(record, request))
        if memo[key]:
            found.append(request)
    return found


def medication_name(record: PatientRecord, request: Resource) -> str:
    """A display name for a medicine."""
    for concept in medication_concepts(record, request):
        name = label(concept)
        if name:
            return name
    return "unnamed medicine"


def reference(resource: Resource) -> str:
    """`Type/id` of a resource (or just its type when it has no id)."""
    rid = resource.get("id")
    return (
        f"{resource.get('resourceType')}/{rid}"
        if isinstance(rid, str)
        else str(resource.get("resourceType"))
    )


def age_years(hook: HookInput) -> int | None:
    """The patient's age in completed years today, if the birth date is known."""
    born = hook.record.birth_date
    if born is None:
        return None
    today = hook.now.date()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return years


def day(when: datetime | None) -> str:
    """A date for card text."""
    return when.date().isoformat() if when else "undated"


def condition_line(condition: Resource) -> str:
    """An evidence line for a Condition."""
    when = recorded_time(condition)
    return f"- {label(condition.get('code')) or 'Condition'} ({day(when)}; {reference(condition)})"
