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
