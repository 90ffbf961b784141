"""The per-call matching machinery gives the same answers as the plain value-set tests it replaces."""

from __future__ import annotations

import re
from typing import Any

import pytest

from cds_service.fhir.record import PatientRecord
from cds_service.knowledge import Knowledge
from cds_service.knowledge.valuesets import (
    CodeIndex,
    Medicine,
    MedicineCatalog,
    SystemNames,
    ValueSet,
)
from cds_service.rules.common import (
    any_coded_in,
    coded_in,
    conditions_in,
    medication_name,
    medications_in,
    results_in,
)
from cds_service.units import concentration

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"

# Medicine descriptions as EHRs send them: codes under alias URIs, names only in text, junk.
CONCEPTS: list[Any] = [
    {"coding": [{"system": RXNORM, "code": "1292", "display": "Baclofen"}]},
    {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "1292"}]},
    {"coding": [{"system": RXNORM + "/", "code": " 1292 "}]},
    {"text": "Cyclobenzaprine hydrochloride 10 MG Oral Tablet"},
    {"text": "TRAMADOL 50mg", "coding": [{"system": "x", "code": "y", "display": "Ultram"}]},
    {"text": "(gabapentin) 300 MG"},
    {"text": "non-baclofen-like product"},
    {"text": "Quinine-sulfate"},
    {"text": "calcium carbonate 1250 MG / vitamin D3"},
    {"text": "Zolpidem\nTartrate"},
    {"coding": "junk", "text": 7},
    {"coding": [None, {"system": 1, "code": "2", "display": "oxycodone"}]},
    {"coding": [{"system": RXNORM, "code": "21949", "display": ""}]},
    {},
]


def test_medicine_answers_as_matches_medication(knowledge: Knowledge) -> None:
    for concept in CONCEPTS:
        for vs in knowledge.valuesets.values():
            medicine = Medicine([concept], vs.systems)
            assert vs.matches_medicine(medicine) == vs.matches_medication([concept]), (
                vs.id,
                concept,
            )


def test_the_catalog_finds_every_value_set_a_medicine_is_in(knowledge: Knowledge) -> None:
    catalog = MedicineCatalog(knowledge.valuesets.values(), knowledge.catalog.systems)
    for concept in [*CONCEPTS, *([c, c] for c in CONCEPTS)]:
        concepts = concept if isinstance(concept, list) else [concept]
        expected = {vs.id for vs in knowledge.valuesets.values() if vs.matches_medication(concepts)}
        assert catalog.medicine(concepts).in_sets == expected, concept  # worked out
        assert catalog.medicine(concepts).in_sets == expected, concept  # from the cache


def test_the_catalog_cache_is_bounded(knowledge: Knowledge) -> None:
    catalog = MedicineCatalog(knowledge.valuesets.values(), knowledge.catalog.systems, max_cached=3)
    for n in range(10):
        medicine = catalog.medicine([{"text": f"baclofen {n} mg"}])
        assert "baclofen" in medicine.in_sets
    assert len(catalog._cache) == 3


def test_the_first_word_filter_never_hides_a_name() -> None:
    systems = SystemNames({})
    vs = ValueSet("t", "t", "medication", frozenset(), ("co-careldopa", "st john's wort"), systems)
    assert vs.first_words == frozenset({"co", "st"})
    for text in ["Co-careldopa 25/100", "x st john's wort", "costa", "st. john's wort"]:
        medicine = Medicine([{"text": text}], systems)
        expected = vs.text_pattern is not None and bool(vs.text_pattern.search(text.lower()))
        assert vs.matches_medicine(medicine) is expected
    # A name that starts with a non-word character turns the filter off.
    odd = ValueSet("o", "o", "medication", frozenset(), ("-x", "y"), systems)
    assert odd.first_words is None


def test_code_index_finds_what_matches_finds_in_list_order(knowledge: Knowledge) -> None:
    resources: list[dict[str, Any]] = [
        {"code": {"coding": [{"system": ICD, "code": "I639"}]}},
        {"code": {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.90", "code": "r25.2"}]}},
        {"code": [{"coding": [{"system": ICD, "code": "I63.9"}]}]},
        {"code": {"coding": [{"system": ICD, "code": "I63.9"}, {"system": ICD, "code": "I639"}]}},
        {"code": {"coding": [{"system": LOINC, "code": "17861-6"}]}},
        {"code": "junk"},
        {},
    ]
    for vs in knowledge.valuesets.values():
        index = CodeIndex(resources, vs.systems)
        assert index.coded_in(vs) == [r for r in resources if vs.matches(r.get("code"))], vs.id


def test_existence_questions_answer_alike_with_or_without_an_index(knowledge: Knowledge) -> None:
    resources: list[dict[str, Any]] = [
        {"status": s, "code": {"coding": [{"system": system, "code": code}]}}
        for s, system, code in [
            ("preliminary", LOINC, "17861-6"),
            ("final", "urn:oid:2.16.840.1.113883.6.1", "17861-6"),
            ("final", ICD, "r25.2"),
        ]
    ]
    final = lambda r: r["status"] == "final"  # noqa: E731
    for vs in knowledge.valuesets.values():
        expected = any(vs.matches(r["code"]) and final(r) for r in resources)
        record = PatientRecord(patient_id="p", observations=resources)
        assert any_coded_in(record, resources, vs, final) == expected, vs.id  # scanned
        coded_in(record, resources, vs)  # the list is now indexed
        assert any_coded_in(record, resources, vs, final) == expected, vs.id


def test_memoised_record_queries_match_a_plain_scan(knowledge: Knowledge) -> None:
    cramps = {"system": ICD, "code": "R252"}
    record = PatientRecord(
        patient_id="p",
        conditions=[{"resourceType": "Condition", "code": {"coding": [cramps]}}],
        observations=[
            {"resourceType": "Observation", "status": s, "code": {"coding": [c]}, "issued": d}
            for s, c, d in [
                ("final", {"system": LOINC, "code": "17861-6"}, "2025-01-01"),
                ("preliminary", {"system": LOINC, "code": "17861-6"}, "2025-03-01"),
                ("amended", {"system": LOINC, "code": "17861-6"}, "2025-02-01"),
            ]
        ],
        medication_requests=[
            {"status": "active", "medicationCodeableConcept": c} for c in CONCEPTS
        ],
    )
    record.catalog = knowledge.catalog
    calcium = knowledge.valueset("calcium-any")
    assert [o["issued"] for o in results_in(record, calcium)] == ["2025-02-01", "2025-01-01"]
    assert conditions_in(record, knowledge.valueset("leg-cramps"), active_only=True)
    for vs in knowledge.valuesets.values():
        expected = [
            m
            for m in record.medication_requests
            if vs.matches_medication([m["medicationCodeableConcept"]])
        ]
        assert medications_in(record, vs) == expected  # computed
        assert medications_in(record, vs) == expected  # memoised


@pytest.mark.parametrize("unit", ["mg/dL", "mmol/L", "meq/L", "mg/L", "g/dL", "umol/L", "%"])
@pytest.mark.parametrize("value", [0.1, 2.2, 8.5, 9.13, 1234.5678])
def test_cached_conversions_give_the_float_pint_gives(unit: str, value: float) -> None:
    from cds_service.fhir.data import Quantity
    from cds_service.rules.calcium import CALCIUM
    from cds_service.units import _parse

    q = value * _parse(unit)
    if re.search("eq", unit):
        q = q / CALCIUM.valence
    target = _parse("mg/dL")
    if q.dimensionality != target.dimensionality:
        q = q * (CALCIUM.molar_mass_g_per_mol * _parse("g/mol"))
    expected = float(q.to(target).magnitude) if q.dimensionality == target.dimensionality else None
    assert concentration(Quantity(value, unit, unit), "mg/dL", CALCIUM) == expected


def test_a_medicine_is_named_by_its_text_else_a_display_else_a_code(knowledge: Knowledge) -> None:
    coding = {"system": RXNORM, "code": "1292", "display": "Baclofen"}
    requests: list[dict[str, Any]] = [
        {"medicationCodeableConcept": {"text": "Baclofen 10 MG Oral Tablet", "coding": [coding]}},
        {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}, coding]}},
        {"medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "1292"}]}},
        {"medicationReference": {"reference": "Medication/m1", "display": "Lioresal"}},
        {"medicationReference": {"reference": "Medication/unknown"}},
    ]
    record = PatientRecord(patient_id="p", medication_requests=requests)
    record.catalog = knowledge.catalog
    names = [medication_name(record, r) for r in requests]
    assert names == [
        "Baclofen 10 MG Oral Tablet",
        "Baclofen",
        "1292",
        "Lioresal",
        "unnamed medicine",
    ]
    assert [medication_name(record, r) for r in requests] == names  # from the call's memo
