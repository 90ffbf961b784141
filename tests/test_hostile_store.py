"""What a sick database and data it cannot hold do to the service (issue 19 items 1, 2, 7 and 12).

Cases are data in fixtures/hostile/database.yaml. Everything runs on the real PostgreSQL, in a
private schema per test, reached through tests/support/tcp_proxy.py where a test makes it fail:
refused, silent (a black hole that accepts and reads and never answers) or losing its answers.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm
from sqlalchemy import create_engine, text

from cds_service.app import create_app
from cds_service.clock import Clock, fixed_clock
from cds_service.knowledge import Knowledge
from tests.conftest import FIXTURES, NOW, SERVICE_ID, make_settings, postgres_schema, release
from tests.support.tcp_proxy import TcpProxy
from tests.test_hostile import example_call

HOSTILE = FIXTURES / "hostile"
BASE = "https://cds.example.org"
ISS = "https://ehr.example.org"
KEY = ec.generate_private_key(ec.SECP384R1())
HOOK = f"/cds-services/{SERVICE_ID}"
FEEDBACK = f"{HOOK}/feedback"


def cases(section: str) -> list[dict[str, Any]]:
    loaded: dict[str, list[dict[str, Any]]] = yaml.safe_load(
        (HOSTILE / "database.yaml").read_text("utf-8")
    )
    return loaded[section]


def case_id(case: dict[str, Any]) -> str:
    return repr({k: v for k, v in case.items() if k != "why"})[:80]


def token(path: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": BASE + path, "exp": now + 300, "iat": now, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, KEY, algorithm="ES384", headers={"kid": "k", "typ": "JWT"})


def jwt_app(tmp_path: Path, knowledge: Knowledge, url: str, **overrides: Any) -> Flask:
    issuers = tmp_path / "issuers.json"
    key = {**json.loads(ECAlgorithm.to_jwk(KEY.public_key())), "kid": "k"}
    issuers.write_text(json.dumps({"issuers": [{"iss": ISS, "jwks": {"keys": [key]}}]}), "utf-8")
    settings = make_settings(
        tmp_path,
        auth="jwt",
        public_base_url=BASE,
        trusted_issuers=issuers,
        database_url=url,
        **overrides,
    )
    return create_app(settings, clock=Clock(), knowledge=knowledge)


@contextmanager
def proxied_postgres() -> Iterator[tuple[str, str, TcpProxy]]:
    """(direct URL, URL through the proxy, the proxy) of a private PostgreSQL schema."""
    with postgres_schema() as direct:
        host_port = direct.split("@", 1)[1].split("/", 1)[0]
        host, port = host_port.split(":")
        with TcpProxy(host, int(port)) as proxy:
            yield direct, direct.replace(host_port, f"127.0.0.1:{proxy.port}"), proxy


def cards_of(response: Any) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [c["source"]["topic"]["code"] for c in response.get_json()["cards"]]


def override(card_uuid: str, **reason: Any) -> dict[str, Any]:
    return {
        "card": card_uuid,
        "outcome": "overridden",
        "outcomeTimestamp": "2026-11-24T11:00:00Z",
        "overrideReason": reason or {"userComment": "hostile suite"},
    }


def calcium_card(response: Any) -> str:
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(
        next(
            c["uuid"]
            for c in response.get_json()["cards"]
            if c["source"]["topic"]["code"] == "calcium-low"
        )
    )


# --- item 2: a database that stops answering ---------------------------------------------------


def make_fault(proxy: TcpProxy, fault: str) -> None:
    if fault == "refused":
        proxy.stop()
    elif fault == "black-hole":
        proxy.black_hole()
    elif fault == "black-hole-new":
        proxy.black_hole(close_existing=True)
    else:
        assert fault == "answers-lost"
        proxy.answers_lost()


def end_fault(proxy: TcpProxy, fault: str) -> None:
    if fault == "refused":
        proxy.start()
    else:
        proxy.restore()


def timed(action: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = action()
    return result, time.monotonic() - started


@pytest.mark.parametrize("case", cases("outages"), ids=case_id)
def test_a_database_that_stops_answering(
    tmp_path: Path, knowledge: Knowledge, case: dict[str, Any]
) -> None:
    with proxied_postgres() as (_, url, proxy):
        app = jwt_app(tmp_path, knowledge, url, store_retry_seconds=1.0)

        def hook() -> Any:
            return app.test_client().post(
                HOOK, json=example_call(), headers={"Authorization": f"Bearer {token(HOOK)}"}
            )

        try:
            card = calcium_card(hook())  # the pool now holds a working connection
            make_fault(proxy, case["fault"])
            results: list[tuple[int, float, list[str]]] = []
            lock = threading.Lock()
            remaining = list(range(case["calls"]))

            def worker() -> None:
                while True:
                    with lock:
                        if not remaining:
                            return
                        remaining.pop()
                    response, seconds = timed(hook)
                    with lock:
                        results.append(
                            (response.status_code, seconds, response.get_json().get("cards", []))
                        )

            threads = [threading.Thread(target=worker, daemon=True) for _ in range(case["threads"])]
            started = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=max(0.1, started + 30 - time.monotonic()))
            assert len(results) == case["calls"], (
                f"{len(results)} of {case['calls']} answered in 30 s"
            )
            assert {status for status, _, _ in results} == {200}
            assert all(cards for _, _, cards in results)  # fail-open: cards still shown
            slowest = max(seconds for _, seconds, _ in results)
            assert slowest < case["within"], slowest

            client = app.test_client()
            ready, seconds = timed(lambda: client.get("/readyz"))
            # Ready (hook calls work without the database), answered at once, the store reported.
            assert ready.status_code == 200 and seconds < case["within"], seconds
            assert ready.get_json()["store"] != "postgresql"
            sent, seconds = timed(
                lambda: client.post(
                    FEEDBACK,
                    json={"feedback": [override(card)]},
                    headers={"Authorization": f"Bearer {token(FEEDBACK)}"},
                )
            )
            assert sent.status_code == 503 and seconds < case["within"], (sent.status_code, seconds)
            assert int(sent.headers["Retry-After"]) > 0

            end_fault(proxy, case["fault"])
            deadline = time.monotonic() + 15
            while client.get("/readyz").get_json()["store"] != "postgresql":
                assert time.monotonic() < deadline, (
                    "/readyz does not report the database 15 s after it returned"
                )
                time.sleep(0.2)
            assert calcium_card(hook())
        finally:
            if proxy.mode != "forward":
                proxy.restore()  # threads still waiting on the silence (if any) end
            app.extensions["cds_runtime"].close()
            release(url)


# --- item 7: feedback the database cannot hold ---------------------------------------------------


def expand(value: Any, card: str) -> Any:
    if isinstance(value, dict) and "repeat" in value:
        return value["repeat"] * value["times"]
    if isinstance(value, str):
        return value.replace("{card}", card)
    return value


def put(item: dict[str, Any], field: str, value: Any) -> None:
    *parents, last = field.split(".")
    for name in parents:
        item = item.setdefault(name, {})
    item[last] = value


@pytest.fixture
def pg_client(tmp_path: Path, knowledge: Knowledge) -> Iterator[FlaskClient]:
    with postgres_schema() as url:
        settings = make_settings(tmp_path, database_url=url)
        app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
        yield app.test_client()
        app.extensions["cds_runtime"].close()


@pytest.mark.parametrize("case", cases("feedback_fields"), ids=case_id)
def test_feedback_the_database_cannot_hold(pg_client: FlaskClient, case: dict[str, Any]) -> None:
    client = pg_client
    card = calcium_card(client.post(HOOK, json=example_call()))
    reason = {"system": "http://example.org/override-reasons", "code": "declined"}
    item = override(card, reason=reason, userComment="hostile suite")
    value = case["value"]
    if isinstance(value, dict) and "raw" in value:
        put(item, case["field"], "@RAW@")
        body = json.dumps({"feedback": [item]}).replace('"@RAW@"', value["raw"])
        response = client.post(FEEDBACK, data=body, content_type="application/json")
    else:
        put(item, case["field"], expand(value, card))
        response = client.post(FEEDBACK, json={"feedback": [item]})
    assert response.status_code == case["expect"], response.get_data(as_text=True)
    if case["expect"] == 400:
        paths = [i.get("expression", [""])[0] for i in response.get_json()["issue"]]
        assert case.get("path", f"$.feedback[0].{case['field']}") in paths, paths
        # Refused, so not stored: the card still shows; and recording was not switched off: the
        # next card is recorded, and an override of it is attributed and holds it back.
        second = calcium_card(client.post(HOOK, json=example_call()))
        assert client.post(FEEDBACK, json={"feedback": [override(second)]}).status_code == 200
    assert "calcium-low" not in cards_of(client.post(HOOK, json=example_call()))


def test_an_override_sent_during_an_outage_is_not_lost(
    tmp_path: Path, knowledge: Knowledge
) -> None:
    """A card shown while the database is down, overridden then: 503 until the card's record is
    stored, then the override is attributed and the card held back."""
    with proxied_postgres() as (_, url, proxy):
        settings = make_settings(tmp_path, database_url=url, store_retry_seconds=0.5)
        app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
        client = app.test_client()
        try:
            cards_of(client.post(HOOK, json=example_call()))
            proxy.stop()
            card = calcium_card(client.post(HOOK, json=example_call()))
            during = client.post(FEEDBACK, json={"feedback": [override(card)]})
            assert during.status_code == 503 and int(during.headers["Retry-After"]) > 0
            proxy.start()
            deadline = time.monotonic() + 15
            while (sent := client.post(FEEDBACK, json={"feedback": [override(card)]})).status_code:
                if sent.status_code == 200:
                    break
                assert sent.status_code == 503, sent.get_data(as_text=True)
                assert time.monotonic() < deadline, "feedback still refused 15 s after recovery"
                time.sleep(0.3)
            assert "calcium-low" not in cards_of(client.post(HOOK, json=example_call()))
        finally:
            app.extensions["cds_runtime"].close()
            release(url)


# --- item 1: overrides already stored with impossible times ------------------------------------


@pytest.mark.parametrize("case", cases("stored_overrides"), ids=case_id)
def test_stored_override_times(tmp_path: Path, knowledge: Knowledge, case: dict[str, Any]) -> None:
    with postgres_schema() as url:
        settings = make_settings(tmp_path, database_url=url)
        first = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
        client = first.test_client()
        card = calcium_card(client.post(HOOK, json=example_call()))
        assert client.post(FEEDBACK, json={"feedback": [override(card)]}).status_code == 200
        first.extensions["cds_runtime"].close()
        direct = create_engine(url)
        with direct.begin() as connection:
            connection.execute(
                text(
                    "UPDATE feedback SET outcome_at = CAST(:outcome AS timestamptz), received_at = :received"
                ),
                {"outcome": case["outcome_at"], "received": NOW - timedelta(days=case["received"])},
            )
        direct.dispose()
        release(url)
        later = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
        try:
            kinds = cards_of(later.test_client().post(HOOK, json=example_call()))
            assert ("calcium-low" not in kinds) == case["snoozed"], kinds
        finally:
            later.extensions["cds_runtime"].close()


# --- item 12: JWT ids accepted while the database was down ---------------------------------------


@pytest.mark.parametrize("case", cases("replays"), ids=case_id)
def test_replays_around_an_outage(
    tmp_path: Path, knowledge: Knowledge, case: dict[str, Any]
) -> None:
    with proxied_postgres() as (_, url, proxy):
        workers = {}
        for name in ("A", "B"):
            (tmp_path / name).mkdir()
            workers[name] = jwt_app(tmp_path / name, knowledge, url, store_retry_seconds=0.5)
        once = token("/cds-services")
        statuses = []
        try:
            for step in case["steps"]:
                if step == "down":
                    proxy.stop()
                elif step == "up":
                    proxy.start()
                    time.sleep(2.5)  # the database is back; let the workers notice
                else:
                    response = (
                        workers[step]
                        .test_client()
                        .get("/cds-services", headers={"Authorization": f"Bearer {once}"})
                    )
                    statuses.append(response.status_code)
            assert statuses == case["expect"]
        finally:
            if proxy._listener is None:
                proxy.start()
            for app in workers.values():
                app.extensions["cds_runtime"].close()
            release(url)
