"""The CDS Hooks JSON Schemas and their application (cds_service.protocol.schemas)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from cds_service.protocol.schemas import (
    SCHEMA_NAMES,
    SchemaIssue,
    _fast_validator,
    _validator,
    context_schema_for,
    validate,
)

Json = Any
Path = tuple[str | int, ...]

_DELETE = object()


def variant(base: Json, *edits: tuple[Path, object]) -> Json:
    """A deep copy of base with each (path, value) set, or deleted when value is _DELETE."""
    document = copy.deepcopy(base)
    for path, value in edits:
        target = document
        for step in path[:-1]:
            target = target[step]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return document


# --- documents taken from the CDS Hooks 2.0 specification's examples -------------------------

SPEC_REQUEST = {  # §Calling a CDS Service, Example
    "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
    "fhirServer": "http://hooks.smarthealthit.org:9080",
    "hook": "patient-view",
    "fhirAuthorization": {
        "access_token": "some-opaque-fhir-access-token",
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read",
        "subject": "cds-service4",
    },
    "context": {
        "userId": "Practitioner/example",
        "patientId": "1288992",
        "encounterId": "89284",
    },
    "prefetch": {
        "patientToGreet": {
            "resourceType": "Patient",
            "gender": "male",
            "birthDate": "1925-12-23",
            "id": "1288992",
            "active": True,
        }
    },
}

SPEC_RESPONSE = {  # §CDS Service Response, Example response
    "cards": [
        {
            "uuid": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "summary": "Example Card",
            "indicator": "info",
            "detail": "This is an example card.",
            "source": {
                "label": "Static CDS Service Example",
                "url": "https://example.com",
                "icon": "https://example.com/img/icon-100px.png",
            },
            "links": [
                {"label": "Google", "url": "https://google.com", "type": "absolute"},
                {"label": "Github", "url": "https://github.com", "type": "absolute"},
                {
                    "label": "SMART Example App",
                    "url": "https://smart.example.com/launch",
                    "type": "smart",
                    "appContext": '{"session":3456356,"settings":{"module":4235}}',
                },
            ],
        },
        {
            "summary": "Another card",
            "indicator": "warning",
            "source": {"label": "Static CDS Service Example"},
            "overrideReasons": [
                {
                    "code": "reason-code-provided-by-service",
                    "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
                    "display": "Patient refused",
                },
                {
                    "code": "12354",
                    "system": "http://example.org/cds-services/fhir/CodeSystem/override-reasons",
                    "display": "Contraindicated",
                },
            ],
        },
    ]
}

SPEC_DISCOVERY = {  # §Discovery, Discovery Example
    "services": [
        {
            "hook": "patient-view",
            "title": "Static CDS Service Example",
            "description": "An example of a CDS Service that returns a static set of cards",
            "id": "static-patient-greeter",
            "prefetch": {"patientToGreet": "Patient/{{context.patientId}}"},
        },
        {
            "hook": "order-select",
            "title": "Order Echo CDS Service",
            "description": "An example of a CDS Service that simply echoes the order(s)"
            " being placed",
            "id": "order-echo",
            "prefetch": {
                "patient": "Patient/{{context.patientId}}",
                "medications": "MedicationRequest?patient={{context.patientId}}",
            },
        },
        {
            "hook": "order-sign",
            "title": "Pharmacogenomics CDS Service",
            "description": "An example of a more advanced, precision medicine CDS Service",
            "id": "pgx-on-order-sign",
            "usageRequirements": "Note: functionality of this CDS Service is degraded without"
            " access to a FHIR Restful API as part of CDS recommendation generation.",
        },
    ]
}

SPEC_FEEDBACK_ACCEPTED = {  # §Feedback, Example suggestion accepted
    "feedback": [
        {
            "card": "4e0a3a1e-3283-4575-ab82-028d55fe2719",
            "outcome": "accepted",
            "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
            "outcomeTimestamp": "2021-12-11T10:05:31Z",
        }
    ]
}

SPEC_FEEDBACK_OVERRIDDEN = {  # §Feedback, Example overridden guidance without overrideReason
    "feedback": [
        {
            "card": "f6b95768-b1c8-40dc-8385-bf3504b82ffb",
            "outcome": "overridden",
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        }
    ]
}

SPEC_FEEDBACK_OVERRIDE_REASON = {  # §Feedback, Example overridden guidance with overrideReason
    "feedback": [
        {
            "card": "9368d37b-283f-44a0-93ea-547cebab93ed",
            "outcome": "overridden",
            "overrideReason": {
                "reason": {
                    "code": "d7ecf885",
                    "system": "https://example.com/cds-hooks/override-reason-system",
                },
                "userComment": "A comment entered by the clinician.",
            },
            "outcomeTimestamp": "2020-12-11T00:00:00Z",
        }
    ]
}

# --- documents of this project's own making ---------------------------------------------------

MINIMAL_REQUEST = {
    "hook": "patient-view",
    "hookInstance": "0b5f8b84-0a2f-4a7b-9a43-3f1f1c2e8d10",
    "context": {"userId": "Practitioner/p1", "patientId": "pat-1"},
}

PATIENT_VIEW_CONTEXT = SPEC_REQUEST["context"]

MEDICATION_REQUEST = {
    "resourceType": "MedicationRequest",
    "id": "rx-1",
    "status": "draft",
    "intent": "order",
    "subject": {"reference": "Patient/pat-1"},
    "medicationCodeableConcept": {
        "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1000126"}]
    },
}

DRAFT_ORDERS = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"resource": MEDICATION_REQUEST},
        {"resource": {**MEDICATION_REQUEST, "id": "rx-2"}},
    ],
}

ORDER_SELECT_CONTEXT = {
    "userId": "PractitionerRole/role-1",
    "patientId": "pat-1",
    "encounterId": "enc.1",
    "selections": ["MedicationRequest/rx-2"],
    "draftOrders": DRAFT_ORDERS,
}

ORDER_SIGN_CONTEXT = {
    "userId": "Practitioner/p1",
    "patientId": "pat-1",
    "draftOrders": DRAFT_ORDERS,
}

CARD = {
    "uuid": "6f8b4b4e-34f7-4b7b-8b1e-5cf3a4b6d2a1",
    "summary": "Consider stopping the drug",
    "detail": "**Why**: it can cause leg cramps.",
    "indicator": "warning",
    "source": {
        "label": "Example guideline",
        "url": "https://example.org/guideline",
        "topic": {"system": "http://example.org/topics", "code": "cramps"},
    },
    "selectionBehavior": "at-most-one",
    "suggestions": [
        {
            "label": "Stop the order",
            "uuid": "e56e1945-20b3-4393-8503-a1a20fd73152",
            "isRecommended": True,
            "actions": [
                {
                    "type": "delete",
                    "description": "Remove the order",
                    "resourceId": "MedicationRequest/rx-1",
                }
            ],
        },
        {
            "label": "Halve the dose",
            "isRecommended": False,
            "actions": [
                {
                    "type": "update",
                    "description": "Update the order",
                    "resource": MEDICATION_REQUEST,
                },
                {
                    "type": "create",
                    "description": "Record why",
                    "resource": {"resourceType": "Communication", "status": "completed"},
                },
            ],
        },
    ],
    "overrideReasons": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
            "code": "cds-not-applicable",
            "display": "Not applicable",
        }
    ],
    "links": [
        {
            "label": "Open the app",
            "url": "https://app.example.org/launch",
            "type": "smart",
            "appContext": "rx-1",
            "autolaunchable": False,
        }
    ],
    "extension": {"org.example.cds.rule": "R-17"},
}

RESPONSE = {"cards": [CARD]}

C0: Path = ("cards", 0)
ACTION0: Path = (*C0, "suggestions", 0, "actions", 0)
ACTION1: Path = (*C0, "suggestions", 1, "actions", 0)
FB0: Path = ("feedback", 0)
SERVICE0: Path = ("services", 0)

VALID: list[Any] = [
    # request
    pytest.param("request", SPEC_REQUEST, id="request-spec-example"),
    pytest.param("request", MINIMAL_REQUEST, id="request-minimal"),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("hookInstance",), "D1577C69-DFBE-44AD-BA6D-3E05E953B2EA")),
        id="request-uppercase-uuid",
    ),
    pytest.param(
        "request",
        variant(
            MINIMAL_REQUEST,
            (("unknownField",), {"anything": None}),
            (("extension",), {"com.example.flag": True}),
        ),
        id="request-unknown-fields-tolerated",
    ),
    pytest.param(
        "request",
        variant(
            SPEC_REQUEST,
            (("prefetch", "missing"), None),
            (
                ("prefetch", "failed"),
                {"resourceType": "OperationOutcome", "issue": [{"severity": "error"}]},
            ),
            (("prefetch", "search"), {"resourceType": "Bundle", "type": "searchset"}),
        ),
        id="request-prefetch-null-outcome-bundle",
    ),
    pytest.param(
        "request",
        variant(
            SPEC_REQUEST,
            (("fhirAuthorization", "patient"), "1288992"),
            (("fhirAuthorization", "scope"), "patient/Patient.rs"),
            (("fhirServer",), "https://ehr.example.org/fhir/r4"),
        ),
        id="request-authorization-with-patient",
    ),
    # hook contexts
    pytest.param("context-patient-view", PATIENT_VIEW_CONTEXT, id="patient-view-spec-example"),
    pytest.param(
        "context-patient-view",
        {"userId": "Patient/pat-1", "patientId": "pat-1"},
        id="patient-view-patient-user",
    ),
    pytest.param(
        "context-patient-view",
        {"userId": "RelatedPerson/rp.1", "patientId": "A" * 64, "other": 1},
        id="patient-view-related-person-64-char-id-unknown-field",
    ),
    pytest.param(
        "context-patient-view",
        {"userId": "PractitionerRole/r1", "patientId": "p", "encounterId": "e-1.2"},
        id="patient-view-practitioner-role",
    ),
    pytest.param("context-order-select", ORDER_SELECT_CONTEXT, id="order-select"),
    pytest.param("context-order-sign", ORDER_SIGN_CONTEXT, id="order-sign"),
    pytest.param(
        "context-order-sign",
        variant(ORDER_SIGN_CONTEXT, (("draftOrders", "entry", 0, "resource", "status"), "active")),
        id="order-sign-re-sign-active",
    ),
    # response
    pytest.param("response", SPEC_RESPONSE, id="response-spec-example"),
    pytest.param("response", {"cards": []}, id="response-no-guidance"),
    pytest.param("response", RESPONSE, id="response-full-card"),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "summary"), "x" * 139)),
        id="response-summary-139-characters",
    ),
    pytest.param(
        "response",
        variant(
            RESPONSE,
            ((*C0, "selectionBehavior"), "any"),
            ((*C0, "suggestions", 1, "isRecommended"), True),
        ),
        id="response-any-with-two-recommended",
    ),
    pytest.param(
        "response",
        {
            "cards": [],
            "systemActions": [
                {
                    "type": "update",
                    "description": "Record the rating",
                    "resource": MEDICATION_REQUEST,
                }
            ],
        },
        id="response-system-actions",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 0, "actions"), _DELETE)),
        id="response-suggestion-without-actions",
    ),
    # discovery
    pytest.param("discovery", SPEC_DISCOVERY, id="discovery-spec-example"),
    pytest.param("discovery", {"services": []}, id="discovery-empty"),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "extension"), {"org.example.tier": "gold"})),
        id="discovery-extension",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "id"), "Cramps_after.stroke-1")),
        id="discovery-id-characters",
    ),
    # feedback
    pytest.param("feedback", SPEC_FEEDBACK_ACCEPTED, id="feedback-spec-accepted"),
    pytest.param("feedback", SPEC_FEEDBACK_OVERRIDDEN, id="feedback-spec-overridden"),
    pytest.param("feedback", SPEC_FEEDBACK_OVERRIDE_REASON, id="feedback-spec-override-reason"),
    pytest.param(
        "feedback",
        {
            "feedback": [
                *SPEC_FEEDBACK_ACCEPTED["feedback"],
                *SPEC_FEEDBACK_OVERRIDDEN["feedback"],
                *SPEC_FEEDBACK_OVERRIDE_REASON["feedback"],
            ],
            "unknown": "tolerated",
        },
        id="feedback-batch",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDE_REASON, ((*FB0, "overrideReason", "reason"), _DELETE)),
        id="feedback-comment-only",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDE_REASON, ((*FB0, "overrideReason", "userComment"), _DELETE)),
        id="feedback-reason-only",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2020-12-11T01:02:03.5+02:00")
        ),
        id="feedback-timestamp-offset-fraction",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2016-12-31T23:59:60Z")),
        id="feedback-timestamp-leap-second",
    ),
]


@pytest.mark.parametrize(("schema", "document"), VALID)
def test_valid_documents(schema: str, document: Json) -> None:
    assert validate(document, schema) == []


# Each invalid case: the schema, the document, and the exact issues expected, as (path, a
# fragment of the message), in the order validate() reports them.
INVALID: list[Any] = [
    # request
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hookInstance",), _DELETE)),
        [("$", "'hookInstance' is a required property")],
        id="request-no-hookInstance",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hook",), _DELETE)),
        [("$", "'hook'")],
        id="request-no-hook",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("context",), _DELETE)),
        [("$", "'context'")],
        id="request-no-context",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hook",), "")),
        [("$.hook", "empty")],
        id="request-empty-hook",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hookInstance",), "not-a-uuid")),
        [("$.hookInstance", "not a valid uuid")],
        id="request-bad-uuid",
    ),
    pytest.param(
        "request",
        variant(
            MINIMAL_REQUEST, (("hookInstance",), "urn:uuid:d1577c69-dfbe-44ad-ba6d-3e05e953b2ea")
        ),
        [("$.hookInstance", "uuid")],
        id="request-uuid-with-urn-prefix",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hookInstance",), "d1577c69dfbe44adba6d3e05e953b2ea")),
        [("$.hookInstance", "uuid")],
        id="request-uuid-not-canonical",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("hookInstance",), 42)),
        [("$.hookInstance", "not of type 'string'")],
        id="request-uuid-not-string",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirServer",), "hooks.smarthealthit.org/fhir")),
        [("$.fhirServer", "not a valid uri")],
        id="request-fhirServer-relative",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirServer",), "https://ehr example.org/fhir")),
        [("$.fhirServer", "uri")],
        id="request-fhirServer-with-space",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirServer",), _DELETE)),
        [("$", "'fhirServer' is a dependency of 'fhirAuthorization'")],
        id="request-cds-r-1-authorization-without-server",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirAuthorization", "token_type"), "MAC")),
        [("$.fhirAuthorization.token_type", '"MAC" must be "Bearer"')],
        id="request-token-type-not-bearer",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirAuthorization", "expires_in"), "300")),
        [("$.fhirAuthorization.expires_in", "not of type 'integer'")],
        id="request-expires-in-string",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirAuthorization", "expires_in"), -1)),
        [("$.fhirAuthorization.expires_in", "less than 0")],
        id="request-expires-in-negative",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirAuthorization", "scope"), _DELETE)),
        [("$.fhirAuthorization", "'scope' is a required property")],
        id="request-authorization-no-scope",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("fhirAuthorization", "access_token"), None)),
        [("$.fhirAuthorization.access_token", "null is not of type 'string'")],
        id="request-null-access-token",
    ),
    pytest.param(
        "request",
        variant(MINIMAL_REQUEST, (("context",), ["Patient/1"])),
        [("$.context", "not of type 'object'")],
        id="request-context-not-object",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("prefetch",), {"patient": "Patient/1288992"})),
        [("$.prefetch.patient", "not of type 'object' or 'null'")],
        id="request-prefetch-value-string",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("prefetch", "patientToGreet", "resourceType"), _DELETE)),
        [("$.prefetch.patientToGreet", "'resourceType' is a required property")],
        id="request-prefetch-value-not-resource",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("prefetch",), [])),
        [("$.prefetch", "not of type 'object'")],
        id="request-prefetch-not-object",
    ),
    pytest.param(
        "request",
        variant(SPEC_REQUEST, (("prefetch",), {"patient-data": 7})),
        [("$.prefetch['patient-data']", "7 is not of type")],
        id="request-prefetch-key-needs-brackets",
    ),
    # patient-view context
    pytest.param(
        "context-patient-view",
        {"patientId": "1288992"},
        [("$", "'userId' is a required property")],
        id="patient-view-no-user",
    ),
    pytest.param(
        "context-patient-view",
        {"userId": "Practitioner/example"},
        [("$", "'patientId' is a required property")],
        id="patient-view-no-patient",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("userId",), "Device/d1")),
        [("$.userId", "does not match")],
        id="patient-view-user-device",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("userId",), "example")),
        [("$.userId", "does not match")],
        id="patient-view-user-no-type",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("userId",), "Practitioner/" + "a" * 65)),
        [("$.userId", "does not match")],
        id="patient-view-user-id-too-long",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("patientId",), "Patient/1288992")),
        [("$.patientId", "does not match")],
        id="patient-view-patient-reference-not-id",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("patientId",), "")),
        [("$.patientId", "does not match")],
        id="patient-view-patient-empty",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("patientId",), 1288992)),
        [("$.patientId", "not of type 'string'")],
        id="patient-view-patient-number",
    ),
    pytest.param(
        "context-patient-view",
        variant(PATIENT_VIEW_CONTEXT, (("encounterId",), "89 284")),
        [("$.encounterId", "does not match")],
        id="patient-view-bad-encounter",
    ),
    # order-select context
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("selections",), _DELETE)),
        [("$", "'selections' is a required property")],
        id="order-select-no-selections",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("selections",), [])),
        [("$.selections", "empty array")],
        id="order-select-empty-selections",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("selections",), ["MedicationRequest/rx-1", "rx-2"])),
        [("$.selections[1]", "does not match")],
        id="order-select-selection-not-reference",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("draftOrders",), _DELETE)),
        [("$", "'draftOrders' is a required property")],
        id="order-select-no-draft-orders",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("draftOrders", "resourceType"), "MedicationRequest")),
        [("$.draftOrders.resourceType", 'must be "Bundle"')],
        id="order-select-draft-orders-not-bundle",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("draftOrders", "entry"), [])),
        [("$.draftOrders.entry", "empty array")],
        id="order-select-draft-orders-empty",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("draftOrders", "entry", 1, "resource"), {"id": "rx-2"})),
        [("$.draftOrders.entry[1].resource", "'resourceType' is a required property")],
        id="order-select-entry-without-resource-type",
    ),
    pytest.param(
        "context-order-select",
        variant(ORDER_SELECT_CONTEXT, (("userId",), "Patient/pat-1")),
        [("$.userId", "does not match")],
        id="order-select-patient-user",
    ),
    # order-sign context
    pytest.param(
        "context-order-sign",
        variant(ORDER_SIGN_CONTEXT, (("draftOrders",), _DELETE)),
        [("$", "'draftOrders' is a required property")],
        id="order-sign-no-draft-orders",
    ),
    pytest.param(
        "context-order-sign",
        variant(ORDER_SIGN_CONTEXT, (("draftOrders", "entry", 0), {"fullUrl": "urn:x"})),
        [("$.draftOrders.entry[0]", "'resource' is a required property")],
        id="order-sign-entry-without-resource",
    ),
    pytest.param(
        "context-order-sign",
        variant(ORDER_SIGN_CONTEXT, (("userId",), "RelatedPerson/rp1")),
        [("$.userId", "does not match")],
        id="order-sign-related-person-user",
    ),
    pytest.param(
        "context-order-sign",
        variant(ORDER_SIGN_CONTEXT, (("patientId",), _DELETE)),
        [("$", "'patientId' is a required property")],
        id="order-sign-no-patient",
    ),
    # response: envelope
    pytest.param("response", {}, [("$", "'cards' is a required property")], id="response-no-cards"),
    pytest.param(
        "response",
        {"cards": None},
        [("$.cards", "null is not of type 'array'")],
        id="response-null-cards",
    ),
    pytest.param(
        "response",
        {"cards": [], "systemActions": []},
        [("$.systemActions", "empty array")],
        id="response-empty-system-actions",
    ),
    pytest.param(
        "response",
        {"cards": [], "systemActions": [{"type": "update", "resource": MEDICATION_REQUEST}]},
        [("$.systemActions[0]", "'description' is a required property")],
        id="response-system-action-without-description",
    ),
    pytest.param(
        "response",
        {"cards": [], "debug": True},
        [("$", "'debug' was unexpected")],
        id="response-unknown-member",
    ),
    pytest.param(
        "response",
        {"cards": [None]},
        [("$.cards[0]", "null is not of type 'object'")],
        id="response-null-card",
    ),
    # response: card
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "summary"), "x" * 140)),
        [("$.cards[0].summary", "140 characters; at most 139")],
        id="response-summary-140-characters",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "summary"), "")),
        [("$.cards[0].summary", "empty string")],
        id="response-empty-summary",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "detail"), "")),
        [("$.cards[0].detail", "empty string")],
        id="response-empty-detail",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "detail"), None)),
        [("$.cards[0].detail", "null is not of type 'string'")],
        id="response-null-detail",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links"), [])),
        [("$.cards[0].links", "empty array")],
        id="response-empty-links",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "indicator"), "hard-stop")),
        [("$.cards[0].indicator", '"hard-stop" is not one of ["info", "warning", "critical"]')],
        id="response-indicator-hard-stop",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "source"), _DELETE)),
        [("$.cards[0]", "'source' is a required property")],
        id="response-no-source",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "uuid"), "card-1")),
        [("$.cards[0].uuid", "not a valid uuid")],
        id="response-card-bad-uuid",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "title"), "Cramps")),
        [("$.cards[0]", "'title' was unexpected")],
        id="response-card-unknown-member",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "extension"), {})),
        [("$.cards[0].extension", "empty object")],
        id="response-empty-extension",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "extension"), {"org.example.x": None})),
        [("$.cards[0].extension['org.example.x']", "null is not of type")],
        id="response-null-in-extension",
    ),
    # response: source and codings
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "source", "label"), _DELETE)),
        [("$.cards[0].source", "'label' is a required property")],
        id="response-source-no-label",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "source", "url"), "/guideline")),
        [("$.cards[0].source.url", "not a valid uri")],
        id="response-source-relative-url",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "source", "icon"), "https://")),
        [("$.cards[0].source.icon", "not a valid uri")],
        id="response-source-icon-no-host",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "source", "topic", "system"), _DELETE)),
        [("$.cards[0].source.topic", "'system' is a required property")],
        id="response-topic-no-system",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "overrideReasons", 0, "display"), _DELETE)),
        [("$.cards[0].overrideReasons[0]", "'display' is a required property")],
        id="response-cds-resp-4-override-reason-no-display",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "overrideReasons"), [])),
        [("$.cards[0].overrideReasons", "empty array")],
        id="response-empty-override-reasons",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "overrideReasons", 0, "version"), "1")),
        [("$.cards[0].overrideReasons[0]", "'version' was unexpected")],
        id="response-coding-unknown-member",
    ),
    # response: suggestions
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "selectionBehavior"), _DELETE)),
        [("$.cards[0]", "'selectionBehavior' is a dependency of 'suggestions'")],
        id="response-cds-resp-6-suggestions-without-selection-behavior",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "selectionBehavior"), "all")),
        [("$.cards[0].selectionBehavior", "is not one of")],
        id="response-selection-behavior-all",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 1, "isRecommended"), True)),
        [("$.cards[0].suggestions", "at most 1 item may be recommended")],
        id="response-cds-resp-1-two-recommended-at-most-one",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions"), [])),
        [("$.cards[0].suggestions", "empty array")],
        id="response-empty-suggestions",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 0, "label"), _DELETE)),
        [("$.cards[0].suggestions[0]", "'label' is a required property")],
        id="response-suggestion-no-label",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 0, "actions"), [])),
        [("$.cards[0].suggestions[0].actions", "empty array")],
        id="response-suggestion-empty-actions",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 0, "isRecommended"), "yes")),
        [("$.cards[0].suggestions[0].isRecommended", "not of type 'boolean'")],
        id="response-is-recommended-string",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 0, "uuid"), "")),
        [("$.cards[0].suggestions[0].uuid", "not a valid uuid")],
        id="response-suggestion-empty-uuid",
    ),
    # response: actions
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION0, "description"), _DELETE)),
        [("$.cards[0].suggestions[0].actions[0]", "'description' is a required property")],
        id="response-cds-resp-5-action-without-description",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION0, "type"), "remove")),
        [("$.cards[0].suggestions[0].actions[0].type", "is not one of")],
        id="response-action-bad-type",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION0, "resourceId"), _DELETE)),
        [("$.cards[0].suggestions[0].actions[0]", "'resourceId' is a required property")],
        id="response-cds-resp-2-delete-without-resource-id",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION0, "resource"), MEDICATION_REQUEST)),
        [("$.cards[0].suggestions[0].actions[0].resource", "cds-resp-2")],
        id="response-cds-resp-2-delete-with-resource",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION0, "resourceId"), "rx-1")),
        [("$.cards[0].suggestions[0].actions[0].resourceId", "does not match")],
        id="response-resource-id-not-relative-reference",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION1, "resource"), _DELETE)),
        [("$.cards[0].suggestions[1].actions[0]", "'resource' is a required property")],
        id="response-update-without-resource",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "suggestions", 1, "actions", 1, "resource"), _DELETE)),
        [("$.cards[0].suggestions[1].actions[1]", "'resource' is a required property")],
        id="response-create-without-resource",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION1, "resource", "resourceType"), _DELETE)),
        [("$.cards[0].suggestions[1].actions[0].resource", "'resourceType' is a required")],
        id="response-resource-without-resource-type",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION1, "resource", "note"), [])),
        [("$.cards[0].suggestions[1].actions[0].resource.note", "empty array")],
        id="response-empty-array-in-resource",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*ACTION1, "resource", "subject", "display"), None)),
        [("$.cards[0].suggestions[1].actions[0].resource.subject.display", "null is not of type")],
        id="response-null-in-resource",
    ),
    # response: links
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links", 0, "type"), "absolute")),
        [("$.cards[0].links[0].appContext", "cds-resp-3")],
        id="response-cds-resp-3-app-context-on-absolute-link",
    ),
    pytest.param(
        "response",
        variant(
            RESPONSE,
            ((*C0, "links", 0, "type"), "relative"),
            ((*C0, "links", 0, "appContext"), _DELETE),
        ),
        [("$.cards[0].links[0].type", "is not one of")],
        id="response-link-bad-type",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links", 0, "url"), _DELETE)),
        [("$.cards[0].links[0]", "'url' is a required property")],
        id="response-link-no-url",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links", 0, "url"), "launch.html")),
        [("$.cards[0].links[0].url", "not a valid uri")],
        id="response-link-relative-url",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links", 0, "autolaunchable"), "true")),
        [("$.cards[0].links[0].autolaunchable", "not of type 'boolean'")],
        id="response-autolaunchable-string",
    ),
    pytest.param(
        "response",
        variant(RESPONSE, ((*C0, "links", 0, "appContext"), "")),
        [("$.cards[0].links[0].appContext", "empty string")],
        id="response-empty-app-context",
    ),
    # discovery
    pytest.param(
        "discovery", {}, [("$", "'services' is a required property")], id="discovery-no-services"
    ),
    pytest.param(
        "discovery",
        {"services": None},
        [("$.services", "null is not of type 'array'")],
        id="discovery-null-services",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "description"), _DELETE)),
        [("$.services[0]", "'description' is a required property")],
        id="discovery-no-description",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "hook"), _DELETE)),
        [("$.services[0]", "'hook' is a required property")],
        id="discovery-no-hook",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "description"), "")),
        [("$.services[0].description", "empty string")],
        id="discovery-empty-description",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "title"), None)),
        [("$.services[0].title", "null is not of type 'string'")],
        id="discovery-null-title",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "id"), "static/greeter")),
        [("$.services[0].id", "does not match")],
        id="discovery-id-with-slash",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "prefetch"), {})),
        [("$.services[0].prefetch", "empty object")],
        id="discovery-empty-prefetch",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "prefetch", "patientToGreet"), "")),
        [("$.services[0].prefetch.patientToGreet", "empty string")],
        id="discovery-empty-prefetch-template",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "prefetch", "patientToGreet"), {"q": "Patient"})),
        [("$.services[0].prefetch.patientToGreet", "not of type 'string'")],
        id="discovery-prefetch-template-not-string",
    ),
    pytest.param(
        "discovery",
        variant(SPEC_DISCOVERY, ((*SERVICE0, "version"), "")),
        [("$.services[0]", "'version' was unexpected")],
        id="discovery-unknown-member",
    ),
    # feedback
    pytest.param(
        "feedback", {}, [("$", "'feedback' is a required property")], id="feedback-missing"
    ),
    pytest.param(
        "feedback", {"feedback": []}, [("$.feedback", "empty array")], id="feedback-empty"
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcome"), "ignored")),
        [("$.feedback[0].outcome", '"ignored" is not one of ["accepted", "overridden"]')],
        id="feedback-cds-fb-1-bad-outcome",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcome"), _DELETE)),
        [("$.feedback[0]", "'outcome' is a required property")],
        id="feedback-no-outcome",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_ACCEPTED, ((*FB0, "acceptedSuggestions"), _DELETE)),
        [("$.feedback[0]", "'acceptedSuggestions' is a required property")],
        id="feedback-cds-fb-2-accepted-without-suggestions",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_ACCEPTED, ((*FB0, "acceptedSuggestions"), [])),
        [("$.feedback[0].acceptedSuggestions", "empty array")],
        id="feedback-accepted-empty-suggestions",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_ACCEPTED, ((*FB0, "acceptedSuggestions"), [{}])),
        [("$.feedback[0].acceptedSuggestions[0]", "'id' is a required property")],
        id="feedback-accepted-suggestion-without-id",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "overrideReason"), {})),
        [("$.feedback[0].overrideReason", "'reason' is a required property; 'userComment'")],
        id="feedback-cds-fb-3-override-reason-empty",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "overrideReason"), {"userComment": ""})),
        [("$.feedback[0].overrideReason.userComment", "empty string")],
        id="feedback-override-reason-empty-comment",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_OVERRIDE_REASON, ((*FB0, "overrideReason", "reason", "system"), _DELETE)
        ),
        [("$.feedback[0].overrideReason.reason", "'system' is a required property")],
        id="feedback-override-reason-coding-without-system",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_ACCEPTED,
            ((*FB0, "overrideReason"), {"userComment": "Accepted, but grudgingly."}),
        ),
        [("$.feedback[0].overrideReason", "only valid with outcome overridden")],
        id="feedback-override-reason-on-accepted",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2020-12-11")),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-date-only",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2020-12-11T00:00:00")),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-without-zone",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2021-02-30T00:00:00Z")),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-impossible-date",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2020-12-11T24:00:00Z")),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-hour-24",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2020-12-11T00:00:00+12:60")
        ),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-offset-minute-60",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), "2026-11-24T23:59:60.\u0663Z")
        ),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-leap-second-arabic-indic-fraction",
    ),
    pytest.param(
        "feedback",
        variant(
            SPEC_FEEDBACK_OVERRIDDEN,
            ((*FB0, "outcomeTimestamp"), "2026-11-24T12:00:00.1234567\u0663Z"),
        ),
        [("$.feedback[0].outcomeTimestamp", "not a valid date-time")],
        id="feedback-timestamp-arabic-indic-digit-past-microseconds",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), 1607644800)),
        [("$.feedback[0].outcomeTimestamp", "not of type 'string'")],
        id="feedback-timestamp-epoch-number",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "outcomeTimestamp"), _DELETE)),
        [("$.feedback[0]", "'outcomeTimestamp' is a required property")],
        id="feedback-no-timestamp",
    ),
    pytest.param(
        "feedback",
        variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "card"), "card-1")),
        [("$.feedback[0].card", "not a valid uuid")],
        id="feedback-card-not-uuid",
    ),
]


@pytest.mark.parametrize(("schema", "document", "expected"), INVALID)
def test_invalid_documents(schema: str, document: Json, expected: list[tuple[str, str]]) -> None:
    issues = validate(document, schema)
    assert [issue.path for issue in issues] == [path for path, _ in expected], issues
    for issue, (_, fragment) in zip(issues, expected, strict=True):
        assert fragment in issue.message, issue


# --- the schema files themselves --------------------------------------------------------------


def _schema_file(name: str) -> Json:
    text = (
        resources.files("cds_service.protocol")
        .joinpath("schemas", f"{name}.schema.json")
        .read_text(encoding="utf-8")
    )
    return json.loads(text)


def _walk(node: Json) -> Iterator[Json]:
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_file_is_a_valid_draft_2020_12_schema(name: str) -> None:
    schema = _schema_file(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://cds-service.local/schemas/{name}.schema.json"
    assert schema["title"]
    assert "CDS Hooks" in schema["description"]


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_schema_refs_stay_inside_the_file(name: str) -> None:
    refs = [
        node["$ref"]
        for node in _walk(_schema_file(name))
        if isinstance(node, dict) and "$ref" in node
    ]
    assert all(ref.startswith("#/$defs/") for ref in refs), refs


@pytest.mark.parametrize("name", ["response", "discovery"])
def test_output_schemas_never_allow_null(name: str) -> None:
    for node in _walk(_schema_file(name)):
        if isinstance(node, dict) and "type" in node:
            types = node["type"] if isinstance(node["type"], list) else [node["type"]]
            assert "null" not in types, node


# --- the module's interface -------------------------------------------------------------------


def test_context_schema_for_supported_hooks() -> None:
    assert context_schema_for("patient-view") == "context-patient-view"
    assert context_schema_for("order-select") == "context-order-select"
    assert context_schema_for("order-sign") == "context-order-sign"
    assert context_schema_for("encounter-start") is None
    assert context_schema_for("") is None


def test_every_context_schema_name_is_a_schema() -> None:
    for hook in ("patient-view", "order-select", "order-sign"):
        assert context_schema_for(hook) in SCHEMA_NAMES


def test_unknown_schema_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown schema"):
        validate({}, "nonsense")


def test_non_object_document_is_reported_at_the_root() -> None:
    assert validate([1, 2], "request") == [
        SchemaIssue(path="$", message="[1, 2] is not of type 'object'")
    ]


def test_issues_are_sorted_by_path_with_numeric_indices() -> None:
    document = {"cards": [copy.deepcopy(CARD) for _ in range(12)]}
    document["cards"][10]["summary"] = ""
    document["cards"][2]["summary"] = ""
    document["cards"][2]["indicator"] = "loud"
    paths = [issue.path for issue in validate(document, "response")]
    assert paths == ["$.cards[2].indicator", "$.cards[2].summary", "$.cards[10].summary"]


def test_messages_truncate_large_values() -> None:
    huge = "word " * 10_000
    [issue] = validate(variant(RESPONSE, ((*C0, "summary"), huge)), "response")
    assert issue.path == "$.cards[0].summary"
    assert len(issue.message) < 200
    assert "…" in issue.message
    assert "50000 characters" in issue.message


def test_messages_render_json_not_python() -> None:
    [issue] = validate(variant(MINIMAL_REQUEST, (("hookInstance",), True)), "request")
    assert issue.message == "true is not of type 'string'"


def test_huge_nested_value_is_truncated_in_any_of_message() -> None:
    comment = {"reasons": ["x" * 500]}
    document = variant(SPEC_FEEDBACK_OVERRIDDEN, ((*FB0, "overrideReason"), comment))
    [issue] = validate(document, "feedback")
    assert issue.path == "$.feedback[0].overrideReason"
    assert len(issue.message) <= 300
    assert "x" * 100 not in issue.message


def test_request_and_context_spec_example_validate_together() -> None:
    """The spec's patient-view request, checked as the service will: envelope, then context."""
    assert validate(SPEC_REQUEST, "request") == []
    context_schema = context_schema_for(SPEC_REQUEST["hook"])
    assert context_schema == "context-patient-view"
    assert validate(SPEC_REQUEST["context"], context_schema) == []


# --- the compiled fast path ---------------------------------------------------------------------
# validate() answers "valid" from jsonschema-rs and asks the Python validator only otherwise, so the
# compiled validator must never accept a document the Python validator rejects.


def _verdicts(schema: str, document: Json) -> tuple[bool, bool]:
    fast = _fast_validator(schema).is_valid(document)
    full = not any(True for _ in _validator(schema).iter_errors(document))
    return fast, full


@pytest.mark.parametrize(("schema", "document"), VALID)
def test_compiled_validator_accepts_every_valid_document(schema: str, document: Json) -> None:
    assert _verdicts(schema, document) == (True, True)


@pytest.mark.parametrize(("schema", "document", "expected"), INVALID)
def test_compiled_validator_rejects_every_invalid_document(
    schema: str, document: Json, expected: list[tuple[str, str]]
) -> None:
    assert _verdicts(schema, document) == (False, False)


JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        [
            "2c0f0b6e-6a43-4a0e-9c39-bd3b5f4a0d04",
            "Practitioner/a-1",
            "Patient/p.1\n",
            "https://ehr.example.org/fhir",
            "2026-11-24T12:00:00Z",
            "2026-11-24T12:00:00",
            "patient-view",
            "order-sign",
            "accepted",
            "overridden",
            "Bearer",
        ]
    )
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=st.sampled_from([(p.values[0], p.values[1]) for p in VALID]),
    where=st.integers(min_value=0, max_value=10_000),
    value=JSON_VALUES,
)
def test_compiled_validator_never_accepts_what_the_python_validator_rejects(
    case: tuple[str, Json], where: int, value: Json
) -> None:
    # One member anywhere in a valid document replaced by arbitrary JSON.
    schema, base = case
    document = copy.deepcopy(base)
    slots = [node for node in _walk(document) if isinstance(node, dict) and node]
    target = slots[where % len(slots)]
    key = sorted(target)[where % len(target)]
    target[key] = value
    fast, full = _verdicts(schema, document)
    assert not fast or full, (schema, document)
