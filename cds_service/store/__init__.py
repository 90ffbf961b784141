"""The service's database (SQLite embedded by default, PostgreSQL via CDS_DATABASE_URL), through SQLAlchemy.

Modules: `schema` (tables), `replay` (JWT ids), `cards` (issued cards and snoozing), `feedback`,
`report`; migrations are Alembic scripts in `migrations/`, applied by `migrate()`. Every unit of
database work goes through `session()`, which gives it a deadline (`DEADLINE_SECONDS`) unless it is
maintenance (reports, pruning).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

# Every engine engine_for() made in this process (functools.cache offers no way to list them).
_CREATED: list[Engine] = []

# The longest one unit of database work (checkout, statements, commit) may take on PostgreSQL. A
# database that stops answering must cost a call no more than this: the call then goes on without
# it, as it does when the database refuses connections.
DEADLINE_SECONDS = 2.0
# libpq connection settings: the connect timeout (whole seconds, at least 2), TCP keepalives and a
# TCP user timeout so a peer that vanished is noticed on idle and busy connections alike, and
# server-side limits just under the deadline so a slow but live server ends the statement itself.
_PG_CONNECT = {
    "connect_timeout": 2,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "tcp_user_timeout": 5000,
}
_PG_OPTIONS = (
    "-c statement_timeout=1500 -c lock_timeout=1000 -c idle_in_transaction_session_timeout=10000"
)


class StoreUnavailable(Exception):
    """The database could not be reached or did not answer."""


class StoreRefused(StoreUnavailable):
    """The database refused the data itself (a value it cannot hold); retrying will not help."""


# Errors that mean "the database is not there right now" rather than a bug of ours.
STORE_ERRORS = (exc.SQLAlchemyError, OSError)
_REFUSED = (exc.DataError, exc.IntegrityError)


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
    connect_args: dict[str, object] = {"timeout": 5}
    if backend == "postgresql":
        given = parsed.query.get("options")
        given = " ".join(given) if isinstance(given, tuple) else given
        connect_args = {
            **_PG_CONNECT,
            "options": f"{given} {_PG_OPTIONS}" if given else _PG_OPTIONS,
        }
    engine = create_engine(
        url,
        pool_recycle=300,
        pool_timeout=DEADLINE_SECONDS,
        connect_args=connect_args,
        isolation_level="AUTOCOMMIT" if autocommit else None,
    )
    _CREATED.append(engine)
    if backend == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # A server connection can drop between calls, so PostgreSQL's are tested at checkout
        # (SQLAlchemy's pre-ping, done here so that it runs under the watchdog too); an embedded
        # SQLite file cannot drop, and the test would cost every hook call a query.
        event.listen(engine, "do_connect", _connect_in_time)
        event.listen(engine, "connect", _fresh)
        event.listen(engine, "checkout", _watch if autocommit else _watch_and_ping)
    return engine


def _connect_in_time(dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
    # A unit of work whose deadline has passed (its pooled connection was just cut) does not
    # start a new connection as well: that would add a whole connect timeout to the call.
    if _WATCHDOG.expired():
        raise dialect.loaded_dbapi.OperationalError("the database deadline has passed")


def _fresh(_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info["fresh"] = True


def _watch(connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
    _WATCHDOG.attach(connection.fileno())


def _watch_and_ping(connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
    _watch(connection, record, proxy)
    if record.info.pop("fresh", False):
        return  # just connected: nothing to test
    try:
        # As SQLAlchemy's pre-ping: the unit of work goes on from here.
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # any failure: let the pool replace the connection
        raise exc.DisconnectionError(type(error).__name__) from None


class _Watchdog:
    """Cuts the database connections of a thread whose unit of work has run past its deadline.

    libpq has no client-side timeout for a statement: on a connection whose server stopped
    answering (a hung process, a black hole that accepts and never replies), a read waits forever,
    and statement_timeout, keepalives and tcp_user_timeout cannot end it (the server's kernel still
    acknowledges). Shutting the socket down wakes that read with an error, the driver reports a
    lost connection, SQLAlchemy discards it, and the caller sees StoreUnavailable in time.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every thread and lock (in a child of fork: the parent's are not ours)."""
        self._wake = threading.Condition()
        self._armed: dict[int, tuple[float, list[int]]] = {}  # thread id -> (deadline, sockets)
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float) -> None:
        with self._wake:
            self._armed[threading.get_ident()] = (time.monotonic() + seconds, [])
            # Threads do not survive fork: each gunicorn worker starts its own on first use.
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
                self._thread.start()

    def attach(self, fd: int) -> None:
        with self._wake:
            entry = self._armed.get(threading.get_ident())
            if entry is None:
                return
            entry[1].append(fd)
            if time.monotonic() >= entry[0]:  # connected after the deadline: no time left
                _cut(fd)
            self._wake.notify()  # (not on arm(): a unit of work is watched once it has a socket)

    def expired(self) -> bool:
        """Whether this thread's unit of work is past its deadline."""
        with self._wake:
            entry = self._armed.get(threading.get_ident())
        return entry is not None and time.monotonic() >= entry[0]

    def disarm(self) -> None:
        with self._wake:
            self._armed.pop(threading.get_ident(), None)

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for thread, (deadline, fds) in list(self._armed.items()):
                    if deadline <= now and fds:
                        for fd in fds:
                            _cut(fd)
                        self._armed[thread] = (deadline, [])
                soonest = min((d for d, fds in self._armed.values() if fds), default=None)
                self._wake.wait(None if soonest is None else max(0.01, soonest - now))


def _cut(fd: int) -> None:
    # On a duplicate of the descriptor, so the driver still owns (and closes) the original; the
    # watchdog's lock is held, and the thread owning the socket is still inside its unit of work.
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(fd))
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.close()


_WATCHDOG = _Watchdog()
# A child of fork (a gunicorn worker) gets a fresh watchdog: the parent's thread is gone, and its
# lock may have been held at the moment of the fork.
os.register_at_fork(after_in_child=_WATCHDOG.reset)


def unbounded(connection: Connection) -> Connection:
    """`connection` with the service's statement and lock timeouts lifted for its transaction, for
    work that may take long and has no caller waiting (migrations, reports, pruning)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        connection.exec_driver_sql("SET LOCAL lock_timeout = 0")
    return connection


@contextlib.contextmanager
def session(
    url: str, *, write: bool = False, one_statement: bool = False, maintenance: bool = False
) -> Iterator[Connection]:
    """One unit of database work within DEADLINE_SECONDS: a connection (in a transaction committed
    at the end if `write`; `one_statement`: on the autocommit engine, one round trip, for the JWT
    replay check; `maintenance`: without the deadline, statement and lock timeouts, for reports and
    pruning). Raises StoreRefused when the database refuses a value, StoreUnavailable when it
    cannot be reached or does not answer in time."""
    if not maintenance:
        _WATCHDOG.arm(DEADLINE_SECONDS)
    try:
        engine = engine_for(url, autocommit=one_statement)
        with engine.begin() if write and not one_statement else engine.connect() as connection:
            yield unbounded(connection) if maintenance else connection
    except _REFUSED as error:
        raise StoreRefused(type(error).__name__) from None
    except STORE_ERRORS as error:
        raise StoreUnavailable(type(error).__name__) from None
    finally:
        _WATCHDOG.disarm()


def aware(value: datetime) -> datetime:
    """A datetime read back from the database, in UTC (SQLite returns naive ones; everything the
    service stores is UTC)."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


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
        with session(url) as connection:
            connection.execute(text("SELECT 1"))
            name = connection.dialect.name
    except StoreUnavailable as error:
        return False, f"unreachable ({error})"
    return True, name


def _alembic_config() -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    return config


@cache
def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def schema_lag(url: str) -> str | None:
    """None when the database schema has every migration this release ships (or a later release's:
    a rollout's older pods keep serving after the migration Job), else why not, in one sentence.
    Reads only (no DDL): for pods that do not migrate at start. StoreUnavailable if unreachable."""
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    with session(url) as connection:
        current = MigrationContext.configure(connection).get_current_heads()
    scripts = _scripts()
    try:
        pending = list(scripts.iterate_revisions("heads", current))
    except CommandError:  # a revision this release does not know: a newer release migrated
        return None
    if not pending:
        return None
    return (
        f"database schema is {len(pending)} migration{'s' if len(pending) != 1 else ''} behind "
        f"this release (at {', '.join(current) or 'no schema'}, needs "
        f"{', '.join(scripts.get_heads())}): run `cds-service migrate` (the migration Job)"
    )


def migrate(url: str) -> int:
    """Bring the database schema to the newest Alembic revision and return how many migrations
    that applied (0: it was up to date); StoreUnavailable if unreachable."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    config = _alembic_config()
    engine = config.attributes["engine"] = engine_for(url)
    try:
        # Replicas starting together all call this: one migrates, the others wait, then find the
        # schema current (without the lock two would create the same tables and one would fail).
        with _migration_lock(engine):
            with engine.connect() as connection:
                current = MigrationContext.configure(connection).get_current_heads()
            pending = list(_scripts().iterate_revisions("heads", current))
            command.upgrade(config, "head")
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    return len(pending)


# pg_advisory_xact_lock's key for migrations: any fixed number no other lock of the database uses.
_MIGRATION_LOCK_KEY = 0x6364735F6D696772  # "cds_migr"
# How long a starting replica waits for another's migration before it gives up and starts without.
_MIGRATION_LOCK_TIMEOUT = "60s"


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """Hold the database's migration lock: on PostgreSQL an advisory lock (held by a transaction on
    its own connection, released when it ends, even if this process dies); on an SQLite file an
    exclusive lock on a file beside it (SQLite has no lock of its own outside a transaction)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:
            connection.execute(text(f"SET LOCAL lock_timeout = '{_MIGRATION_LOCK_TIMEOUT}'"))
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
            )
            yield
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        yield  # an in-memory database belongs to one process
        return
    with open(f"{database}.migrate-lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file is closed
        yield
