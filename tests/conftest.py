"""Shared fixtures: the app with a fixed clock, its test client, and response-schema checking."""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import QueuePool

from cds_service import store
from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.config import Settings, load_settings
from cds_service.knowledge import Knowledge, load_knowledge
from cds_service.protocol.schemas import validate
from cds_service.store import engine_for

# Fails the run when a test reads outside the repository (a fresh clone has nothing beside it).
pytest_plugins = ["tests.support.outside_reads"]

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
# Every test runs "today" at this instant, so look-back windows and ages are reproducible.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SERVICE_ID = "leg-cramps-after-stroke"


POSTGRES_URL = os.environ.get(
    "CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def no_postgres(exc: OperationalError) -> NoReturn:
    """PostgreSQL did not answer: a failure in CI (which has it), elsewhere a skip that says why."""
    if os.environ.get("CI"):
        raise exc
    pytest.skip(f"no PostgreSQL at {POSTGRES_URL} ({type(exc).__name__})")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A database URL on the local PostgreSQL whose search_path is a fresh, private schema."""
    schema = f"cds_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        with admin.begin() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    except OperationalError as exc:
        admin.dispose()
        no_postgres(exc)
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        release(url)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def release(url: str) -> None:
    """Close the service's pooled connections to `url` (tests use many short-lived databases)."""
    engine_for(url).dispose()
    engine_for(url, autocommit=True).dispose()
    engine_for.cache_clear()


@pytest.fixture(autouse=True)
def _no_pooled_connections_outlive_a_test() -> Iterator[None]:
    """Each test's engines close their pooled connections when it ends: the suite makes hundreds
    of databases and apps, and PostgreSQL allows only so many connections (100 here)."""
    yield
    for engine in list(store._CREATED):
        if holds_connections(engine):
            engine.dispose()


def holds_connections(engine: Engine) -> bool:
    """Whether the engine's pool has connections pooled or lent out. store._CREATED lists every
    engine of the session (thousands by its end), and disposing an idle one still replaces its
    pool: done after every test, that cost grew with each test (~80 ms a test per 2,000 engines)."""
    pool = engine.pool
    if not isinstance(pool, QueuePool):
        return True  # a pool that cannot tell: dispose it, as before
    return pool.checkedin() > 0 or pool.checkedout() > 0


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on the embedded SQLite store and on the local PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
        yield url
        release(url)
    else:
        with postgres_schema() as url:
            yield url


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Development settings with the database in tmp_path; keyword overrides win."""
    return load_settings(
        {"CDS_ENV": "development", "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'test.sqlite3'}"},
        **overrides,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = make_settings(tmp_path)
    yield settings
    release(settings.database_url)


@pytest.fixture(scope="session")
def knowledge() -> Knowledge:
    """The knowledge base in cards/, loaded once for the session."""
    return load_knowledge(ROOT / "cards")


@pytest.fixture
def app(settings: Settings, knowledge: Knowledge) -> Iterator[Flask]:
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    app.config["TESTING"] = True
    yield app
    app.extensions["cds_runtime"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def assert_valid_response(body: Any) -> None:
    """The body is a valid CDS Hooks response (our schema: no nulls, no empties, card rules)."""
    problems = validate(body, "response")
    assert problems == [], problems


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Node ids as pytest-xdist's loadgroup scheduling needs them, which runs each node id once and
    reads a test's xdist_group from a "@group" suffix. Schemathesis (4.x on pytest 9) gives each
    operation's test the same node id: loadgroup ran one of the six, silently; they take their
    parametrized name instead. xdist adds the suffix by setting `_nodeid`, which pytest 9.2 no
    longer reads (every group was ignored); in a worker it is added here."""
    counts = Counter(item.nodeid for item in items)
    for item in items:
        if counts[item.nodeid] > 1:
            rename(item, f"{item.nodeid.rpartition('::')[0]}::{item.name}")
    repeated = [nodeid for nodeid, n in Counter(item.nodeid for item in items).items() if n > 1]
    if repeated:
        raise pytest.UsageError(f"tests with the same node id (one would not run): {repeated}")
    # Workers see --dist as "no"; xdist leaves them `loadgroup` instead.
    if hasattr(config, "workerinput") and getattr(config.option, "loadgroup", False):
        for item in items:
            groups = sorted({str(mark.args[0]) for mark in item.iter_markers("xdist_group")})
            if groups and not item.nodeid.endswith(f"@{'_'.join(groups)}"):
                rename(item, f"{item.nodeid}@{'_'.join(groups)}")


def rename(item: pytest.Item, nodeid: str) -> None:
    """Give `item` another node id (pytest 9.2 keeps it as a parsed `_id`, earlier ones as a string)."""
    if hasattr(item, "_id"):
        item._id = type(item._id).parse(nodeid)
    else:
        item._nodeid = nodeid
