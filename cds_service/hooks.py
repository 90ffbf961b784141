"""A hook call from request body to response body: validate, dispatch, prefetch, evaluate, render."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cds_service.errors import InvalidRequest, Issue, UnknownService
from cds_service.fatigue import fingerprint, snoozed
from cds_service.fhir.client import FhirClient, FhirFetchError
from cds_service.fhir.record import record_from_prefetch
from cds_service.knowledge.loader import ServiceSpec
from cds_service.metrics import CARDS, SNOOZED, inc
from cds_service.prefetch import gather
from cds_service.protocol.schemas import context_schema_for, validate
from cds_service.render import render_cards
from cds_service.rules import EVALUATORS, Finding, HookInput
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


def call_service(runtime: Runtime, service_id: str, body: Any) -> HookResult:
    """Answer one POST /cds-services/{id}; raises a CdsError for anything the caller must fix."""
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

    fetcher, fetcher_problem = _fetcher(runtime, body)
    settings = runtime.settings
    data = gather(
        list(spec.prefetch),
        body.get("prefetch") or {},
        body["context"],
        fetcher,
        fetcher_problem,
        runtime.executor,
        settings.fhir_deadline_seconds,
    )
    context = body["context"]
    record = record_from_prefetch(context["patientId"], data)
    hook_input = HookInput(
        hook=hook,
        context=context,
        record=record,
        knowledge=runtime.knowledge,
        now=runtime.clock.now(),
    )
    findings = EVALUATORS[spec.evaluator](hook_input)
    patient = patient_hash(settings.patient_hash_key or "", context["patientId"])
    findings = _without_snoozed(runtime, spec.id, patient, findings, hook_input.now)
    cards = render_cards(findings, runtime.knowledge, runtime.clock, context["patientId"])
    _record(runtime, spec.id, patient, findings, cards, hook_input.now)
    response: dict[str, Any] = {"cards": [card for card, _ in cards]}
    if settings.validate_responses:
        problems = validate(response, "response")
        if problems:  # a bug of ours, not the caller's: fail loudly in development
            raise AssertionError(f"invalid response: {problems}")
    return HookResult(response, hook, tuple(f.kind for f in findings))


def _without_snoozed(
    runtime: Runtime, service_id: str, patient: str, findings: list[Finding], now: datetime
) -> list[Finding]:
    """Findings minus those a clinician overrode for this patient within the snooze period.

    Fail-open: when the database is down, nothing is snoozed (cards may repeat) rather than the
    call failing or cards silently going missing.
    """
    if not findings or not runtime.store_available():
        return findings
    try:
        if not runtime.overridden.may_include(patient):
            return findings  # no clinician has overridden a card for this patient
        overrides = overrides_for(runtime.settings.database_url, patient)
    except StoreUnavailable:
        runtime.store_failed("snooze lookup")
        return findings
    kept = []
    for finding in findings:
        if snoozed(finding, runtime.knowledge, overrides, now):
            inc(SNOOZED, service_id, finding.kind)
        else:
            kept.append(finding)
    return kept


def _record(
    runtime: Runtime,
    service_id: str,
    patient: str,
    findings: list[Finding],
    cards: list[tuple[dict[str, Any], Finding]],
    now: datetime,
) -> None:
    """Queue the issued cards for recording (feedback attribution, snoozing); fail-open like snoozing."""
    if runtime.in_dry_run:
        return
    for card, _ in cards:
        inc(CARDS, service_id, card["source"]["topic"]["code"], card["indicator"])
    if not cards or not runtime.store_available():
        return
    issued = [
        # Positional, in IssuedCard's field order: card uuid, service, kind, indicator,
        # patient hash, evidence hash, time.
        IssuedCard(
            card["uuid"],
            service_id,
            finding.kind,
            card["indicator"],
            patient,
            fingerprint(finding),
            now,
        )
        for card, finding in cards
    ]
    runtime.recorder.submit(issued)


def request_from_bundle(
    spec: ServiceSpec, bundle: dict[str, Any], patient_id: str, hook_instance: str
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


def _fetcher(runtime: Runtime, body: dict[str, Any]) -> tuple[FhirClient | None, str | None]:
    server = body.get("fhirServer")
    if not server:
        return None, "the request has no fhirServer to fetch it from"
    auth = body.get("fhirAuthorization") or {}
    settings = runtime.settings
    try:
        client = FhirClient(
            http=runtime.http,
            base_url=server,
            allowlist=settings.fhir_server_allowlist,
            access_token=auth.get("access_token"),
            timeout_seconds=settings.fhir_timeout_seconds,
            max_pages=settings.fhir_max_pages,
            deadline_seconds=settings.fhir_deadline_seconds,
            max_bytes=settings.fhir_max_response_bytes,
        )
    except FhirFetchError as exc:
        log.warning("fhirServer refused", extra={"reason": str(exc)})
        return None, str(exc)
    return client, None


def _issues(problems: list[Any]) -> list[Issue]:
    return [Issue("invalid", p.message, p.path) for p in problems]
