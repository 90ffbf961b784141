"""Issued cards and snoozing: a card kind overridden for a patient stays hidden for its snooze period
unless the evidence behind it changed."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import DateTime, case, func, insert, literal, select

from cds_service.store import aware, session
from cds_service.store.schema import feedback, issued_cards


def patient_hash(key: str, patient_id: str) -> str:
    """A keyed hash (HMAC-SHA256) of a patient id: stable for snoozing, useless without the key."""
    return hmac.new(key.encode(), patient_id.encode(), hashlib.sha256).hexdigest()


class IssuedCard(NamedTuple):
    """One card as recorded: the issued_cards columns, in order."""

    card_uuid: str
    service_id: str
    card_kind: str
    indicator: str
    patient_hash: str
    evidence_hash: str
    issued_at: datetime
    knowledge_version: str | None = None
    content_hash: str | None = None
    silent: bool = False


# No override predates this (the feedback endpoint refuses earlier outcome times).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def _overridden_at() -> Any:
    """When an override takes effect: its outcome time, but never after the service received it
    (a far-future time stored by an older version or by hand cannot hide a card beyond its snooze
    period) nor before 2000 (so every value read back is one Python can hold: PostgreSQL stores
    years up to 294276, and infinity)."""
    outcome, received = feedback.c.outcome_at, feedback.c.received_at
    earliest = literal(EARLIEST, DateTime(timezone=True))
    return case(
        (outcome > received, received),
        (outcome < earliest, earliest),
        else_=outcome,
    )


def overrides_for(url: str, patient: str) -> dict[tuple[str, str], datetime]:
    """(card kind, evidence hash) -> latest time a clinician overrode such a card for this patient.

    A card whose suggestion was accepted, before or after it was dismissed, snoozes nothing: the
    clinician acted on it (README, "Feedback").
    """
    acceptance = feedback.alias("acceptance")
    accepted = select(acceptance.c.id).where(
        acceptance.c.card_uuid == feedback.c.card_uuid, acceptance.c.outcome == "accepted"
    )
    query = (
        select(feedback.c.card_kind, feedback.c.evidence_hash, func.max(_overridden_at()))
        .where(
            feedback.c.patient_hash == patient,
            feedback.c.outcome == "overridden",
            ~accepted.exists(),
        )
        .group_by(feedback.c.card_kind, feedback.c.evidence_hash)
    )
    with session(url) as connection:
        rows = connection.execute(query).all()
    return {(kind, evidence): aware(when) for kind, evidence, when in rows}


# How often a worker reads which patients have overridden cards, and how far back each read looks
# beyond the newest override it already knows (late commits, clocks of other replicas).
OVERRIDES_REFRESH_SECONDS = 1.0
_OVERLAP = timedelta(minutes=5)


class OverriddenPatients:
    """The patients with any overridden card, as this worker last read them from the database.

    A hook call for any other patient (nearly every call) skips the snooze read. The set is read
    again when it is older than `max_age` seconds, so an override stored by another worker or
    replica holds its card back from then on; this worker's own feedback refreshes it at once.
    Patients only join the set (pruned feedback costs a needless read, never a missed snooze).
    """

    def __init__(
        self,
        url: str,
        max_age: float = OVERRIDES_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.max_age = max_age
        self.monotonic = monotonic
        self._patients: set[str] = set()
        self._newest: datetime | None = None
        self._read_at = -math.inf
        self._lock = threading.Lock()

    def may_include(self, patient: str) -> bool:
        """Whether the patient may have an overridden card (StoreUnavailable if it cannot tell)."""
        if self.monotonic() - self._read_at >= self.max_age:
            self.refresh(wait=False)
        return patient in self._patients

    def refresh(self, wait: bool = True) -> None:
        """Read the overrides received since the last read; without `wait`, a read another thread
        is making already will do."""
        if not self._lock.acquire(blocking=wait):
            return
        try:
            since = self._newest - _OVERLAP if self._newest else None
            for patient, received in _overridden_since(self.url, since):
                self._patients.add(patient)
                if self._newest is None or received > self._newest:
                    self._newest = received
            self._read_at = self.monotonic()
        finally:
            self._lock.release()


def _overridden_since(url: str, since: datetime | None) -> list[tuple[str, datetime]]:
    query = (
        select(feedback.c.patient_hash, func.max(feedback.c.received_at))
        .where(feedback.c.outcome == "overridden", feedback.c.patient_hash.is_not(None))
        .group_by(feedback.c.patient_hash)
    )
    if since is not None:
        query = query.where(feedback.c.received_at >= since)
    with session(url) as connection:
        rows = connection.execute(query).all()
    return [(patient, aware(received)) for patient, received in rows]


def record_issued(url: str, cards: list[IssuedCard]) -> None:
    """Store the cards just returned (one transaction)."""
    if not cards:
        return
    with session(url, write=True) as connection:
        connection.execute(insert(issued_cards), [card._asdict() for card in cards])
