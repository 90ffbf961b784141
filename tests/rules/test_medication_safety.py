"""Medication safety: one card per combination, routes that are not systemic, who is an older adult."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.render import choose_phrases, fill_phrases
from cds_service.rules.evaluation import Evaluation, Finding
from cds_service.rules.medication_safety import (
    baclofen_with_low_egfr,
    beers_muscle_relaxants,
    cns_active_burden,
    older_adult,
    one_per_combination,
    stop_facts,
    systemic,
    tizanidine_with_cyp1a2_inhibitor,
    unidentified,
)
from tests.support.builders import searchset

SCT = "http://snomed.info/sct"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_combination_named_in_full_by_another_card_of_its_kind_is_dropped() -> None:
    pair = Finding("relaxant-with-cns-depressant", {"relaxants": "A", "depressants": "C"})
    fuller = Finding("relaxant-with-cns-depressant", {"relaxants": "A, B", "depressants": "C"})
    other = Finding("relaxant-with-cns-depressant", {"relaxants": "D", "depressants": "C"})

    assert one_per_combination([pair, fuller, other]) == [fuller, other]


def test_cards_of_other_kinds_or_tied_to_an_order_are_kept() -> None:
    burden = Finding("cns-active-burden", {"medicines": "A, B, C"})
    pair = Finding("relaxant-with-cns-depressant", {"relaxants": "A", "depressants": "C"})
    # Each order's own card carries its remove action: never folded into another order's card.
    second = Finding("duplicate-muscle-relaxant", {"medicine": "A", "others": "B", "order": "o/1"})
    third = Finding(
        "duplicate-muscle-relaxant", {"medicine": "C", "others": "A, B", "order": "o/2"}
    )

    assert one_per_combination([burden, pair, second, third]) == [burden, pair, second, third]


def test_a_pair_seen_from_each_of_its_medicines_is_one_card() -> None:
    one_side = Finding(
        "tizanidine-cyp1a2-interaction", {"medicine": "T", "partner": "C", "order": "a/1"}
    )
    other_side = Finding(
        "tizanidine-cyp1a2-interaction", {"medicine": "C", "partner": "T", "order": "a/2"}
    )

    assert one_per_combination([one_side, other_side]) == [one_side]


def _evaluation(knowledge: Knowledge, birth: str | None = None, **lists: Any) -> Evaluation:
    patient = {"resourceType": "Patient", "id": "p", "birthDate": birth} if birth else None
    record = PatientRecord(patient_id="p", patient=patient, **lists)
    return Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)


def _route(code: str | None, text: str | None = None) -> dict[str, Any]:
    route: dict[str, Any] = {}
    if code:
        route["coding"] = [{"system": SCT, "code": code}]
    if text:
        route["text"] = text
    return route


@pytest.mark.parametrize(
    ("name", "dosage", "expected"),
    [
        ("ciprofloxacin 500 MG Oral Tablet", [], True),
        ("ciprofloxacin 0.3% ophthalmic solution", [], False),
        ("ciprofloxacin 0.3% eye drops", [{"text": "1 drop each eye"}], False),
        ("Ciprodex otic suspension", [], False),
        # Skin dose forms in the text are route evidence (issue 18 attack, k03)...
        ("acyclovir 5 % cream (Zovirax)", [{"text": "apply to lesions"}], False),
        ("acyclovir 5% ointment", [], False),
        ("verapamil 2% gel", [], False),
        # ... unless a systemic route is named beside them, or the form is a patch.
        ("estradiol 0.01% vaginal cream", [], True),
        ("testosterone 1% transdermal gel", [], True),
        ("ethinyl estradiol / norelgestromin transdermal patch", [], True),
        ("famotidine oral gel", [], True),
        ("acyclovir cream", [{"route": _route(None, "Rectal")}], True),
        ("acyclovir 5% cream", [{"route": _route("6064005")}], False),  # coded topical
        ("ciprofloxacin 0.3% solution", [{"route": _route("54485002")}], False),  # ophthalmic
        ("ciprofloxacin 0.3% solution", [{"route": _route(None, "Otic")}], False),  # route text
        # A coded oral route wins over a dose form named in text.
        ("ciprofloxacin ophthalmic", [{"route": _route("26643006")}], True),
        # Only some routes non-systemic: the medicine still reaches the circulation.
        ("ciprofloxacin", [{"route": _route("54485002")}, {"route": _route("26643006")}], True),
        # An unknown local route code is not read as non-systemic.
        ("ciprofloxacin", [{"route": {"coding": [{"system": "urn:local", "code": "EYE"}]}}], True),
    ],
)
def test_routes_and_dose_forms_decide_whether_a_medicine_is_systemic(
    knowledge: Knowledge, name: str, dosage: list[dict[str, Any]], expected: bool
) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "m",
        "status": "active",
        "medicationCodeableConcept": {"text": name},
        "dosageInstruction": dosage,
    }
    ev = _evaluation(knowledge, medication_requests=[request])
    assert systemic(ev, ev.current_medicines[0]) is expected


def test_a_medication_statement_s_dosage_route_is_read(knowledge: Knowledge) -> None:
    statement = {
        "resourceType": "MedicationStatement",
        "id": "s",
        "status": "active",
        "medicationCodeableConcept": {"text": "ciprofloxacin 0.3% solution"},
        "dosage": [{"route": _route("10547007")}],
    }
    ev = _evaluation(knowledge, medication_requests=[statement])
    assert systemic(ev, ev.current_medicines[0]) is False


def test_a_request_not_to_give_a_medicine_is_not_taken(knowledge: Knowledge) -> None:
    request = {
        "resourceType": "MedicationRequest",
        "id": "m",
        "status": "active",
        "doNotPerform": True,
        "medicationCodeableConcept": {"text": "ciprofloxacin 500 MG Oral Tablet"},
    }
    assert _evaluation(knowledge, medication_requests=[request]).current_medicines == []


@pytest.mark.parametrize(
    ("birth", "expected"),
    [
        ("1961-11-25", False),  # 65th birthday tomorrow: 64 completed years
        ("1961-11-24", True),  # 65 today
        ("1950-01-01", True),
        (None, False),  # unknown age: Beers is not assumed to apply
        # A partial birth date: the age certainly reached (the patient may be 64 until its end).
        ("1961", False),
        ("1961-11", False),  # born 1-30 November 1961: 65 only from 30 November
        ("1961-10", True),  # born in October 1961: 65 by 24 November 2026 whatever the day
        ("1960", True),
    ],
)
def test_older_adult_from_the_threshold_age(
    knowledge: Knowledge, birth: str | None, expected: bool
) -> None:
    assert older_adult(_evaluation(knowledge, birth)) is expected


def _order(status: str, name: str = "carisoprodol 350 MG Oral Tablet") -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "o",
        "status": status,
        "medicationCodeableConcept": {"text": name},
    }


@pytest.mark.parametrize(
    ("hook", "status", "draft", "variant", "label"),
    [
        # A draft is not yet taken: the order is reconsidered, not the medicine stopped.
        ("order-select", "draft", True, "ordering", "Remove the draft order for"),
        ("order-sign", "draft", True, "ordering", "Remove the draft order for"),
        # A re-signed active order is already taken: stopping (not renewing) it is the advice.
        ("order-sign", "active", False, None, "Do not renew"),
        ("patient-view", "active", False, None, "Discontinue"),
    ],
)
def test_a_draft_order_reads_as_reconsidering_the_order(
    knowledge: Knowledge, hook: str, status: str, draft: bool, variant: str | None, label: str
) -> None:
    ev = _evaluation(knowledge, "1950-01-01")
    ev.hook = hook
    medicine = ev.medicine(_order(status))

    assert stop_facts(ev, medicine)["draft"] is draft
    [finding] = beers_muscle_relaxants(ev, [medicine])
    assert finding.variant == variant
    # The label is a phrase of cards.yaml chosen by the finding's facts.
    chosen = choose_phrases(knowledge.cards[finding.kind], finding.facts)
    worded = fill_phrases(chosen, finding.facts)
    assert worded["stop_label"].startswith(label)


TIZANIDINE_MEDICATION = {
    "resourceType": "Medication",
    "id": "tiz",
    "code": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "57258"}]
    },
}
CIPROFLOXACIN = {
    "resourceType": "MedicationRequest",
    "id": "cipro",
    "status": "active",
    "medicationCodeableConcept": {"text": "ciprofloxacin 500 MG Oral Tablet"},
}


def _by_reference(reference: str, **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": "tiz-order",
        "status": "active",
        "medicationReference": {"reference": reference},
        **more,
    }


@pytest.mark.parametrize(
    ("request_", "bundle"),
    [
        # A Medication returned beside the order (prefetch or _include), by relative reference...
        (_by_reference("Medication/tiz"), [TIZANIDINE_MEDICATION]),
        # ... or by an absolute one,
        (_by_reference("http://ehr.example/fhir/R4/Medication/tiz"), [TIZANIDINE_MEDICATION]),
        # or a contained Medication.
        (_by_reference("#tiz", contained=[TIZANIDINE_MEDICATION]), []),
    ],
)
def test_a_medicine_named_by_reference_is_read_from_its_medication(
    knowledge: Knowledge, request_: dict[str, Any], bundle: list[dict[str, Any]]
) -> None:
    record = PatientRecord.from_resources("p", [searchset(request_, CIPROFLOXACIN, *bundle)])
    ev = Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)
    current = ev.current_medicines

    [finding] = tizanidine_with_cyp1a2_inhibitor(ev, current, current)
    assert finding.variant is None  # the contraindicated (critical) wording
    assert unidentified(current) == []


def test_a_medicine_nothing_names_is_said_to_be_unidentified_not_passed_silently(
    knowledge: Knowledge,
) -> None:
    record = PatientRecord.from_resources(
        "p", [searchset(_by_reference("Medication/not-sent"), CIPROFLOXACIN)]
    )
    ev = Evaluation("patient-view", {"patientId": "p"}, record, knowledge, NOW)
    current = ev.current_medicines

    assert tizanidine_with_cyp1a2_inhibitor(ev, current, current) == []  # nothing is guessed
    [finding] = unidentified(current)
    assert finding.kind == "medication-unidentified"
    assert finding.facts == {"count": "1", "orders": "MedicationRequest/tiz-order"}


def test_the_burden_card_names_a_few_medicines_and_counts_the_rest(knowledge: Knowledge) -> None:
    drugs = ["gabapentin", "oxycodone", "lorazepam", "sertraline", "quetiapine", "zolpidem"]
    requests = [
        {**_order("active", f"{drug} tablet"), "id": f"o{index}"}
        for index, drug in enumerate(drugs)
    ]
    ev = _evaluation(knowledge, "1950-01-01", medication_requests=requests)
    current = ev.current_medicines

    [finding] = cns_active_burden(ev, current, current)
    assert finding.facts["count"] == "6"
    assert finding.facts["medicines"].count(",") == 3  # four named
    assert (finding.facts["more"], finding.facts["has_more"]) == ("2", True)
    assert len(finding.evidence) == 6  # the evidence lists every one


def _egfr(value: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": "egfr",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "98979-8"}]},
        "effectiveDateTime": "2026-11-10",
        **value,
    }


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ({"valueQuantity": {"value": 15, "comparator": "<", "code": "mL/min/{1.73_m2}"}}, "<15"),
        ({"valueString": "<15"}, "<15"),
        ({"valueString": " <= 59.9 "}, "<=59.9"),
        ({"valueQuantity": {"value": 59, "code": "mL/min/{1.73_m2}"}}, "59"),
        ({"valueQuantity": {"value": 60, "comparator": "<", "code": "mL/min/{1.73_m2}"}}, "<60"),
        # Not certainly below 60: no card (at least 60; at least 30 may be 45 or 90; at 60).
        ({"valueQuantity": {"value": 60, "comparator": ">", "code": "mL/min/{1.73_m2}"}}, None),
        ({"valueString": ">30"}, None),
        ({"valueQuantity": {"value": 60, "code": "mL/min/{1.73_m2}"}}, None),
        ({"valueString": "<60 mL/min"}, None),  # a number with words is not read
    ],
)
def test_the_egfr_is_shown_with_its_comparator_and_compared_for_certain(
    knowledge: Knowledge, value: dict[str, Any], shown: str | None
) -> None:
    baclofen = _order("active", "baclofen 10 MG Oral Tablet")
    ev = _evaluation(
        knowledge, "1966-01-01", medication_requests=[baclofen], observations=[_egfr(value)]
    )
    findings = baclofen_with_low_egfr(ev, ev.current_medicines)
    assert [f.facts["egfr"] for f in findings] == ([shown] if shown else [])
