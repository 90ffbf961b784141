"""Who is in scope: infarctions (a generic stroke code against a same-event hemorrhage), cramps
coded or written, and no cards for a deceased patient."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.rules import RULES
from cds_service.rules.common import infarctions
from cds_service.rules.evaluation import Evaluation
from cds_service.rules.patient_view import cramps_documented
from tests.conftest import NOW

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"


def condition(cid: str, system: str, code: str, onset: str, **more: Any) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    return {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [coding]},
        "onsetDateTime": onset,
        **more,
    }


def evaluation(
    knowledge: Knowledge, patient: dict[str, Any] | None = None, **lists: Any
) -> Evaluation:
    record = PatientRecord("p", {"resourceType": "Patient", "id": "p", **(patient or {})}, **lists)
    return Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)


@pytest.mark.parametrize(
    ("hemorrhage_onset", "counts"),
    [("2026-01-14", True), ("2026-01-15", False), ("2026-03-16", False), ("2026-03-17", True)],
)
def test_a_generic_stroke_code_gives_way_to_a_hemorrhage_within_the_window(
    knowledge: Knowledge, hemorrhage_onset: str, counts: bool
) -> None:
    generic = condition("g", SCT, "230690007", "2026-02-14")
    bleed = condition("h", ICD, "I61.9", hemorrhage_onset)
    ev = evaluation(knowledge, conditions=[generic, bleed])
    assert bool(infarctions(ev)) is counts


def test_the_same_encounter_makes_the_same_event_and_an_infarction_code_always_counts(
    knowledge: Knowledge,
) -> None:
    visit = {"encounter": {"reference": "Encounter/e-1"}}
    generic = condition("g", SCT, "230690007", "2026-02-14", **visit)
    bleed = condition("h", ICD, "I61.9", "2025-01-01", **visit)
    infarct = condition("i", ICD, "I63.9", "2026-02-14")
    assert infarctions(evaluation(knowledge, conditions=[generic, bleed])) == []
    assert infarctions(evaluation(knowledge, conditions=[generic, bleed, infarct])) == [infarct]


@pytest.mark.parametrize(
    ("text", "documented"),
    [
        ("Nocturnal leg cramps", True),
        ("Charley horse, left calf", True),
        ("Charley horses at night in both calves", True),
        ("Recurrent charley-horses", True),
        ("No charley horses since starting stretches", False),
        ("No leg cramps", False),
        ("Leg cramps: none", False),
        ("Knee pain", False),
        # Word forms and word order (issue 18: "calf cramping" was not recognised).
        ("calf cramping", True),
        ("Nocturnal leg cramping", True),
        ("Cramping of right calf", True),
        ("Legs cramped at night", True),
        ("Cramps in both calves", True),
        ("Spasm of the left calf", True),
        ("Night-time muscle cramps", True),
        ("No calf cramping", False),
        ("Denies cramping in the legs", False),
        ("History of leg cramps", False),
        # A cramp word alone, or with no leg word near it, is not a leg cramp.
        ("Abdominal cramps", False),
        ("Menstrual cramping", False),
        ("Cramping abdominal pain after meals, leg swelling", False),
        # Issue 18 H2: a negation about something else after the cramps does not negate them;
        # a finding's course ("not relieved", "no improvement") is a pseudo-negation.
        ("Leg cramps not relieved by stretching", True),
        ("Leg cramps, no relief with stretching", True),
        ("Leg cramps not responding to stretching", True),
        ("Leg cramps - no DVT on ultrasound", True),
        ("No improvement in leg cramps", True),
        ("Leg cramps; not on quinine", True),
        ("Leg cramps (no longer on simvastatin)", True),
        ("Leg cramps not improved with magnesium", True),
        ("Leg cramps, no response to quinine", True),
        ("Leg cramps not resolved", True),
        # ... while the cramps' own negation still holds.
        ("Denies leg cramps", False),
        ("no cramping in the legs", False),
        ("Leg cramps resolved", False),
        ("Leg cramps: none", False),
        ("Leg cramps - none", False),
        ("Leg cramps: no longer", False),
        ("Leg cramps no longer present", False),
        ("Leg cramps negative", False),
        ("Leg cramps (-)", False),
        ("No leg cramps; not on quinine", False),
    ],
)
def test_cramps_written_with_a_local_code_count_unless_negated(
    knowledge: Knowledge, text: str, documented: bool
) -> None:
    local = {"coding": [{"system": "urn:oid:1.2.3", "code": "L-1"}], "text": text}
    cramps = {"resourceType": "Condition", "id": "c", "code": local}
    assert cramps_documented(evaluation(knowledge, conditions=[cramps])) is documented


def test_a_refuted_written_cramp_does_not_count(knowledge: Knowledge) -> None:
    refuted = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "refuted",
            }
        ]
    }
    local = {"coding": [{"system": "urn:oid:1.2.3", "code": "L-1"}], "text": "Leg cramps"}
    cramps = {"resourceType": "Condition", "id": "c", "code": local, "verificationStatus": refuted}
    assert not cramps_documented(evaluation(knowledge, conditions=[cramps]))


@pytest.mark.parametrize(
    ("patient", "deceased"),
    [
        ({"deceasedBoolean": True}, True),
        ({"deceasedDateTime": "2026-11-20"}, True),
        ({"deceasedBoolean": False}, False),
        ({}, False),
    ],
)
def test_every_rule_set_is_silent_for_a_deceased_patient(
    knowledge: Knowledge, patient: dict[str, Any], deceased: bool
) -> None:
    infarct = condition("i", ICD, "I63.9", "2026-02-14")
    cramps = condition("c", ICD, "R25.2", "2026-10-20")
    ev = evaluation(knowledge, patient, conditions=[infarct, cramps])
    assert ev.deceased is deceased
    findings = RULES["post-stroke-cramps-patient-view"](ev)
    assert (findings == []) is deceased


def test_medication_safety_runs_on_patient_view_whatever_the_cramp_scope(
    knowledge: Knowledge,
) -> None:
    # Issue 18 item 2: the checks ordering runs for every patient run on patient-view too.
    def request(rid: str, text: str) -> dict[str, Any]:
        return {
            "resourceType": "MedicationRequest",
            "id": rid,
            "status": "active",
            "intent": "order",
            "medicationCodeableConcept": {"text": text},
        }

    medicines = [
        request("t", "tizanidine 4 mg tablet"),
        request("c", "ciprofloxacin 500 mg tablet"),
    ]
    rule_set = RULES["post-stroke-cramps-patient-view"]
    for conditions in ([], [condition("i", ICD, "I63.9", "2026-02-14")]):
        ev = evaluation(knowledge, conditions=conditions, medication_requests=medicines)
        kinds = [(f.kind, f.variant) for f in rule_set(ev)]
        assert kinds == [("tizanidine-cyp1a2-interaction", None)]


def test_quinine_on_patient_view_needs_documented_cramps(knowledge: Knowledge) -> None:
    quinine = {
        "resourceType": "MedicationRequest",
        "id": "q",
        "status": "active",
        "intent": "order",
        "medicationCodeableConcept": {"text": "quinine sulfate 324 mg capsule"},
    }
    written = {
        "resourceType": "Condition",
        "id": "c",
        "code": {"coding": [{"system": "urn:oid:1.2.3", "code": "L-1"}], "text": "calf cramping"},
    }
    rule_set = RULES["post-stroke-cramps-patient-view"]
    without = evaluation(knowledge, medication_requests=[quinine])
    assert rule_set(without) == []
    with_cramps = evaluation(knowledge, conditions=[written], medication_requests=[quinine])
    assert [f.kind for f in rule_set(with_cramps)] == ["quinine-for-cramps"]
