"""A hook call from request body to response body: validate, dispatch, prefetch, evaluate, render."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.errors import InvalidRequest, Issue, UnknownService
from cds_service.fatigue import evidence_hash, snoozed
from cds_service.fhir.client import FhirClient, FhirFetchError
from cds_service.fhir.data import iter_bundle
from cds_service.fhir.record import record_from_prefetch
from cds_service.knowledge.loader import Service
from cds_service.metrics import CARDS, SILENT, SNOOZED, inc
from cds_service.prefetch import add_referenced_medications, gather
from cds_service.protocol.schemas import context_schema_for, validate
from cds_service.render import render_cards
from cds_service.rules import RULES, Evaluation, Finding
from cds_service.rules.evaluation import reference
from cds_service.runtime import Runtime
from cds_service.store import StoreUnavailable
from cds_service.store.cards import IssuedCard, overrides_for, patient_hash

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HookResult:
    """The response body and what the request log may say about it (no patient data)."""

    body: dict[str, Any]
    hook: str
    card_kinds: tuple[str, ...]
    # Kinds a clinician's recent override snoozes for this patient: left out of the cards, or,
    # with review=True (`cds-service evaluate`), shown and named here.
    snoozed_kinds: tuple[str, ...] = ()
    # Kinds found but silent (recorded, not returned); with review=True kept in the cards.
    silent_kinds: tuple[str, ...] = ()


def call_service(
    runtime: Runtime, service_id: str, body: Any, *, review: bool = False
) -> HookResult:
    """Answer one POST /cds-services/{id}; raises a CdsError for anything the caller must fix.

    `review=True` (content review, not a clinician's call) keeps snoozed cards in the response and
    records and counts nothing."""
    specs = runtime.services_with_id(service_id)
    if not specs:
        raise UnknownService(f"no CDS service with id '{service_id}'")
    problems = validate(body, "request")
    if problems:
        raise InvalidRequest("the request is not a valid CDS Hooks request", _issues(problems))
    hook = body["hook"]
    spec = next((s for s in specs if s.hook == hook), None)
    if spec is None:
        supported = ", ".join(sorted(s.hook for s in specs))
        raise InvalidRequest(
            f"service '{service_id}' does not answer the '{hook}' hook",
            [Issue("not-supported", f"service '{service_id}' supports: {supported}", "$.hook")],
        )
    context_schema = context_schema_for(hook)
    if context_schema:
        problems = [
            type(p)(path=p.path.replace("$", "$.context", 1), message=p.message)
            for p in validate(body["context"], context_schema)
        ]
        if problems:
            raise InvalidRequest(
                f"the context is not valid for the '{hook}' hook", _issues(problems)
            )
    if hook == "order-select":
        _check_selections(body["context"])

    settings = runtime.settings
    started = time.monotonic()
    connect = _once(lambda: _fhir_client(runtime, body))
    context = body["context"]
    data = gather(
        list(spec.prefetch),
        body.get("prefetch") or {},
        context,
        connect,
        runtime.executor,
        settings.fhir_deadline_seconds,
    )
    record = record_from_prefetch(context["patientId"], data)
    drafts = [r for _, r in iter_bundle(context.get("draftOrders") or {})]
    seconds_left = settings.fhir_deadline_seconds - (time.monotonic() - started)
    add_referenced_medications(record, drafts, connect, runtime.executor, seconds_left)
    now = runtime.clock.now()
    findings = RULES[spec.rules](Evaluation(hook, context, record, runtime.knowledge, now))
    patient = patient_hash(settings.patient_hash_key or "", context["patientId"])
    held = _snoozed(runtime, spec.id, patient, findings, now)
    if not review:
        findings = [f for f in findings if not any(f is h for h in held)]
        for finding in held:
            inc(SNOOZED, spec.id, finding.kind)
    cards = render_cards(findings, runtime.knowledge, runtime.clock, context["patientId"])
    # Silent kinds are worked out like any other (a snoozed one is not even a would-have-shown),
    # recorded as such, and never returned.
    silent = {f.kind for _, f in cards if runtime.knowledge.cards[f.kind].mode == "silent"}
    if not review:
        _record(runtime, spec.id, patient, cards, silent, now)
    response: dict[str, Any] = {
        "cards": [card for card, f in cards if review or f.kind not in silent]
    }
    if settings.validate_responses:
        problems = validate(response, "response")
        if problems:  # a bug of ours, not the caller's: fail loudly in development
            raise AssertionError(f"invalid response: {problems}")
    return HookResult(
        response,
        hook,
        tuple(f.kind for f in findings),
        tuple(f.kind for f in held),
        tuple(sorted(silent)),
    )


def _check_selections(context: dict[str, Any]) -> None:
    """order-select: every selection must name an entry of draftOrders (checked before any fetch)."""
    known = {reference(r) for _, r in iter_bundle(context["draftOrders"])}
    unknown = sorted(set(context["selections"]) - known)
    if unknown:
        raise InvalidRequest(
            "selections must name entries of draftOrders",
            [
                Issue("invalid", f"'{ref}' is not in draftOrders", "$.context.selections")
                for ref in unknown
            ],
        )


def _snoozed(
    runtime: Runtime, service_id: str, patient: str, findings: list[Finding], now: datetime
) -> list[Finding]:
    """The findings a clinician overrode for this patient within the snooze period.

    Fail-open: when the database is down, nothing is snoozed (cards may repeat) rather than the
    call failing or cards silently going missing.
    """
    if not findings or not runtime.store_available():
        return []
    try:
        if not runtime.overridden.may_include(patient):
            return []  # no clinician has overridden a card for this patient
        overrides = overrides_for(runtime.settings.database_url, patient)
    except StoreUnavailable:
        runtime.store_failed("snooze lookup")
        return []
    return [f for f in findings if snoozed(f, runtime.knowledge, overrides, now)]


def _record(
    runtime: Runtime,
    service_id: str,
    patient: str,
    cards: list[tuple[dict[str, Any], Finding]],
    silent: set[str],
    now: datetime,
) -> None:
    """Queue the issued cards, silent ones included, for recording (feedback attribution, snoozing,
    reports); while the database is down the recorder holds them, so an override of one of them
    can still be attributed. `silent`: the kinds recorded but not returned."""
    knowledge = runtime.knowledge
    for card, finding in cards:
        counter = SILENT if finding.kind in silent else CARDS
        inc(counter, service_id, finding.kind, card["indicator"])
    if not cards:
        return
    issued = [
        # Positional, in IssuedCard's field order: card uuid, service, kind, indicator,
        # patient hash, evidence hash, time, content version and hash, silent.
        IssuedCard(
            card["uuid"],
            service_id,
            finding.kind,
            card["indicator"],
            patient,
            evidence_hash(finding),
            now,
            knowledge.version,
            knowledge.content_hash,
            finding.kind in silent,
        )
        for card, finding in cards
    ]
    runtime.recorder.submit(issued)


def request_from_bundle(
    spec: Service, bundle: dict[str, Any], patient_id: str, hook_instance: str
) -> dict[str, Any]:
    """A hook request whose every prefetch key is answered by one patient Bundle (for content review).

    The rules read only what they need from each key, so a whole-record Bundle stands in for all of
    them; this is how `cds-service evaluate` and the Synthea tests evaluate a patient file.
    """
    return {
        "hook": spec.hook,
        "hookInstance": hook_instance,
        "context": {"userId": "Practitioner/reviewer", "patientId": patient_id},
        "prefetch": {t.key: bundle for t in spec.prefetch},
    }


def _once(make: Callable[[], FhirClient]) -> Callable[[], FhirClient]:
    """`make`, called again only while it has not succeeded: every fetch of a call shares one
    client, and with it one deadline and one byte budget."""
    made: list[FhirClient] = []

    def connect() -> FhirClient:
        if not made:
            made.append(make())
        return made[0]

    return connect


def _fhir_client(runtime: Runtime, body: dict[str, Any]) -> FhirClient:
    """The request's FHIR server as a client; made only when something must be fetched (a prefetch
    key, or a Medication an order names and no key brought).

    Raises FhirFetchError when there is no fhirServer or it is not one the service may call
    (prefetch.gather logs it, and fails the call with 412 if a required key needed it).
    """
    server = body.get("fhirServer")
    if not server:
        raise FhirFetchError("the request has no fhirServer to fetch it from")
    auth = body.get("fhirAuthorization") or {}
    settings = runtime.settings
    return FhirClient(
        http=runtime.http,
        base_url=server,
        allowlist=settings.fhir_server_allowlist,
        access_token=auth.get("access_token"),
        timeout_seconds=settings.fhir_timeout_seconds,
        max_pages=settings.fhir_max_pages,
        deadline_seconds=settings.fhir_deadline_seconds,
        max_bytes=settings.fhir_max_response_bytes,
    )


def _issues(problems: list[Any]) -> list[Issue]:
    return [Issue("invalid", p.message, p.path) for p in problems]
