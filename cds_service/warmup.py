"""Start-up warm-up: build what the first requests would otherwise build lazily (schema validators,
the UCUM unit registry, the rules' code paths), so a worker's memory and latency are steady from its
first request on."""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from flask import request

from cds_service.clock import Clock
from cds_service.fhir.data import Quantity
from cds_service.fhir.record import PatientRecord
from cds_service.protocol.schemas import SCHEMA_NAMES, validate
from cds_service.render import render_cards
from cds_service.rules import RULES, Evaluation
from cds_service.runtime import Runtime
from cds_service.store import StoreUnavailable
from cds_service.store.cards import overrides_for, patient_hash
from cds_service.units import concentration

if TYPE_CHECKING:
    from flask import Flask

    from cds_service.knowledge.loader import Service

ICD = "http://hl7.org/fhir/sid/icd-10-cm"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
WARM_PATIENT = "warm-up"
# Results a typical prefetch carries (LOINC, UCUM unit, value): calcium, eGFR, albumin, magnesium.
_RESULTS = (
    ("17861-6", "mg/dL", 9.1),
    ("98979-8", "mL/min/{1.73_m2}", 62.0),
    ("1751-7", "g/dL", 3.9),
    ("19123-9", "mg/dL", 2.0),
)


def _condition(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": f"warm-{code}",
        "code": {"coding": [{"system": ICD, "code": code}]},
    }


def _draft_order_context(medicine: str) -> dict[str, Any]:
    """An order hook's context entries for one draft MedicationRequest of `medicine`, selected."""
    draft = {
        "resourceType": "MedicationRequest",
        "id": "warm-draft",
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"text": medicine},
        "subject": {"reference": f"Patient/{WARM_PATIENT}"},
    }
    return {
        "draftOrders": {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": draft}],
        },
        "selections": ["MedicationRequest/warm-draft"],
    }


def warm_up(runtime: Runtime) -> None:
    """Exercise every service once on a synthetic in-scope patient (nothing is stored or sent)."""
    for name in SCHEMA_NAMES:
        validate({}, name)
    from cds_service.rules.calcium import analyte

    calcium = analyte(runtime.knowledge, "calcium")
    for unit in ("mg/dL", "mmol/L", "mg/L", "meq/L", "g/dL", "g/L"):
        concentration(Quantity(1.0, unit, unit), "mg/dL", calcium)
    record = PatientRecord(
        patient_id=WARM_PATIENT,
        patient={"resourceType": "Patient", "id": WARM_PATIENT, "birthDate": "1950-01-01"},
        conditions=[
            _condition("I63.9"),
            _condition("R25.2"),
            _condition("I69.351"),
            _condition("R56.9"),
        ],
    )
    clock = Clock()
    for spec in runtime.knowledge.services:
        context: dict[str, Any] = {"userId": "Practitioner/warm-up", "patientId": WARM_PATIENT}
        if spec.hook in {"order-select", "order-sign"}:
            context.update(_draft_order_context("baclofen 10 MG Oral Tablet"))
        evaluation = Evaluation(spec.hook, context, record, runtime.knowledge, clock.now())
        render_cards(RULES[spec.rules](evaluation), runtime.knowledge, clock, WARM_PATIENT)


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
        try:  # reads only: open this worker's connection, and learn who has overridden cards
            runtime.overridden.refresh()
            overrides_for(settings.database_url, patient_hash(settings.patient_hash_key or "", "-"))
        except StoreUnavailable:
            runtime.store_failed("warm-up snooze lookup")
    body = {"hook": "patient-view", "hookInstance": "-", "context": {}}
    with app.test_request_context("/cds-services", method="POST", json=body):
        parsed = request.get_json()
        for name in SCHEMA_NAMES:
            validate(parsed, name)
        app.json.dumps({"cards": [], "echo": parsed})


def _result(n: int, code: str, unit: str, value: float, when: date) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"warm-obs-{n}",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": code}]},
        "subject": {"reference": f"Patient/{WARM_PATIENT}"},
        "effectiveDateTime": f"{when.isoformat()}T08:30:00Z",
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def warm_up_request(spec: Service, today: date) -> dict[str, Any]:
    """A synthetic hook request the size of a typical one (about 60 resources), for `spec`."""
    by_type: dict[str, list[dict[str, Any]]] = {
        "Condition": [
            {**_condition(code), "subject": {"reference": f"Patient/{WARM_PATIENT}"}}
            for code in ("I63.9", "R25.2", "I69.351", "I10", "E11.9", "N18.3", "E78.5", "M81.0")
        ],
        "Observation": [
            _result(12 * i + q, code, unit, value, today - timedelta(days=91 * q))
            for i, (code, unit, value) in enumerate(_RESULTS)
            for q in range(12)
        ],
        "MedicationRequest": [
            {
                "resourceType": "MedicationRequest",
                "id": f"warm-med-{n}",
                "status": "active",
                "intent": "order",
                "medicationCodeableConcept": {"text": text},
                "subject": {"reference": f"Patient/{WARM_PATIENT}"},
            }
            for n, text in enumerate(
                ("baclofen 10 MG Oral Tablet", "atorvastatin 20 MG", "amlodipine 5 MG")
            )
        ],
    }
    patient = {"resourceType": "Patient", "id": WARM_PATIENT, "birthDate": "1950-01-01"}
    prefetch: dict[str, Any] = {}
    for template in spec.prefetch:
        kind = template.query.split("?")[0].split("/")[0]
        if kind == "Patient":
            prefetch[template.key] = patient
        else:
            entries = [{"resource": r} for r in by_type.get(kind, [])]
            prefetch[template.key] = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": entries,
            }
    context: dict[str, Any] = {"userId": "Practitioner/warm-up", "patientId": WARM_PATIENT}
    if spec.hook in {"order-select", "order-sign"}:
        context.update(_draft_order_context("tizanidine 4 MG Oral Tablet"))
    instance = "00000000-0000-4000-8000-000000000000"  # a fixed, valid uuid: nothing is kept
    return {"hook": spec.hook, "hookInstance": instance, "context": context, "prefetch": prefetch}


def warm_request_threads(app: Flask, pool: Executor, threads: int, timeout: float = 10.0) -> None:
    """Run a typical hook call of every service on each of a server worker's request threads, all
    at once, before the worker takes traffic; nothing is recorded, counted or logged.

    The threads of gunicorn's pool start on first use, and each then grows its own stack and
    allocator arena to what a call needs: done here, that growth is part of the worker's starting
    memory instead of showing up as growth over its first requests.
    """
    from cds_service.api import hook_call

    runtime: Runtime = app.extensions["cds_runtime"]
    today = runtime.clock.now().date()
    bodies = [
        (spec.id, orjson.dumps(warm_up_request(spec, today))) for spec in runtime.knowledge.services
    ]
    start = threading.Barrier(threads)

    def call_each_service() -> None:
        start.wait(timeout)  # every thread is busy at once, so the pool starts all of them
        for service_id, raw in bodies:
            with (
                runtime.dry_run(),
                app.test_request_context(
                    f"/cds-services/{service_id}",
                    method="POST",
                    data=raw,
                    content_type="application/json",
                ),
            ):
                app.process_response(hook_call(service_id))

    for future in [pool.submit(call_each_service) for _ in range(threads)]:
        future.result(timeout)
