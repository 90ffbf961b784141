"""Prefetch semantics: token resolution, key states, and what is fetched or fails with 412."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from cds_service.errors import PreconditionFailed
from cds_service.fhir.client import FhirFetchError
from cds_service.fhir.record import PatientRecord
from cds_service.knowledge.loader import PrefetchTemplate
from cds_service.prefetch import (
    MAX_MEDICATION_LOOKUPS,
    KeyState,
    UnresolvableToken,
    add_referenced_medications,
    classify,
    gather,
    resolve_template,
)

CONTEXT = {"userId": "Practitioner/dr-1", "patientId": "pt-1", "encounterId": "enc-9"}
OUTCOME = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "timeout"}]}
PATIENT = {"resourceType": "Patient", "id": "pt-1"}
EMPTY_BUNDLE = {"resourceType": "Bundle", "type": "searchset", "entry": []}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Patient/{{context.patientId}}", "Patient/pt-1"),
        ("Encounter/{{ context.encounterId }}", "Encounter/enc-9"),
        ("Practitioner/{{userPractitionerId}}", "Practitioner/dr-1"),
        (
            "Condition?patient={{context.patientId}}&encounter={{context.encounterId}}",
            "Condition?patient=pt-1&encounter=enc-9",
        ),
        ("Observation?code=http://loinc.org|17861-6", "Observation?code=http://loinc.org|17861-6"),
    ],
)
def test_tokens_resolve_from_context_and_user(template: str, expected: str) -> None:
    assert resolve_template(template, CONTEXT) == expected


@pytest.mark.parametrize(
    "template",
    [
        "PractitionerRole/{{userPractitionerRoleId}}",  # the user is a Practitioner, not a role
        "Patient/{{context.missing}}",
        "Patient/{{today()}}",
        "Bundle/{{context.draftOrders}}",
    ],
)
def test_unresolvable_tokens_are_reported(template: str) -> None:
    context = {**CONTEXT, "draftOrders": {"resourceType": "Bundle"}}
    with pytest.raises(UnresolvableToken):
        resolve_template(template, context)


@pytest.mark.parametrize(
    ("value", "present", "state"),
    [
        (None, False, KeyState.ABSENT),
        (None, True, KeyState.NO_DATA),
        (OUTCOME, True, KeyState.NOT_FILLED),
        ({"resourceType": "Bundle", "entry": [{"resource": OUTCOME}]}, True, KeyState.NOT_FILLED),
        (
            {"resourceType": "Bundle", "entry": [{"resource": OUTCOME}, {"resource": PATIENT}]},
            True,
            KeyState.PRESENT,
        ),
        (EMPTY_BUNDLE, True, KeyState.PRESENT),
        (PATIENT, True, KeyState.PRESENT),
    ],
)
def test_key_states(value: Any, present: bool, state: KeyState) -> None:
    assert classify(value, present) is state


class RecordingFetcher:
    """A FHIR server stand-in that answers from a dict and records what was asked."""

    def __init__(self, answers: dict[str, Any], fail: set[str] | None = None) -> None:
        self.answers = answers
        self.fail = fail or set()
        self.asked: list[str] = []

    def query(self, relative: str) -> dict[str, Any] | None:
        self.asked.append(relative)
        if relative in self.fail:
            raise FhirFetchError("the FHIR server answered 500")
        found: dict[str, Any] | None = self.answers.get(relative)
        return found

    def complete(self, bundle: dict[str, Any]) -> dict[str, Any]:
        self.asked.append("next-page")
        return {**bundle, "link": [], "entry": [*bundle.get("entry", []), {"resource": PATIENT}]}


TEMPLATES = [
    PrefetchTemplate("patient", "Patient/{{context.patientId}}"),
    PrefetchTemplate("conditions", "Condition?patient={{context.patientId}}"),
    PrefetchTemplate("procedures", "Procedure?patient={{context.patientId}}", required=False),
]


@pytest.fixture
def executor() -> Any:
    with ThreadPoolExecutor(max_workers=4) as pool:
        yield pool


def run(
    prefetch: dict[str, Any], fetcher: Any, executor: Any, problem: str | None = None
) -> dict[str, Any]:
    """gather() with `fetcher` as the call's client, or, when it is None, none to be had (`problem`)."""

    def connect() -> Any:
        if fetcher is None:
            raise FhirFetchError(problem or "no fhirServer")
        return fetcher

    return gather(TEMPLATES, prefetch, CONTEXT, connect, executor, deadline_seconds=5)


def test_supplied_keys_are_used_and_nothing_is_fetched(executor: Any) -> None:
    fetcher = RecordingFetcher({})
    data = run(
        {"patient": PATIENT, "conditions": EMPTY_BUNDLE, "procedures": None}, fetcher, executor
    )
    assert data == {"patient": PATIENT, "conditions": EMPTY_BUNDLE, "procedures": None}
    assert fetcher.asked == []


def test_no_client_is_made_when_nothing_must_be_fetched(executor: Any) -> None:
    connects: list[str] = []

    def connect() -> Any:
        connects.append("connect")
        raise FhirFetchError("the fhirServer is not on the allowlist")

    supplied = {"patient": PATIENT, "conditions": EMPTY_BUNDLE, "procedures": None}
    assert gather(TEMPLATES, supplied, CONTEXT, connect, executor, 5) == supplied
    assert connects == []
    with pytest.raises(PreconditionFailed) as failure:
        gather(TEMPLATES, {"patient": PATIENT}, CONTEXT, connect, executor, 5)
    assert connects == ["connect"]  # once for the call, not per key
    assert "allowlist" in failure.value.issues[0].message


def test_null_means_no_data_and_is_never_refetched(executor: Any) -> None:
    fetcher = RecordingFetcher({"Patient/pt-1": PATIENT})
    data = run({"patient": None, "conditions": None, "procedures": None}, fetcher, executor)
    assert data["patient"] is None
    assert fetcher.asked == []


def test_missing_and_operation_outcome_keys_are_fetched(executor: Any) -> None:
    fetcher = RecordingFetcher({"Patient/pt-1": PATIENT, "Condition?patient=pt-1": EMPTY_BUNDLE})
    data = run({"patient": OUTCOME, "procedures": None}, fetcher, executor)
    assert data["patient"] == PATIENT
    assert data["conditions"] == EMPTY_BUNDLE
    assert sorted(fetcher.asked) == ["Condition?patient=pt-1", "Patient/pt-1"]


def test_paginated_prefetch_bundle_is_completed(executor: Any) -> None:
    paged = {
        "resourceType": "Bundle",
        "entry": [],
        "link": [{"relation": "next", "url": "http://x/next"}],
    }
    fetcher = RecordingFetcher({})
    data = run({"patient": PATIENT, "conditions": paged, "procedures": None}, fetcher, executor)
    assert fetcher.asked == ["next-page"]
    assert data["conditions"]["entry"] == [{"resource": PATIENT}]


def test_no_fhir_server_and_missing_required_keys_fail_with_412(executor: Any) -> None:
    with pytest.raises(PreconditionFailed) as failure:
        run({"patient": PATIENT}, None, executor, "the request has no fhirServer to fetch it from")
    paths = [issue.path for issue in failure.value.issues]
    assert paths == ["prefetch.conditions"]  # procedures is optional
    assert "no fhirServer" in failure.value.issues[0].message


def test_failed_fetch_of_a_required_key_fails_with_412(executor: Any) -> None:
    fetcher = RecordingFetcher({"Patient/pt-1": PATIENT}, fail={"Condition?patient=pt-1"})
    with pytest.raises(PreconditionFailed) as failure:
        run({}, fetcher, executor)
    assert [i.path for i in failure.value.issues] == ["prefetch.conditions"]
    assert "500" in failure.value.issues[0].message


def test_failed_optional_key_is_left_out(executor: Any) -> None:
    fetcher = RecordingFetcher(
        {"Patient/pt-1": PATIENT, "Condition?patient=pt-1": EMPTY_BUNDLE},
        fail={"Procedure?patient=pt-1"},
    )
    data = run({}, fetcher, executor)
    assert set(data) == {"patient", "conditions"}


def referencing(*ids: str) -> PatientRecord:
    """A record whose orders name their medicines only by `Medication/{id}`, none of them held."""
    orders = [
        {
            "resourceType": "MedicationRequest",
            "id": f"r-{rid}",
            "status": "active",
            "medicationReference": {"reference": f"Medication/{rid}"},
        }
        for rid in ids
    ]
    return PatientRecord.from_resources("pt-1", orders)


def look_up(record: PatientRecord, fetcher: Any, executor: Any, seconds_left: float = 5) -> None:
    def connect() -> Any:
        if fetcher is None:
            raise FhirFetchError("the request has no fhirServer to fetch it from")
        return fetcher

    add_referenced_medications(record, [], connect, executor, seconds_left)


def test_referenced_medications_are_read_in_one_search(executor: Any) -> None:
    tiz = {"resourceType": "Medication", "id": "tiz", "code": {"text": "tizanidine"}}
    fetcher = RecordingFetcher(
        {"Medication?_id=tiz,other&_count=2": {**EMPTY_BUNDLE, "entry": [{"resource": tiz}]}}
    )
    record = referencing("tiz", "other")
    look_up(record, fetcher, executor)
    assert fetcher.asked == ["Medication?_id=tiz,other&_count=2"]
    assert record.medications == {"Medication/tiz": tiz}
    assert record.unresolved_medication_ids() == ["other"]  # not on the server: stays unknown


def test_at_most_the_cap_of_medications_is_asked_for(executor: Any) -> None:
    fetcher = RecordingFetcher({})
    look_up(referencing(*(f"m{n}" for n in range(MAX_MEDICATION_LOOKUPS + 5))), fetcher, executor)
    [query] = fetcher.asked
    assert query.count(",") == MAX_MEDICATION_LOOKUPS - 1
    assert query.endswith(f"&_count={MAX_MEDICATION_LOOKUPS}")


@pytest.mark.parametrize(
    "fetcher", [None, RecordingFetcher({}, fail={"Medication?_id=tiz&_count=1"})]
)
def test_a_failed_medication_look_up_leaves_the_record_as_it_was(
    executor: Any, fetcher: Any
) -> None:
    record = referencing("tiz")
    look_up(record, fetcher, executor)
    assert record.medications == {}
    assert record.unresolved_medication_ids() == ["tiz"]


class LateFetcher:
    """Answers with the Medication only once released (after the caller stopped waiting)."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def query(self, relative: str) -> dict[str, Any]:
        self.release.wait(5)
        tiz = {"resourceType": "Medication", "id": "tiz"}
        return {**EMPTY_BUNDLE, "entry": [{"resource": tiz}]}


def test_a_medication_look_up_past_the_deadline_is_not_waited_for(executor: Any) -> None:
    record = referencing("tiz")
    fetcher = LateFetcher()
    look_up(record, fetcher, executor, seconds_left=0.05)
    fetcher.release.set()
    executor.shutdown(wait=True)  # the late answer arrives, and is not used
    assert record.medications == {}


def test_nothing_is_asked_when_every_medication_is_resolved(executor: Any) -> None:
    record = referencing()
    look_up(record, None, executor)  # a connect that would fail is not even called
    fetcher = RecordingFetcher({})
    look_up(record, fetcher, executor)
    assert fetcher.asked == []
