"""The per-call Evaluation: what the rules read from the record, worked out from plain data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.rules.evaluation import Evaluation

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


def evaluation(knowledge: Knowledge, **lists: Any) -> Evaluation:
    record = PatientRecord(patient_id="p", **lists)
    return Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)


def test_results_are_usable_ones_newest_first(knowledge: Knowledge) -> None:
    calcium = {"system": LOINC, "code": "17861-6"}
    ev = evaluation(
        knowledge,
        observations=[
            {"resourceType": "Observation", "status": s, "code": {"coding": [calcium]}, "issued": d}
            for s, d in [
                ("final", "2025-01-01"),
                ("preliminary", "2025-03-01"),
                ("amended", "2025-02-01"),
                ("final", None),
            ]
        ],
    )
    assert [o["issued"] for o in ev.results("calcium-any")] == ["2025-02-01", "2025-01-01", None]
    assert ev.results("egfr") == []


def test_conditions_count_unless_refuted_and_active_only_when_asked(knowledge: Knowledge) -> None:
    def condition(clinical: str, verification: str) -> dict[str, Any]:
        return {
            "resourceType": "Condition",
            "code": {"coding": [{"system": ICD, "code": "R252"}]},
            "clinicalStatus": {"coding": [{"system": "x", "code": clinical}]},
            "verificationStatus": {"coding": [{"system": "x", "code": verification}]},
        }

    active, resolved, refuted = (
        condition("active", "confirmed"),
        condition("resolved", "confirmed"),
        condition("active", "refuted"),
    )
    ev = evaluation(knowledge, conditions=[active, resolved, refuted])
    assert ev.conditions("leg-cramps", active_only=True) == [active]
    assert ev.conditions("leg-cramps", active_only=False) == [active, resolved]


def test_current_medicines_are_matched_by_code_or_name(knowledge: Knowledge) -> None:
    requests: list[dict[str, Any]] = [
        {"status": "active", "medicationCodeableConcept": {"text": "Lioresal 10 MG"}},
        {
            "status": "on-hold",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}]},
        },
        {"status": "stopped", "medicationCodeableConcept": {"text": "baclofen"}},
        {"status": "active", "medicationCodeableConcept": {"text": "tizanidine"}},
    ]
    ev = evaluation(knowledge, medication_requests=requests)
    assert [m.request for m in ev.medicines("baclofen")] == requests[:2]
    assert [m.request for m in ev.medicines("muscle-relaxants")] == [*requests[:2], requests[3]]
    assert ev.medicines("baclofen", among=[ev.medicine(requests[2])])[0].request is requests[2]


def test_a_medicine_is_named_by_its_text_else_a_display_else_a_code(knowledge: Knowledge) -> None:
    coding = {"system": RXNORM, "code": "1292", "display": "Baclofen"}
    requests: list[dict[str, Any]] = [
        {"medicationCodeableConcept": {"text": "Baclofen 10 MG Oral Tablet", "coding": [coding]}},
        {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}, coding]}},
        {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}]}},
        {"medicationReference": {"reference": "Medication/m1", "display": "Lioresal"}},
        {
            "medicationReference": {"reference": "#c1"},
            "contained": [
                {"resourceType": "Medication", "id": "c1", "code": {"text": "Ozobax solution"}}
            ],
        },
        {"medicationReference": {"reference": "Medication/unknown"}},
    ]
    ev = evaluation(knowledge, medication_requests=requests)
    assert [ev.medicine(r).name for r in requests] == [
        "Baclofen 10 MG Oral Tablet",
        "Baclofen",
        "1292",
        "Lioresal",
        "Ozobax solution",
        "unnamed medicine",
    ]
    assert all(ev.is_in(ev.medicine(r), "baclofen") for r in requests[:5])


def test_age_is_in_completed_years_on_the_day_of_the_call(knowledge: Knowledge) -> None:
    def age(born: str) -> int | None:
        patient = {"resourceType": "Patient", "birthDate": born}
        return evaluation(knowledge, patient=patient).age

    assert age("1961-11-25") == 65
    assert age("1961-11-26") == 64
    assert age("not a date") is None
    assert evaluation(knowledge).age is None
