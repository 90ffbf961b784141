"""Shared readings of the record used by several rules: what counts as current, usable, in a window."""

from __future__ import annotations

from collections.abc import Callable, Iterable
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
from cds_service.knowledge.valuesets import CodeIndex, Medicine, ValueSet
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


def any_coded_in(
    record: PatientRecord,
    resources: list[Resource],
    vs: ValueSet,
    accept: Callable[[Resource], bool],
) -> bool:
    """Whether a resource of one of the record's lists is coded in `vs` and accepted."""
    index = _index_of(record, resources, vs)
    if index is not None:
        return any(accept(r) for r in index.coded_in(vs))
    # A one-off question (order review asks it once per call) reads the list until the first
    # match rather than indexing all of it.
    return any(vs.matches(r.get("code")) and accept(r) for r in resources)


def coded_in(record: PatientRecord, resources: list[Resource], vs: ValueSet) -> list[Resource]:
    """The resources of one of the record's lists whose `code` is in `vs`, in list order."""
    # Indexed once per call: rules look up a dozen value sets in the same lists. The record is
    # not changed once built, so the index stays true for the call.
    index = _index_of(record, resources, vs)
    if index is None:
        index = record.indexes[id(resources)] = CodeIndex(resources, vs.systems)
    return index.coded_in(vs)


def _index_of(record: PatientRecord, resources: list[Resource], vs: ValueSet) -> CodeIndex | None:
    """The call's index of `resources`, if one was built (for `vs`'s code systems)."""
    index = record.indexes.get(id(resources))
    if index is None or index.resources is not resources or index.systems is not vs.systems:
        return None
    return index


def conditions_in(record: PatientRecord, vs: ValueSet, active_only: bool) -> list[Resource]:
    """The patient's Conditions coded in `vs` that count (and are active, if asked)."""
    check = condition_is_active if active_only else condition_counts
    return [c for c in coded_in(record, record.conditions, vs) if check(c)]


def results_in(
    record: PatientRecord, vs: ValueSet, statuses: set[str] = USABLE_RESULT
) -> list[Resource]:
    """Observations coded in `vs` with a usable status, newest first (undated last)."""
    return _newest_first(coded_in(record, record.observations, vs), statuses)


def reports_in(
    record: PatientRecord, vs: ValueSet, statuses: set[str] = USABLE_RESULT
) -> list[Resource]:
    """DiagnosticReports coded in `vs` with a usable status, newest first (undated last)."""
    return _newest_first(coded_in(record, record.diagnostic_reports, vs), statuses)


def _newest_first(resources: list[Resource], statuses: set[str]) -> list[Resource]:
    found = [r for r in resources if status(r) in statuses]
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
    vs_id = vs.id
    memo = record.medicines
    found = []
    for request in pool:
        # medicine_of, with its per-call memo read inline: this loop runs hundreds of times a call.
        known = memo.get(id(request))
        medicine = known[1] if known and known[0] is request else medicine_of(record, request)
        if vs_id in medicine.in_sets:
            found.append(request)
    return found


def medicine_of(record: PatientRecord, request: Resource) -> Medicine:
    """A medicine's keys, texts and value sets, looked up once per call (in the knowledge's catalog)."""
    known = record.medicines.get(id(request))
    if known is not None and known[0] is request:
        return known[1]
    if record.catalog is None:
        raise RuntimeError("the record was not given the knowledge's medicine catalog (HookInput)")
    medicine = record.catalog.medicine(medication_concepts(record, request))
    record.medicines[id(request)] = (request, medicine)
    return medicine


def medication_name(record: PatientRecord, request: Resource) -> str:
    """A display name for a medicine (worked out with the rest of its catalog entry)."""
    return medicine_of(record, request).name


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
    # Asked by several rules (and once per order on order review): worked out once per call.
    answers = hook.record.answers
    key = ("age", hook.now)
    if key not in answers:
        born = hook.record.birth_date
        today = hook.now.date()
        answers[key] = (
            None
            if born is None
            else today.year - born.year - ((today.month, today.day) < (born.month, born.day))
        )
    age: int | None = answers[key]
    return age


def day(when: datetime | None) -> str:
    """A date for card text."""
    return when.date().isoformat() if when else "undated"


def condition_line(condition: Resource) -> str:
    """An evidence line for a Condition."""
    when = recorded_time(condition)
    return f"- {label(condition.get('code')) or 'Condition'} ({day(when)}; {reference(condition)})"
