"""Start-up and per-worker warm-up (cds_service.warmup)."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from cds_service.api import REQUEST_LOG
from cds_service.hooks import call_service
from cds_service.protocol.schemas import validate
from cds_service.store import engine_for
from cds_service.store.schema import feedback, issued_cards
from cds_service.warmup import warm_request_threads, warm_up_request, warm_worker
from tests.conftest import NOW


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


def _served(runtime_metric: str) -> float:
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == runtime_metric:
                total += sample.value
    return total


def test_request_thread_warm_up_starts_every_thread_and_keeps_nothing(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = app.extensions["cds_runtime"]
    before = (_served("cds_requests_total"), _served("cds_cards_total"))
    REQUEST_LOG.flush()  # earlier tests' request lines, not this one's
    caplog.clear()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="warm-test") as pool:
        with caplog.at_level(logging.INFO, logger="cds_service"):
            warm_request_threads(app, pool, 4)
            REQUEST_LOG.flush()  # request lines are logged in batches
        started = [t for t in threading.enumerate() if t.name.startswith("warm-test")]
        assert len(started) == 4  # each thread made its call at the same time as the others
        # The dry run ended with the warm-up: later calls on these threads are real ones.
        assert not any(pool.submit(lambda: runtime.in_dry_run).result() for _ in range(8))
    runtime.recorder.flush()
    assert _rows(runtime.settings.database_url) == (0, 0)
    assert (_served("cds_requests_total"), _served("cds_cards_total")) == before
    assert not [r for r in caplog.records if r.name == "cds_service.access"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_warm_up_requests_are_valid_and_reach_the_rules(app: Flask) -> None:
    # The warm-up would be pointless if its synthetic calls were turned away or stopped early.
    runtime = app.extensions["cds_runtime"]
    for spec in runtime.knowledge.services:
        body = warm_up_request(spec, NOW.date())
        assert validate(body, "request") == []
        with runtime.dry_run():
            result = call_service(runtime, spec.id, body)
        assert result.body["cards"], spec.id
    runtime.recorder.flush()
    assert _rows(runtime.settings.database_url) == (0, 0)


def test_a_dry_run_call_is_recorded_once_the_block_ends(client: FlaskClient, app: Flask) -> None:
    runtime = app.extensions["cds_runtime"]
    spec = runtime.knowledge.services[0]
    body = warm_up_request(spec, NOW.date())
    with runtime.dry_run():
        call_service(runtime, spec.id, body)
    response = client.post(f"/cds-services/{spec.id}", json=body)
    assert response.status_code == 200 and response.get_json()["cards"]
    runtime.recorder.flush()
    assert _rows(runtime.settings.database_url)[0] == len(response.get_json()["cards"])
