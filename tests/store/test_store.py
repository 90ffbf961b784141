"""The store's engines: SQLite's durability is set once per connection, whatever used it last."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cds_service.store import engine_for, migrate
from cds_service.store.cards import IssuedCard, record_issued
from tests.conftest import release


def test_every_sqlite_connection_is_wal_and_fully_synchronous(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    migrate(url)
    at = datetime(2026, 11, 24, tzinfo=UTC)
    record_issued(
        url, [IssuedCard(f"00000000-0000-4000-8000-{0:012d}", "s", "k", "info", "p", "e", at)]
    )
    engine = engine_for(url)
    connections = [engine.connect() for _ in range(3)]  # the one the write used, and new ones
    try:
        for connection in connections:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        for connection in connections:
            connection.close()
        release(url)
