"""The per-call patient record: what is filed where, and what is dropped."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from cds_service.fhir.record import PatientRecord


def condition(rid: str, subject: Any = None, key: str = "subject") -> dict[str, Any]:
    found: dict[str, Any] = {"resourceType": "Condition", "id": rid}
    if subject is not None:
        found[key] = subject
    return found


def bundle(*resources: dict[str, Any], urls: tuple[str, ...] = ()) -> dict[str, Any]:
    entries = [{"resource": r} for r in resources]
    for entry, url in zip(entries, urls, strict=False):
        entry["fullUrl"] = url
    return {"resourceType": "Bundle", "type": "searchset", "entry": entries}


def test_resources_about_another_patient_are_dropped_and_the_rest_filed() -> None:
    record = PatientRecord.from_resources(
        "pt-1",
        [
            {"resourceType": "Patient", "id": "pt-1", "birthDate": "1950-01-01"},
            bundle(
                condition("mine", {"reference": "Patient/pt-1"}),
                condition("absolute", {"reference": "https://ehr.example.org/fhir/Patient/pt-1"}),
                condition("in-bundle", {"reference": "urn:uuid:1b4e28ba-2fa1-11d2-883f"}),
                condition("no-subject"),
                condition("other", {"reference": "Patient/pt-2"}),
                condition("other-absolute", {"reference": "https://ehr.example.org/Patient/pt-2"}),
                condition("mine", {"reference": "Patient/pt-1"}),  # sent twice: kept once
                {
                    "resourceType": "Observation",
                    "id": "o1",
                    "subject": {"reference": "Patient/pt-1"},
                },
                {"resourceType": "Encounter", "id": "e1"},  # not read by the rules
            ),
            bundle(
                {
                    "resourceType": "MedicationRequest",
                    "id": "m1",
                    "subject": {"reference": "Patient/pt-1"},
                },
                {"resourceType": "Medication", "id": "med-1"},
                urls=("", "https://ehr.example.org/fhir/Medication/med-1"),
            ),
            None,
        ],
    )
    assert record.patient is not None and record.patient["id"] == "pt-1"
    assert [c["id"] for c in record.conditions] == ["mine", "absolute", "in-bundle", "no-subject"]
    assert [o["id"] for o in record.observations] == ["o1"]
    assert [m["id"] for m in record.medication_requests] == ["m1"]
    assert set(record.medications) == {
        "Medication/med-1",
        "https://ehr.example.org/fhir/Medication/med-1",
    }


def test_a_medication_statement_names_its_patient_in_subject_or_patient() -> None:
    record = PatientRecord.from_resources(
        "pt-1",
        [
            bundle(
                {
                    "resourceType": "MedicationStatement",
                    "id": "s1",
                    "subject": {"reference": "Patient/pt-1"},
                },
                condition("c1", {"reference": "Patient/pt-1"}, key="patient"),
                condition("c2", {"reference": "Patient/pt-9"}, key="patient"),
            )
        ],
    )
    assert [m["id"] for m in record.medication_requests] == ["s1"]
    assert [c["id"] for c in record.conditions] == ["c1"]


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1961-11-05", date(1961, 11, 5)),
        ("1961-11", date(1961, 11, 30)),
        ("1961-12", date(1961, 12, 31)),
        ("1960-02", date(1960, 2, 29)),
        ("1961", date(1961, 12, 31)),
        ("1961-13", None),
        ("not a date", None),
    ],
)
def test_a_partial_birth_date_is_read_as_the_last_day_it_may_be(
    birth: str, expected: date | None
) -> None:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": birth}
    assert PatientRecord(patient_id="p", patient=patient).birth_date == expected


def order(rid: str, reference: str, display: str | None = None, **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": reference}
    if display is not None:
        ref["display"] = display
    return {
        "resourceType": "MedicationRequest",
        "id": rid,
        "subject": {"reference": "Patient/pt-1"},
        "medicationReference": ref,
        **extra,
    }


def medication(rid: str) -> dict[str, Any]:
    return {"resourceType": "Medication", "id": rid, "code": {"text": rid}}


def test_only_relative_references_the_record_cannot_resolve_are_to_be_looked_up() -> None:
    record = PatientRecord.from_resources(
        "pt-1",
        [
            bundle(
                order("r1", "Medication/named", display="tizanidine 4 mg"),
                order("r2", "Medication/unnamed"),
                order("r3", "Medication/held"),  # its Medication came in the prefetch
                medication("held"),
                order("r4", "#inline", contained=[medication("inline")]),
                order("r5", "#gone"),  # contained reference with no contained resource
                order("r6", "https://other.example/fhir/Medication/elsewhere"),
                order("r7", "Medication/bad,id"),  # not a FHIR id: never put in a query
                order("r8", "Medication/unnamed", display="shown elsewhere"),
            )
        ],
    )
    draft = order("d1", "Medication/drafted")
    # No display on any order naming it comes first; a display on one of them does not change that.
    assert record.unresolved_medication_ids([draft]) == ["unnamed", "drafted", "named"]


def test_added_medications_resolve_the_orders_that_name_them() -> None:
    record = PatientRecord.from_resources("pt-1", [bundle(order("r1", "Medication/m1"))])
    found = bundle(
        medication("m1"),
        medication("not-asked"),
        {"resourceType": "Patient", "id": "m1"},
    )
    record.add_medications(found, {"m1"})
    assert record.medication_of(record.medication_requests[0]) == medication("m1")
    assert set(record.medications) == {"Medication/m1"}
    assert record.unresolved_medication_ids() == []
    record.add_medications(None, {"m1"})  # nothing found: nothing changes
    assert set(record.medications) == {"Medication/m1"}
