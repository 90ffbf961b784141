"""The feedback endpoint's logic (CDS Hooks §Feedback): validate the batch, store it, count outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from cds_service.errors import InvalidRequest, Issue, ServiceUnavailable, UnknownService
from cds_service.metrics import FEEDBACK
from cds_service.protocol.schemas import parse_date_time, validate
from cds_service.runtime import Runtime
from cds_service.store import StoreRefused, StoreUnavailable
from cds_service.store.cards import EARLIEST
from cds_service.store.feedback import save_feedback
from cds_service.store.report import UNPRINTABLE
from cds_service.store.schema import feedback as feedback_table


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
    now = runtime.clock.now()
    times = [outcome_time(item["outcomeTimestamp"], now) for item in items]
    wrong = [
        Issue("value", problem, f"$.feedback[{i}].outcomeTimestamp")
        for i, problem in enumerate(times)
        if isinstance(problem, str)
    ]
    if wrong:
        raise InvalidRequest("the feedback has an outcomeTimestamp the service cannot use", wrong)
    unstorable = [issue for i, item in enumerate(items) for issue in storable(item, i)]
    if unstorable:
        raise InvalidRequest("the feedback has a value the service cannot store", unstorable)
    instants = [at for at in times if isinstance(at, datetime)]  # every one: checked above
    items = [_as_first_hashed(item, at) for item, at in zip(items, instants, strict=True)]
    # A UUID's hex digits may come in either case (RFC 9562); the service issues lowercase ones.
    items = [{**item, "card": item["card"].lower()} for item in items]
    if not runtime.store_available():  # failed a moment ago: answer now rather than wait on it
        raise ServiceUnavailable("feedback could not be stored; please send it again", 30)
    runtime.recorder.flush()  # so feedback on a card this worker just issued finds its record
    if runtime.recorder.unrecorded({item["card"] for item in items}):
        # A card shown while the database was down, not recorded yet: stored now, the feedback
        # could not be attributed to it (and would not hold the card back). The EHR retries.
        raise ServiceUnavailable(
            "the card this feedback is about is not recorded yet; please send it again",
            retry_after=5,
        )
    try:
        new = save_feedback(runtime.settings.database_url, service_id, items, instants, now)
    except StoreRefused:
        # A value the checks above let through and the database cannot hold: the caller's data,
        # so 400; the database itself is fine, so nothing else is switched off.
        raise InvalidRequest(
            "the feedback has a value the database cannot store",
            [Issue("value", "a value of this feedback cannot be stored", "$.feedback")],
        ) from None
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


# Where each stored text of a feedback item comes from: (JSON path within the item, column). The
# column sizes are read from the table definition, the one source of truth.
_STORED_TEXT = (
    (("card",), "card_uuid"),
    (("overrideReason", "reason", "system"), "override_system"),
    (("overrideReason", "reason", "code"), "override_code"),
    (("overrideReason", "reason", "display"), "override_display"),
    (("overrideReason", "userComment"), "user_comment"),
)


def storable(item: dict[str, Any], index: int) -> list[Issue]:
    """Why the service will not store a text of this (schema-valid) item: a NUL character
    (PostgreSQL text cannot hold one), another control or bidirectional formatting character (it
    would be printed by `cds-service report`: a forged line, a terminal command, reordered text)
    or more characters than its column; one issue per field."""
    issues = []
    for path, column in _STORED_TEXT:
        value: Any = item
        for name in path:
            value = value.get(name) if isinstance(value, dict) else None
        if not isinstance(value, str):
            continue
        where = f"$.feedback[{index}].{'.'.join(path)}"
        limit = getattr(feedback_table.c[column].type, "length", None)
        if "\x00" in value:
            issues.append(Issue("value", f"{path[-1]} contains a NUL character", where))
        elif found := UNPRINTABLE.search(value):
            problem = f"{path[-1]} contains a control character (U+{ord(found[0]):04X})"
            issues.append(Issue("value", problem, where))
        elif limit is not None and len(value) > limit:
            issues.append(Issue("too-long", f"{path[-1]} is longer than {limit} characters", where))
    return issues


# When a clinician acted can be a little ahead of this server's clock (clocks drift), never far: a
# time in the future would snooze a card until then. Nothing this service issued predates the floor.
FUTURE_SKEW = timedelta(minutes=5)


def outcome_time(text: str, now: datetime) -> datetime | str:
    """The UTC instant of an RFC 3339 date-time (as the feedback schema reads it:
    protocol.schemas.parse_date_time), or why it cannot be used (refused, not clamped)."""
    local = parse_date_time(text)
    if local is None:
        return "outcomeTimestamp is not an RFC 3339 date-time"
    try:
        # A local 9999-12-31T23:59-01:00 is past datetime's range once converted.
        instant = local.astimezone(UTC)
    except OverflowError:
        return "outcomeTimestamp is outside the years 0001-9999 once converted to UTC"
    if instant > now + FUTURE_SKEW:
        return f"outcomeTimestamp is in the future (this server's time is {now:%Y-%m-%dT%H:%M:%SZ})"
    if instant < EARLIEST:
        return f"outcomeTimestamp is before {EARLIEST:%Y-%m-%d}, earlier than any card"
    return instant


def _as_first_hashed(item: dict[str, Any], instant: datetime) -> dict[str, Any]:
    """`item` as its stored identity (a hash of it) has always been computed: as sent, unless
    `datetime.fromisoformat` cannot read its outcomeTimestamp (a leap second, a lowercase "z"),
    which earlier versions rewrote as the UTC instant, so that such an item sent again after an
    upgrade is still known. The stored time is `instant` either way."""
    try:
        datetime.fromisoformat(item["outcomeTimestamp"].replace("Z", "+00:00"))
        return item
    except ValueError:
        return {**item, "outcomeTimestamp": instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
