"""Start-up and per-worker warm-up (cds_service.warmup)."""

from __future__ import annotations

from dataclasses import replace

from flask import Flask
from sqlalchemy import func, select

from cds_service.store import engine_for
from cds_service.store.schema import feedback, issued_cards
from cds_service.warmup import warm_worker


def _rows(url: str) -> tuple[int, int]:
    with engine_for(url).connect() as connection:
        cards = connection.execute(select(func.count()).select_from(issued_cards)).scalar_one()
        items = connection.execute(select(func.count()).select_from(feedback)).scalar_one()
    return cards, items


def test_worker_warm_up_stores_nothing_and_leaves_the_store_usable(app: Flask) -> None:
    runtime = app.extensions["cds_runtime"]
    warm_worker(app)
    runtime.recorder.flush()
    assert _rows(runtime.settings.database_url) == (0, 0)
    assert runtime.store_available()


def test_worker_warm_up_with_the_database_down_does_not_raise(app: Flask) -> None:
    runtime = app.extensions["cds_runtime"]
    runtime.settings = replace(
        runtime.settings, database_url="postgresql+psycopg://x@127.0.0.1:1/none"
    )
    warm_worker(app)
    assert not runtime.store_available()  # noted as down: hook calls skip it for a while
