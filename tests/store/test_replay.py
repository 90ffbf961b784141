"""JWT ids: one statement per call records an id, refuses a replay, and takes over an expired one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.engine import make_url

from cds_service.app import create_app
from cds_service.clock import Clock
from cds_service.knowledge import Knowledge
from cds_service.store import StoreUnavailable, migrate
from cds_service.store.replay import remember_jti, token_hash
from tests.conftest import FIXTURES, SERVICE_ID, make_settings, postgres_schema, release
from tests.support.pg_round_trips import PgRoundTrips
from tests.support.tcp_proxy import TcpProxy
from tests.test_auth import BASE, EC_KEY, STATIC_ISS, jwk, token

OUT_OF_SCOPE = "01-out-of-scope-cramps-without-stroke.json"

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_jti_is_accepted_once_until_it_expires(database_url: str) -> None:
    migrate(database_url)
    key = token_hash("https://ehr.example.org", "jti-1")
    expires = NOW + timedelta(minutes=5)
    assert remember_jti(database_url, key, expires, NOW)
    assert not remember_jti(database_url, key, expires, NOW + timedelta(minutes=4))
    other = token_hash("https://other.example.org", "jti-1")  # the same jti from another issuer
    assert remember_jti(database_url, other, expires, NOW)
    # Not yet pruned, but expired: the row no longer proves a replay.
    later = NOW + timedelta(minutes=6)
    assert remember_jti(database_url, key, later + timedelta(minutes=5), later)
    assert not remember_jti(database_url, key, later + timedelta(minutes=5), later)


def _secured_app_on(database_url: str, tmp_path: Path, knowledge: Knowledge) -> Flask:
    issuers = tmp_path / "trusted-issuers.json"
    keys = {"keys": [jwk(EC_KEY.public_key(), "ec-1", "ES384")]}
    issuers.write_text(json.dumps({"issuers": [{"iss": STATIC_ISS, "jwks": keys}]}))
    settings = make_settings(
        tmp_path,
        auth="jwt",
        public_base_url=BASE,
        trusted_issuers=issuers,
        database_url=database_url,
    )
    return create_app(settings, clock=Clock(), knowledge=knowledge)


def test_an_authenticated_call_costs_one_postgresql_round_trip(
    tmp_path: Path, knowledge: Knowledge
) -> None:
    # Issue 17: the replay check is the only database work of a call for an out-of-scope patient,
    # and it must be one statement: no pre-ping, no BEGIN/COMMIT around it.
    scenario = json.loads((FIXTURES / "scenarios" / OUT_OF_SCOPE).read_text())
    path = f"/cds-services/{SERVICE_ID}"
    with postgres_schema() as url:
        real = make_url(url)
        assert real.host and real.port
        with PgRoundTrips(real.host, real.port) as proxy:
            proxied = real.set(port=proxy.port).render_as_string(hide_password=False)
            app = _secured_app_on(proxied, tmp_path, knowledge)
            client = app.test_client()

            def call() -> None:
                headers = {"Authorization": f"Bearer {token(path)}"}
                answer = client.post(path, json=scenario["request"], headers=headers)
                assert answer.status_code == 200, answer.text
                assert answer.json == {"cards": []}

            for _ in range(10):  # psycopg prepares a statement on its 5th use: past that
                call()
            proxy.reset()
            for _ in range(20):
                call()
            app.extensions["cds_runtime"].close()
            release(proxied)
        assert proxy.round_trips == 20, proxy.statements
        # No pre-ping (";"), BEGIN or COMMIT; the INSERT is sent by name once psycopg prepared it.
        assert [s for s in proxy.statements if not s.startswith("INSERT")] == []


def test_a_dropped_connection_fails_one_check_and_the_next_reconnects() -> None:
    # Without a pre-ping, a pooled connection the server dropped is found dead by the statement
    # itself: that one check reports the store unavailable (the verifier then falls back to its
    # memory), and the next check connects afresh.
    expires = NOW + timedelta(minutes=5)
    with postgres_schema() as url:
        real = make_url(url)
        assert real.host and real.port
        with TcpProxy(real.host, real.port) as proxy:
            proxied = real.set(port=proxy.port).render_as_string(hide_password=False)
            migrate(proxied)
            assert remember_jti(proxied, token_hash("iss", "a"), expires, NOW)
            proxy.stop()  # drops every connection, as a database restart does
            proxy.start()
            with pytest.raises(StoreUnavailable):
                remember_jti(proxied, token_hash("iss", "b"), expires, NOW)
            assert remember_jti(proxied, token_hash("iss", "c"), expires, NOW)
            assert not remember_jti(proxied, token_hash("iss", "c"), expires, NOW)
            release(proxied)
