"""Issued cards and snoozing: a card kind overridden for a patient stays hidden for its snooze period
unless the evidence behind it changed."""

from __future__ import annotations

import hashlib
import hmac
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import Engine, bindparam, func, select

from cds_service.store import STORE_ERRORS, StoreUnavailable, engine_for
from cds_service.store.schema import feedback, issued_cards


def patient_hash(key: str, patient_id: str) -> str:
    """A keyed hash (HMAC-SHA256) of a patient id: stable for snoozing, useless without the key."""
    keyed = _keyed(key).copy()  # the key's own hashing is done once, not on every call
    keyed.update(patient_id.encode())
    return keyed.hexdigest()


@cache
def _keyed(key: str) -> hmac.HMAC:
    return hmac.new(key.encode(), digestmod=hashlib.sha256)


class IssuedCard(NamedTuple):
    """One card as recorded (a tuple: a hook call makes several, and they are cheap to build)."""

    card_uuid: str
    service_id: str
    card_kind: str
    indicator: str
    patient_hash: str
    evidence_hash: str
    issued_at: datetime


def overrides_for(url: str, patient: str) -> dict[tuple[str, str], datetime]:
    """(card kind, evidence hash) -> latest time a clinician overrode such a card for this patient."""
    # Feedback rows carry the card's kind and patient hash: one indexed read of a small table. It
    # runs on every hook call that has cards, so it goes through SQLAlchemy's pool (checkout
    # pre-ping included) and compiler but not its execution layer, which costs several times what
    # the database takes to answer.
    engine = engine_for(url)
    sql, names = _driver_sql(engine)
    with _driver_connection(engine) as connection:
        cursor = connection.cursor()
        values = {"patient": patient, "outcome": "overridden"}
        cursor.execute(sql, tuple(values[n] for n in names))
        rows = cursor.fetchall()
        cursor.close()
    return {(kind, evidence): _as_datetime(when) for kind, evidence, when in rows}


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
    try:
        with engine_for(url).connect() as connection:
            rows = connection.execute(query).all()
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    return [(patient, _aware(received)) for patient, received in rows]


@cache
def _driver_sql(engine: Engine) -> tuple[str, tuple[str, ...]]:
    # The overrides query in the engine's own SQL dialect and positional parameter style.
    statement = (
        select(feedback.c.card_kind, feedback.c.evidence_hash, func.max(feedback.c.outcome_at))
        .where(
            feedback.c.patient_hash == bindparam("patient"),
            feedback.c.outcome == bindparam("outcome"),
        )
        .group_by(feedback.c.card_kind, feedback.c.evidence_hash)
    )
    dialect: Any = type(engine.dialect)
    positional = dialect(paramstyle="qmark" if engine.dialect.name == "sqlite" else "format")
    compiled = statement.compile(dialect=positional)
    return str(compiled), tuple(compiled.positiontup or ())


def _as_datetime(value: datetime | str) -> datetime:
    # SQLite hands back the stored text ("2026-11-24 12:00:00.000000"); PostgreSQL a datetime.
    return _aware(value if isinstance(value, datetime) else datetime.fromisoformat(value))


# Rows per INSERT statement: SQLite steps (and releases Python's GIL) once per statement, not once
# per row as executemany does. Batches are cut into these sizes only (largest first), so a
# connection caches at most seven prepared INSERTs rather than one per batch size seen; 64 rows x
# 7 columns stays under every SQLite's 999 parameters.
_INSERT_SIZES = (64, 32, 16, 8, 4, 2, 1)
_ISSUED_COLUMNS = tuple(column.name for column in issued_cards.c)


def record_issued(url: str, cards: list[IssuedCard]) -> None:
    """Store the cards just returned (one transaction)."""
    if not cards:
        return
    engine = engine_for(url)
    dialect = engine.dialect
    rows = _bound_rows(cards, _converters(engine))
    with _driver_connection(engine) as connection:
        cursor = connection.cursor()
        # This write is on every hook call and only feeds snoozing and reports: it need not wait
        # for the disk (a crash may lose the last few records). Feedback keeps full durability.
        if dialect.name == "postgresql":
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
        else:
            cursor.execute("PRAGMA synchronous = NORMAL")
        width = len(_ISSUED_COLUMNS)
        for start, size in _chunks(len(cards)):
            values = rows[start * width : (start + size) * width]
            cursor.execute(_insert_sql(dialect.paramstyle, size), values)
        cursor.close()
        connection.commit()


@contextmanager
def _driver_connection(engine: Engine) -> Iterator[Any]:
    """A pooled DBAPI connection (the hot paths skip SQLAlchemy's execution layer): a broken one
    does not go back to the pool, and any database error becomes StoreUnavailable."""
    dbapi_error = engine.dialect.loaded_dbapi.Error
    try:
        connection = engine.raw_connection()
        try:
            yield connection
        except dbapi_error:
            connection.invalidate()
            raise
        finally:
            connection.close()
    except (*STORE_ERRORS, dbapi_error) as exc:
        raise StoreUnavailable(type(exc).__name__) from None


@cache
def _converters(engine: Engine) -> tuple[Any, ...]:
    # Each column's value as SQLAlchemy itself would bind it (SQLite keeps datetimes as text).
    if IssuedCard._fields != _ISSUED_COLUMNS:
        raise RuntimeError("IssuedCard's fields must be issued_cards' columns, in order")
    return tuple(
        column.type.dialect_impl(engine.dialect).bind_processor(engine.dialect)
        for column in issued_cards.c
    )


@cache
def _insert_sql(paramstyle: str, rows: int) -> str:
    marker = "?" if paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([marker] * len(_ISSUED_COLUMNS)) + ")"
    columns = ", ".join(_ISSUED_COLUMNS)
    return f"INSERT INTO {issued_cards.name} ({columns}) VALUES " + ", ".join([row] * rows)


def _bound_rows(cards: list[IssuedCard], convert: tuple[Any, ...]) -> list[Any]:
    """Every card's column values, one after another, each as its column binds it."""
    values: list[Any] = [value for card in cards for value in card]
    width = len(convert)
    for column, processor in enumerate(convert):
        if processor is None:
            continue
        # The cards of one hook call share their issue time (one datetime object, held by
        # `cards` meanwhile, so its id stays its own): each is bound once, not once per card.
        bound: dict[int, Any] = {}
        for at in range(column, len(values), width):
            value = values[at]
            key = id(value)
            if key not in bound:
                bound[key] = processor(value)
            values[at] = bound[key]
    return values


def _chunks(count: int) -> Iterator[tuple[int, int]]:
    """(first row, rows) of each INSERT for `count` rows, in the sizes of _INSERT_SIZES."""
    start = 0
    for size in _INSERT_SIZES:
        while count - start >= size:
            yield start, size
            start += size


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything the service stores is UTC.
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
