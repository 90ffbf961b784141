"""The one value-set question: a code in common after normalising system and code, else (for a
medicine) one of the set's names as a whole word of its text."""

from __future__ import annotations

from typing import Any

import pytest

from cds_service.knowledge import Knowledge
from cds_service.knowledge.valuesets import ValueSet, code_keys, normalize_code

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.mark.parametrize(
    ("code", "expected"),
    [("I639", "I63.9"), ("i63.9", "I63.9"), (" R252 ", "R25.2"), ("R25", "R25")],
)
def test_icd10cm_codes_are_upper_case_and_dotted(code: str, expected: str) -> None:
    assert normalize_code(ICD, code) == expected


def test_other_systems_keep_their_codes_as_sent_but_trimmed() -> None:
    assert normalize_code(RXNORM, " 1292 ") == "1292"
    assert normalize_code("http://loinc.org", "17861-6") == "17861-6"


@pytest.mark.parametrize(
    "coding",
    [
        {"system": ICD, "code": "R25.2"},
        {"system": ICD, "code": "r252"},
        {"system": "urn:oid:2.16.840.1.113883.6.90", "code": "R25.2"},  # an alias
        {"system": "http://hl7.org/fhir/sid/icd-10", "code": "R25.2"},
        {"system": ICD + "/", "code": " R25.2"},
    ],
)
def test_a_code_sent_under_any_known_uri_and_form_is_in_its_set(
    knowledge: Knowledge, coding: dict[str, str]
) -> None:
    cramps = knowledge.valueset("leg-cramps")
    assert cramps.has(knowledge.code_keys({"coding": [coding]}))
    assert cramps.has(knowledge.code_keys([{"text": "x"}, {"coding": [coding]}]))


@pytest.mark.parametrize(
    "concept",
    [
        {"coding": [{"system": ICD, "code": "R25.3"}]},
        {"coding": [{"system": "http://snomed.info/sct", "code": "R25.2"}]},  # another system
        {"text": "leg cramps"},  # a condition is matched by code only
        {"coding": "junk"},
        {"coding": [None, {"system": 1, "code": "R25.2"}]},
        "junk",
        None,
    ],
)
def test_other_codes_systems_and_junk_are_not(knowledge: Knowledge, concept: Any) -> None:
    assert not knowledge.valueset("leg-cramps").has(knowledge.code_keys(concept))


def test_unknown_systems_are_kept_as_sent() -> None:
    assert code_keys({"coding": [{"system": "urn:x", "code": "1"}]}, {}) == {("urn:x", "1")}


MEDICINES = ValueSet(
    "t", "t", "medication", frozenset(), ("calcium", "calcium carbonate", "st john's wort")
)


@pytest.mark.parametrize(
    ("texts", "found"),
    [
        (["Calcium Carbonate 1250 MG"], "calcium carbonate"),  # the longest name first
        (["oral calcium"], "calcium"),
        (["none", "CALCIUM\nacetate"], "calcium"),
        (["x St John's Wort"], "st john's wort"),
        (["calciumx", "precalcium"], None),  # whole words only
        ([], None),
    ],
)
def test_medicine_names_are_whole_words_of_a_text(texts: list[str], found: str | None) -> None:
    assert MEDICINES.name_in(texts) == found
    assert MEDICINES.has(frozenset(), texts) is (found is not None)


def test_a_medicine_code_or_name_puts_it_in_the_set(knowledge: Knowledge) -> None:
    baclofen = knowledge.valueset("baclofen")
    by_code = knowledge.code_keys(
        {"coding": [{"system": "urn:oid:2.16.840.1.113883.6.88", "code": "1292"}]}
    )
    assert baclofen.has(by_code)
    assert baclofen.has(frozenset(), ["Lioresal 10 MG Oral Tablet"])
    assert not baclofen.has(frozenset(), ["Tizanidine 4 MG"])
    # A value set that includes another has its codes and names.
    relaxants = knowledge.valueset("muscle-relaxants")
    assert relaxants.has(by_code) and relaxants.has(frozenset(), ["lioresal"])
