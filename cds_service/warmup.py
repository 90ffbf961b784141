"""Start-up warm-up: build what the first requests would otherwise build lazily (schema validators,
the UCUM unit registry, the rules' code paths), so a worker's memory and latency are steady from its
first request on."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import request

from cds_service.clock import Clock
from cds_service.fhir.data import Quantity
from cds_service.fhir.record import PatientRecord
from cds_service.protocol.schemas import SCHEMA_NAMES, validate
from cds_service.render import render_cards
from cds_service.rules import EVALUATORS, HookInput
from cds_service.runtime import Runtime
from cds_service.store import StoreUnavailable
from cds_service.store.cards import overrides_for, patient_hash
from cds_service.units import concentration

if TYPE_CHECKING:
    from flask import Flask

ICD = "http://hl7.org/fhir/sid/icd-10-cm"


def _condition(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"warm-{code}",
        "code": {"coding": [{"system": ICD, "code": code}]},
    }


def warm_up(runtime: Runtime) -> None:
    """Exercise every service once on a synthetic in-scope patient (nothing is stored or sent)."""
    for name in SCHEMA_NAMES:
        validate({}, name)
    from cds_service.rules.calcium import CALCIUM

    for unit in ("mg/dL", "mmol/L", "mg/L", "meq/L", "g/dL", "g/L"):
        concentration(Quantity(1.0, unit, unit), "mg/dL", CALCIUM)
    record = PatientRecord(
        patient_id="warm-up",
        patient={"resourceType": "Patient", "id": "warm-up", "birthDate": "1950-01-01"},
        conditions=[
            _condition("I63.9"),
            _condition("R25.2"),
            _condition("I69.351"),
            _condition("R56.9"),
        ],
    )
    draft = {
        "resourceType": "MedicationRequest",
        "id": "warm-draft",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": "baclofen 10 MG Oral Tablet"},
    }
    clock = Clock()
    for spec in runtime.knowledge.services:
        context: dict[str, Any] = {"userId": "Practitioner/warm-up", "patientId": "warm-up"}
        if spec.hook in {"order-select", "order-sign"}:
            context["draftOrders"] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": draft}],
            }
            context["selections"] = ["MedicationRequest/warm-draft"]
        hook = HookInput(spec.hook, context, record, runtime.knowledge, clock.now())
        render_cards(EVALUATORS[spec.evaluator](hook), runtime.knowledge, clock, "warm-up")


def warm_worker(app: Flask) -> None:
    """In a freshly forked server worker: run a call's first-use paths once, storing nothing.

    A forked worker shares the master's warm objects but must still open its own database
    connection and map the library code a call runs; doing that before it takes traffic keeps its
    first calls fast and its memory flat from the first call on.
    """
    runtime: Runtime = app.extensions["cds_runtime"]
    warm_up(runtime)
    settings = runtime.settings
    if runtime.store_available():
        try:  # a read only: opens this worker's connection
            overrides_for(settings.database_url, patient_hash(settings.patient_hash_key or "", "-"))
        except StoreUnavailable:
            runtime.store_failed("warm-up snooze lookup")
    body = {"hook": "patient-view", "hookInstance": "-", "context": {}}
    with app.test_request_context("/cds-services", method="POST", json=body):
        parsed = request.get_json()
        for name in SCHEMA_NAMES:
            validate(parsed, name)
        app.json.dumps({"cards": [], "echo": parsed})
