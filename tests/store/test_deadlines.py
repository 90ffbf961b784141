"""Every unit of database work has a deadline (issue 19 item 2); migrations are not bound by it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text

from cds_service.store import DEADLINE_SECONDS, StoreUnavailable, migrate, session
from tests.conftest import postgres_schema
from tests.support.tcp_proxy import TcpProxy


def test_service_connections_carry_server_side_timeouts_and_keep_the_search_path() -> None:
    with postgres_schema() as url:
        migrate(url)
        with session(url) as connection:
            assert connection.execute(text("SHOW statement_timeout")).scalar() == "1500ms"
            assert connection.execute(text("SHOW lock_timeout")).scalar() == "1s"
            # The URL's own options (the test's private schema) are kept, not replaced.
            assert connection.execute(text("SHOW search_path")).scalar().startswith("cds_test_")


def test_a_slow_statement_is_ended_by_the_server() -> None:
    with postgres_schema() as url:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable), session(url) as connection:
            connection.execute(text("SELECT pg_sleep(10)"))
        assert time.monotonic() - started < DEADLINE_SECONDS + 1


def test_a_silent_server_is_cut_off_at_the_deadline() -> None:
    with postgres_schema() as direct:
        host_port = direct.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        with TcpProxy(host, int(port)) as proxy:
            url = direct.replace(host_port, f"127.0.0.1:{proxy.port}")
            with session(url) as connection:
                connection.execute(text("SELECT 1"))  # a pooled connection, then silence
            proxy.black_hole()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable), session(url) as connection:
                connection.execute(text("SELECT 1"))
            assert time.monotonic() - started < DEADLINE_SECONDS + 1
            proxy.restore()
            with session(url) as connection:  # the cut connection was replaced
                assert connection.execute(text("SELECT 1")).scalar() == 1


def test_maintenance_work_runs_without_the_call_deadline_and_timeouts() -> None:
    with postgres_schema() as url, session(url, maintenance=True) as connection:
        assert connection.execute(text("SHOW statement_timeout")).scalar() == "0"
        assert connection.execute(text("SHOW lock_timeout")).scalar() == "0"
        # Longer than a call's deadline and statement timeout: a report or a prune may take that.
        connection.execute(text(f"SELECT pg_sleep({DEADLINE_SECONDS + 0.5})"))
