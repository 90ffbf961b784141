"""Property tests: whatever a client sends, the service answers 4xx/200 JSON, never a server error.

The baseline is an in-scope patient (cerebral infarction I63.9 and leg cramps R25.2, active, plus a
low calcium 17861-6), so the rules run on the mutated data rather than stopping at the scope check.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cds_service.protocol.openapi import OPERATION_OUTCOME
from cds_service.protocol.schemas import validate
from tests.conftest import SERVICE_ID
from tests.support.builders import searchset

URL = f"/cds-services/{SERVICE_ID}"
ORDER_URL = "/cds-services/leg-cramps-{}"  # leg-cramps-order-select, leg-cramps-order-sign
PATIENT = "pt-1"
ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"
CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"

OUTCOME = Draft202012Validator(OPERATION_OUTCOME)

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


# --- the in-scope baseline ----------------------------------------------------------------------


def coded(system: str, code: str, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [{"system": system, "code": code}]}
    if text:
        concept["text"] = text
    return concept


def condition(cid: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{PATIENT}"},
        "clinicalStatus": coded(CLINICAL, "active"),
        "code": coded(ICD10, code),
        "onsetDateTime": "2025-03-01",
    }


def observation(
    oid: str, code: str, value: float, unit: str, low: float, when: str
) -> dict[str, Any]:
    quantity = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "code": coded(LOINC, code),
        "effectiveDateTime": when,
        "valueQuantity": quantity,
        "referenceRange": [{"low": {**quantity, "value": low}}],
    }


def medication_request(mid: str, code: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{PATIENT}"},
        "authoredOn": "2026-06-01",
        "medicationCodeableConcept": coded(RXNORM, code, text),
    }


def baseline() -> dict[str, Any]:
    """An in-scope patient-view request that raises several cards (calcium, Beers, quinine, EEG)."""
    return {
        "hook": "patient-view",
        "hookInstance": str(uuid.UUID(int=42)),
        "context": {"userId": "Practitioner/dr-1", "patientId": PATIENT},
        "prefetch": {
            "patient": {"resourceType": "Patient", "id": PATIENT, "birthDate": "1950-01-01"},
            "conditions": searchset(
                condition("c-infarct", "I63.9"),
                condition("c-cramps", "R25.2"),
                {**condition("c-seizure", "R56.9"), "code": coded(SCT, "91175000")},
            ),
            "observations": searchset(
                observation("o-ca", "17861-6", 7.9, "mg/dL", 8.6, "2026-11-01"),
                observation("o-alb", "1751-7", 3.9, "g/dL", 3.5, "2026-11-01"),
                observation("o-mg", "19123-9", 1.5, "mg/dL", 1.7, "2026-10-30"),
                observation("o-egfr", "48642-3", 25, "mL/min/{1.73_m2}", 60, "2026-10-30"),
            ),
            "medications": searchset(
                medication_request("m-relaxant", "21949", "cyclobenzaprine 10 MG Oral Tablet"),
                medication_request("m-baclofen", "1292", "baclofen 10 MG Oral Tablet"),
                medication_request("m-quinine", "9071", "quinine sulfate 324 MG Oral Capsule"),
                {
                    **medication_request("m-ref", "0", ""),
                    "medicationCodeableConcept": None,
                    "medicationReference": {"reference": "Medication/med-oxy"},
                },
                {
                    "resourceType": "Medication",
                    "id": "med-oxy",
                    "code": coded(RXNORM, "7804", "oxycodone"),
                },
            ),
            "reports": searchset(
                {
                    "resourceType": "DiagnosticReport",
                    "id": "r-eeg",
                    "status": "final",
                    "subject": {"reference": f"Patient/{PATIENT}"},
                    "code": coded(LOINC, "11523-8"),
                    "effectiveDateTime": "2026-09-01",
                    "conclusion": "Left temporal sharp waves.",
                }
            ),
            "procedures": None,
        },
    }


def _drop_nones(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None or k in _NULLABLE}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


_NULLABLE = {"procedures"}  # a null prefetch value means "no data"


def in_scope() -> dict[str, Any]:
    return _drop_nones(baseline())  # type: ignore[no-any-return]


# --- checking an answer ---------------------------------------------------------------------------


def post_raw(
    client: FlaskClient, data: bytes | str, content_type: str = "application/json", url: str = URL
) -> Any:
    response = client.post(url, data=data, content_type=content_type)
    # Kept for failure messages: the schemathesis plugin, loaded in every pytest session, swaps
    # Hypothesis' example printer for a no-op, so "Failing test case" shows no argument values.
    response.sent = data
    return response


def post_json(client: FlaskClient, body: Any, url: str = URL) -> Any:
    # json.dumps, not the test client's json=: NaN, huge integers and lone surrogates go out as sent.
    return post_raw(client, json.dumps(body), url=url)


def check_answer(response: Any) -> dict[str, Any]:
    """The service's contract for any request: no 5xx, JSON, a valid response or an OperationOutcome."""
    text = response.get_data(as_text=True)
    sent = getattr(response, "sent", b"")
    request = f"\nrequest ({len(sent)} characters): {sent[:3000]!r}"
    assert response.status_code < 500, text + request
    assert response.mimetype == "application/json", response.mimetype + request
    body = json.loads(text)
    if response.status_code == 200:
        assert validate(body, "response") == [], f"{body}{request}"
    else:
        assert 400 <= response.status_code < 500, f"{response.status_code}{request}"
        assert [e.message for e in OUTCOME.iter_errors(body)] == [], f"{body}{request}"
    assert isinstance(body, dict)
    return body


def test_the_baseline_is_in_scope_and_raises_cards(client: FlaskClient) -> None:
    body = check_answer(post_json(client, in_scope()))
    kinds = {card["source"]["topic"]["code"] for card in body["cards"]}
    assert {"calcium-low", "beers-muscle-relaxant", "quinine-for-cramps"} <= kinds, kinds


# --- strategies -------------------------------------------------------------------------------------

HUGE_INTEGERS = st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**400, -(10**400)])
ODD_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -0.0, 5e-324])
ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\x00",
        "\ud800",  # a lone surrogate
        "\U0001f9e0 brain",
        "é" * 3,
        "Ω≈ç√∫",
        "null",
        "Patient/",
        "Patient/other",
        "#",
        "urn:uuid:",
        "0000-00-00",
        "2026-13-45",
        "2026-02-30T25:61:61Z",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "-2026",
        "１２３",  # full-width digits
        "x" * 100_000,
        "(" * 200,
        "1" * 400,
        "mg/dL" * 50,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    HUGE_INTEGERS,
    st.floats(),
    ODD_FLOATS,
    st.text(max_size=20),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
# Values a FHIR element might wrongly hold instead of what it should.
JUNK = st.one_of(
    SCALARS,
    st.lists(st.integers(), max_size=3),  # e.g. codings that are lists of numbers
    st.lists(SCALARS, max_size=3),
    st.dictionaries(
        st.sampled_from(["value", "unit", "code", "system", "reference", "coding", "text"]), SCALARS
    ),
    JSON_VALUES,
)


@st.composite
def mutated(draw: st.DrawFn, base: Any, depth: int = 0) -> Any:
    """`base` with one element, somewhere in it, replaced, deleted, or given a junk sibling."""
    if depth > 12 or not isinstance(base, dict | list) or not base or draw(st.integers(0, 4)) == 0:
        return draw(JUNK)
    if isinstance(base, list):
        index = draw(st.integers(0, len(base) - 1))
        action = draw(st.sampled_from(["descend", "descend", "descend", "delete", "insert"]))
        copied = list(base)
        if action == "delete":
            del copied[index]
        elif action == "insert":
            copied.insert(index, draw(JUNK))
        else:
            copied[index] = draw(mutated(base[index], depth + 1))
        return copied
    key = draw(st.sampled_from(sorted(base)))
    action = draw(st.sampled_from(["descend", "descend", "descend", "delete", "add"]))
    updated = dict(base)
    if action == "delete":
        del updated[key]
    elif action == "add":
        updated[draw(st.text(max_size=12))] = draw(JUNK)
    else:
        updated[key] = draw(mutated(base[key], depth + 1))
    return updated


@st.composite
def mutated_requests(draw: st.DrawFn) -> Any:
    """The in-scope baseline with one to three mutations."""
    body: Any = in_scope()
    for _ in range(draw(st.integers(1, 3))):
        body = draw(mutated(body))
    return body


def maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a plausible value, sometimes junk."""
    return st.one_of(value, value, value, JUNK)


# Codes the rules look for (calcium, albumin, magnesium, eGFR, EEG, DXA, scope, medicines, seizure,
# spasticity), so drawn resources often match a value set.
CODES = [
    *("17861-6", "1994-3", "1751-7", "19123-9", "48642-3", "11523-8", "38263-0"),
    *("I63.9", "I639", "R25.2", "21949", "1292", "9071", "7804", "91175000", "221360009"),
]
REFERENCE_TARGETS = [
    *("Patient/pt-1", "Patient/other", "Medication/nowhere", "Medication/med-1", "#contained-1"),
    *("#nowhere", "urn:uuid:1234", "Medication/", "http://x/Medication/med-1/_history/2"),
]
DATES = maybe(
    st.one_of(
        st.sampled_from(
            ["2026-11-01", "2026-10", "2026", "2026-11-20T08:30:00Z", "2026-11-23T23:59:59+05:30"]
        ),
        st.dates().map(str),
        st.datetimes().map(lambda d: d.isoformat()),
        ODD_TEXT,
    )
)
STATUSES = maybe(
    st.sampled_from(
        ["final", "amended", "corrected", "preliminary", "active", "on-hold", "completed"]
    )
)
CODINGS = maybe(
    st.lists(
        maybe(
            st.fixed_dictionaries(
                {
                    "system": maybe(
                        st.sampled_from(
                            [LOINC, ICD10, SCT, RXNORM, "urn:oid:2.16.840.1.113883.6.1"]
                        )
                    ),
                    "code": maybe(st.sampled_from(CODES)),
                },
                optional={"display": maybe(st.text(max_size=30))},
            )
        ),
        max_size=3,
    )
)
CONCEPTS = maybe(
    st.fixed_dictionaries({"coding": CODINGS}, optional={"text": maybe(st.text(max_size=40))})
)
UNITS = maybe(
    st.sampled_from(
        ["mg/dL", "mmol/L", "mEq/L", "g/dL", "g/L", "umol/L", "mg/dl", "%", "kg", "[iU]/L"]
    )
)
QUANTITIES = maybe(
    st.fixed_dictionaries(
        {"value": maybe(st.floats(allow_nan=False, allow_infinity=False) | st.integers())},
        optional={
            "unit": UNITS,
            "code": UNITS,
            "system": maybe(st.just(UCUM)),
            "comparator": maybe(st.just(">")),
        },
    )
)
REFERENCE_RANGES = maybe(
    st.lists(maybe(st.fixed_dictionaries({}, optional={"low": QUANTITIES, "high": QUANTITIES})))
)
REFERENCES = maybe(
    st.fixed_dictionaries(
        {"reference": maybe(st.sampled_from(REFERENCE_TARGETS))},
        optional={"display": maybe(st.text(max_size=30))},
    )
)
IDS = maybe(
    st.sampled_from(["a", "m-1", "a b", "x" * 80, "", "Medication/1", "ü", "1.2.3"])
    | st.text(max_size=8)
)
SUBJECTS = st.one_of(st.just({"reference": f"Patient/{PATIENT}"}), REFERENCES)


def resource(
    resource_type: str, **fields: st.SearchStrategy[Any]
) -> st.SearchStrategy[dict[str, Any]]:
    """A resource of `resource_type` whose elements are drawn (each one may be missing)."""
    return st.fixed_dictionaries(
        {"resourceType": st.just(resource_type)},
        optional={"id": IDS, "subject": SUBJECTS, **fields},
    )


OBSERVATIONS = resource(
    "Observation",
    status=STATUSES,
    code=CONCEPTS,
    effectiveDateTime=DATES,
    effectivePeriod=maybe(st.fixed_dictionaries({}, optional={"start": DATES, "end": DATES})),
    issued=DATES,
    valueQuantity=QUANTITIES,
    valueString=maybe(
        st.sampled_from(["epileptiform discharges", "no epileptiform activity", "abnormal"])
    ),
    valueCodeableConcept=CONCEPTS,
    interpretation=maybe(st.lists(CONCEPTS, max_size=2)),
    referenceRange=REFERENCE_RANGES,
)
CONDITIONS = resource(
    "Condition",
    code=CONCEPTS,
    clinicalStatus=maybe(st.just({"coding": [{"system": CLINICAL, "code": "active"}]})) | CONCEPTS,
    verificationStatus=CONCEPTS,
    onsetDateTime=DATES,
    recordedDate=DATES,
    onsetPeriod=maybe(st.fixed_dictionaries({"start": DATES})),
)
MEDICATION_REQUESTS = resource(
    "MedicationRequest",
    status=STATUSES,
    medicationCodeableConcept=CONCEPTS,
    medicationReference=REFERENCES,
    contained=maybe(
        st.lists(
            maybe(
                st.fixed_dictionaries(
                    {"resourceType": st.just("Medication"), "id": IDS, "code": CONCEPTS}
                )
            )
        )
    ),
    authoredOn=DATES,
)
MEDICATIONS = resource("Medication", code=CONCEPTS)
REPORTS = resource(
    "DiagnosticReport",
    status=STATUSES,
    code=CONCEPTS,
    effectiveDateTime=DATES,
    conclusion=maybe(
        st.sampled_from(["Epileptiform discharges.", "No epileptiform activity.", "Abnormal EEG"])
    ),
    conclusionCode=maybe(st.lists(CONCEPTS, max_size=2)),
    interpretation=maybe(st.lists(CONCEPTS, max_size=2)),
)
PROCEDURES = resource("Procedure", status=STATUSES, code=CONCEPTS, performedDateTime=DATES)
PATIENTS = resource("Patient", birthDate=DATES)
RESOURCES = st.one_of(
    OBSERVATIONS, CONDITIONS, MEDICATION_REQUESTS, MEDICATIONS, REPORTS, PROCEDURES, PATIENTS
)
ENTRIES = st.one_of(
    st.fixed_dictionaries(
        {"resource": RESOURCES}, optional={"fullUrl": maybe(st.just("urn:uuid:1"))}
    ),
    st.fixed_dictionaries({"resource": RESOURCES}),
    st.fixed_dictionaries(
        {"resource": st.fixed_dictionaries({"id": IDS, "code": CONCEPTS})}
    ),  # no resourceType
    JUNK,  # entries that are not objects, or objects without a resource
)


@st.composite
def junk_bundles(draw: st.DrawFn, keep: list[Any]) -> Any:
    """A Bundle holding the `keep` resources (so the patient stays in scope) among junk entries."""
    entries = [{"resource": r} for r in keep] + draw(st.lists(ENTRIES, max_size=6))
    shuffled = draw(st.permutations(entries))
    value = {"resourceType": "Bundle", "type": "searchset", "entry": shuffled}
    if draw(st.integers(0, 9)) == 0:
        value["entry"] = draw(JUNK)  # the entry array itself is junk
    if draw(st.integers(0, 9)) == 0:
        value["link"] = draw(
            maybe(st.just([{"relation": "next", "url": "https://elsewhere.example/p2"}]))
        )
    return value


@st.composite
def junk_prefetch_requests(draw: st.DrawFn) -> Any:
    """The baseline with every prefetch Bundle refilled with drawn (often malformed) resources."""
    body = in_scope()
    prefetch = body["prefetch"]
    infarct, cramps = (
        prefetch["conditions"]["entry"][0]["resource"],
        prefetch["conditions"]["entry"][1]["resource"],
    )
    prefetch["conditions"] = draw(junk_bundles([infarct, cramps]))
    prefetch["observations"] = draw(junk_bundles([]))
    prefetch["medications"] = draw(junk_bundles([]))
    prefetch["reports"] = draw(junk_bundles([]))
    prefetch["procedures"] = draw(st.one_of(st.none(), junk_bundles([])))
    if draw(st.booleans()):
        prefetch["patient"] = draw(PATIENTS)
    return body


# --- properties ----------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(body=JSON_VALUES)
@example(body=None)
@example(body=[])
@example(body={"hook": "patient-view"})
def test_any_json_body_gets_a_json_answer(client: FlaskClient, body: Any) -> None:
    check_answer(post_json(client, body))


@PROPERTY_SETTINGS
@given(
    data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/fhir+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
        ]
    ),
)
def test_any_bytes_get_a_json_answer(client: FlaskClient, data: bytes, content_type: str) -> None:
    check_answer(post_raw(client, data, content_type))


@PROPERTY_SETTINGS
@given(body=mutated_requests())
def test_mutated_requests_never_crash(client: FlaskClient, body: Any) -> None:
    check_answer(post_json(client, body))


@PROPERTY_SETTINGS
@given(body=junk_prefetch_requests())
def test_junk_in_prefetch_bundles_never_crashes(client: FlaskClient, body: Any) -> None:
    check_answer(post_json(client, body))


def order_request(hook: str, drafts: list[Any], selections: list[str]) -> dict[str, Any]:
    """An order-select / order-sign call about `drafts` for the baseline's 76-year-old patient."""
    body = in_scope()
    body["hook"] = hook
    body["context"]["draftOrders"] = searchset(*drafts)
    if hook == "order-select":
        body["context"]["selections"] = selections
    del body["prefetch"]["reports"], body["prefetch"]["procedures"]
    return body


DRAFT = medication_request("d-1", "197446", "carisoprodol 350 MG Oral Tablet")


def test_the_order_baseline_raises_cards(client: FlaskClient) -> None:
    for hook in ("order-select", "order-sign"):
        draft = {**DRAFT, "status": "draft"}
        body = order_request(hook, [draft], ["MedicationRequest/d-1"])
        answer = check_answer(post_json(client, body, ORDER_URL.format(hook)))
        assert answer["cards"], hook


@st.composite
def junk_order_requests(draw: st.DrawFn) -> Any:
    """An order-select or order-sign call whose draft orders and prefetch Bundles are drawn."""
    drafts = draw(
        st.lists(
            st.one_of(st.just({**DRAFT, "status": "draft"}), MEDICATION_REQUESTS, RESOURCES),
            min_size=1,
            max_size=4,
        )
    )
    ids = [d.get("id") for d in drafts if isinstance(d.get("id"), str)]
    refs = [f"{d['resourceType']}/{i}" for d, i in zip(drafts, ids, strict=False)] + ["X/y"]
    selections = draw(st.lists(st.sampled_from(refs), min_size=1, max_size=2))
    body = order_request(draw(st.sampled_from(["order-select", "order-sign"])), drafts, selections)
    body["prefetch"]["medications"] = draw(junk_bundles([]))
    body["prefetch"]["observations"] = draw(junk_bundles([]))
    return body


@PROPERTY_SETTINGS
@given(body=junk_order_requests())
def test_junk_draft_orders_never_crash(client: FlaskClient, body: Any) -> None:
    check_answer(post_json(client, body, ORDER_URL.format(body["hook"])))


# --- crashes these properties found, kept as explicit regressions --------------------------------


def _set(path: str, value: Any) -> dict[str, Any]:
    """in_scope() with the element at a dotted path (list indices as numbers) set to value."""
    body = in_scope()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = body
    for step in parents:
        target = target[step]
    target[last] = copy.deepcopy(value)
    return body


def _with_medication(**fields: Any) -> dict[str, Any]:
    quinine = {**medication_request("m-q", "9071", "quinine sulfate"), **fields}
    return _set("prefetch.medications", searchset(quinine))


OBS = "prefetch.observations.entry.0.resource"
REGRESSIONS: list[tuple[str, Any]] = [
    ("coding-is-a-number", _set("prefetch.conditions.entry.0.resource.code", {"coding": 5})),
    ("bundle-entry-is-a-number", _set("prefetch.observations.entry", 5)),
    ("observation-status-is-a-list", _set(f"{OBS}.status", ["final"])),
    (
        "medication-status-is-a-list",
        _set("prefetch.medications.entry.0.resource.status", ["active"]),
    ),
    ("reference-range-is-a-number", _set(f"{OBS}.referenceRange", 5)),
    ("interpretation-is-a-number", _set("prefetch.reports.entry.0.resource.interpretation", 5)),
    (
        "contained-is-a-number",
        _with_medication(contained=5, medicationReference={"reference": "#x"}),
    ),
    ("quantity-value-beyond-float", _set(f"{OBS}.valueQuantity.value", 10**400)),
    ("unit-code-beyond-float", _set(f"{OBS}.valueQuantity", {"value": 1, "code": "1" * 400})),
    ("delete-action-on-order-without-id", _with_medication(id=None)),
    ("delete-action-on-order-with-invalid-id", _with_medication(id="a b")),
]


@pytest.mark.parametrize(("name", "body"), REGRESSIONS, ids=[name for name, _ in REGRESSIONS])
def test_known_crashers_are_answered(client: FlaskClient, name: str, body: Any) -> None:
    check_answer(post_json(client, _drop_nones(body)))


@pytest.mark.parametrize(
    "raw",
    ["[" * 1000 + "]" * 1000, "[" * 100_000, '{"a":' * 1000 + "1" + "}" * 1000],
    ids=["valid-depth-1000", "unclosed-depth-100000", "objects-depth-1000"],
)
@pytest.mark.parametrize("url", [URL, f"{URL}/feedback"], ids=["call", "feedback"])
def test_deeply_nested_json_is_a_400(client: FlaskClient, raw: str, url: str) -> None:
    response = post_raw(client, raw, url=url)
    check_answer(response)
    assert response.status_code == 400
