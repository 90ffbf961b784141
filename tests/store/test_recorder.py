"""The issued-card recorder after close(): what a stopping worker still issues is stored at once."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from cds_service.logs import JsonFormatter
from cds_service.store import engine_for, migrate
from cds_service.store.cards import IssuedCard
from cds_service.store.recorder import CardRecorder
from cds_service.store.schema import issued_cards


def card(n: int) -> IssuedCard:
    now = datetime(2026, 11, 24, tzinfo=UTC)
    return IssuedCard(
        f"00000000-0000-4000-8000-{n:012d}", "svc", "kind", "info", "p" * 64, "e" * 64, now
    )


def stored(url: str) -> set[str]:
    with engine_for(url).connect() as connection:
        return set(connection.execute(select(issued_cards.c.card_uuid)).scalars())


def test_cards_submitted_after_close_are_stored_before_submit_returns(database_url: str) -> None:
    # gunicorn runs worker_exit (close) while a quickly stopped worker's requests still run: a card
    # they answer with afterwards must be in the database by the time the answer is sent.
    migrate(database_url)
    failures: list[str] = []
    recorder = CardRecorder(database_url, failures.append, batch_window=0.5)
    recorder.submit([card(1)])
    recorder.close()
    assert stored(database_url) == {card(1).card_uuid}
    recorder.submit([card(2), card(3)])
    assert stored(database_url) == {card(n).card_uuid for n in (1, 2, 3)}
    recorder.close()  # a second close is harmless
    recorder.submit([card(4)])
    assert card(4).card_uuid in stored(database_url) and failures == []


def test_a_store_failure_after_close_is_reported_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: list[str] = []
    recorder = CardRecorder("postgresql+psycopg://nobody@127.0.0.1:1/none", failures.append)
    recorder.close()
    recorder.submit([card(1), card(2)])
    assert failures == ["record issued cards"]
    # Nothing retries them once the worker has closed: the loss is logged as one.
    [lost] = [r for r in caplog.records if r.getMessage() == "issued-card records lost at exit"]
    assert lost.levelname == "ERROR" and lost.count == 2  # type: ignore[attr-defined]
    # ... and the JSON log line carries the count (an allowed field: no patient data).
    assert json.loads(JsonFormatter().format(lost))["count"] == 2
