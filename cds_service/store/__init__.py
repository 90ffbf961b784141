"""The service's database (SQLite embedded by default, PostgreSQL via CDS_DATABASE_URL), through SQLAlchemy.

Modules: `schema` (tables), `replay` (JWT ids), `cards` (issued cards and snoozing), `feedback`,
`report`; migrations are Alembic scripts in `migrations/`, applied by `migrate()`.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

# Every engine engine_for() made in this process (functools.cache offers no way to list them).
_CREATED: list[Engine] = []


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer."""


# Errors that mean "the database is not there right now" rather than a bug of ours.
STORE_ERRORS = (SQLAlchemyError, OSError)


@cache
def engine_for(url: str, autocommit: bool = False) -> Engine:
    """One pooled engine per database URL and process; an embedded SQLite file gets its folder made.

    An `autocommit` engine is for work done in one statement on every hook call (the JWT replay
    check): the statement is its own transaction and costs one round trip, without a BEGIN and
    COMMIT around it or a pre-ping before it. A dead pooled connection then fails that statement;
    SQLAlchemy invalidates the pool, the caller treats the store as unavailable for that call, and
    the next call connects afresh.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Short connect timeout: a down database must fail a call fast, not hang it.
    connect_args: dict[str, object] = (
        {"connect_timeout": 2} if backend == "postgresql" else {"timeout": 5}
    )
    # A server connection can drop between calls, so PostgreSQL's are tested at checkout; an
    # embedded SQLite file cannot, and the test would cost every hook call a query.
    engine = create_engine(
        url,
        pool_pre_ping=backend != "sqlite" and not autocommit,
        pool_recycle=300,
        connect_args=connect_args,
        isolation_level="AUTOCOMMIT" if autocommit else None,
    )
    _CREATED.append(engine)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # Set once per new connection, so every use of it has the same durability. WAL lets gunicorn's
    # workers and threads read while one writes; synchronous FULL keeps a committed write (a
    # feedback item answered 200) through a power loss.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.close()


def dispose_engines() -> None:
    """Forget every engine and its pooled connections (after fork, or when a test is done with them)."""
    for engine in _CREATED:
        engine.dispose(close=False)
    _CREATED.clear()
    engine_for.cache_clear()


def ping(url: str) -> tuple[bool, str]:
    """(reachable, backend name or the error class) for readiness checks; never raises."""
    try:
        engine = engine_for(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except STORE_ERRORS as exc:
        return False, f"unreachable ({type(exc).__name__})"
    return True, engine.dialect.name


def migrate(url: str) -> int:
    """Bring the database schema to the newest Alembic revision and return how many migrations
    that applied (0: it was up to date); StoreUnavailable if unreachable."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    engine = config.attributes["engine"] = engine_for(url)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
        pending = list(ScriptDirectory.from_config(config).iterate_revisions("heads", current))
        command.upgrade(config, "head")
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    return len(pending)
