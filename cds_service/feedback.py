"""The feedback endpoint's logic (CDS Hooks §Feedback): validate the batch, store it, count outcomes."""

from __future__ import annotations

from typing import Any

from cds_service.errors import InvalidRequest, Issue, ServiceUnavailable, UnknownService
from cds_service.metrics import FEEDBACK
from cds_service.protocol.schemas import validate
from cds_service.runtime import Runtime
from cds_service.store import StoreUnavailable
from cds_service.store.feedback import save_feedback


def receive_feedback(runtime: Runtime, service_id: str, body: Any) -> dict[str, int]:
    """Store a feedback batch; idempotent per item, all items or none (one transaction).

    Raises UnknownService (404), InvalidRequest (400) naming every invalid item, or
    ServiceUnavailable (503 with Retry-After) when the database cannot take it: the client should
    send it again, and nothing of the batch was kept.
    """
    if not runtime.services_with_id(service_id):
        raise UnknownService(f"no CDS service with id '{service_id}'")
    problems = validate(body, "feedback")
    if problems:
        raise InvalidRequest(
            "the feedback is not valid CDS Hooks feedback",
            [Issue("invalid", p.message, p.path) for p in problems],
        )
    items: list[dict[str, Any]] = body["feedback"]
    runtime.recorder.flush()  # so feedback on a card this worker just issued finds its record
    try:
        new = save_feedback(runtime.settings.database_url, service_id, items, runtime.clock.now())
    except StoreUnavailable:
        runtime.store_failed("save feedback")
        raise ServiceUnavailable(
            "feedback could not be stored; please send it again", retry_after=30
        ) from None
    if any(item["outcome"] == "overridden" for item in items):
        try:  # this worker's next calls for the patient see the override at once
            runtime.overridden.refresh()
        except StoreUnavailable:
            runtime.store_failed("read overrides")
    if new:
        for item in items:
            FEEDBACK.labels(service_id, item["outcome"]).inc()
    return {"received": len(items), "new": new}
