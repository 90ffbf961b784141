"""deploy/postgres-roles.sql on the real PostgreSQL: the serving role serves, only the migrator changes
the schema, and a serving pod that does not migrate at start is not ready until the schema is current.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from cds_service.app import create_app
from cds_service.clock import fixed_clock
from cds_service.knowledge import Knowledge
from cds_service.store import StoreUnavailable, migrate, schema_lag
from cds_service.store.schema import feedback, issued_cards
from tests.conftest import (
    FIXTURES,
    NOW,
    POSTGRES_URL,
    ROOT,
    SERVICE_ID,
    make_settings,
    no_postgres,
    release,
)

ROLES_SQL = ROOT / "deploy" / "postgres-roles.sql"
LOW_CALCIUM = FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json"
MIGRATIONS = len(list((ROOT / "cds_service" / "store" / "migrations" / "versions").glob("0*.py")))


@dataclass
class Roles:
    migrator: str  # database URLs, each logging in as its role
    app: str
    schema: str


@pytest.fixture
def roles() -> Iterator[Roles]:
    """deploy/postgres-roles.sql as shipped, with names of this test's own (roles are cluster-wide)."""
    tag = uuid.uuid4().hex[:10]
    names = {
        "cds_migrator": f"cds_migrator_{tag}",
        "cds_app": f"cds_app_{tag}",
        "cds": f"cds_{tag}",
    }
    sql = re.sub(
        r"\b(cds_migrator|cds_app|cds)\b", lambda m: names[m.group(1)], ROLES_SQL.read_text()
    )
    admin = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 2})
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(sql)
    except OperationalError as exc:
        admin.dispose()
        no_postgres(exc)
    url = make_url(POSTGRES_URL)
    found = Roles(
        url.set(username=names["cds_migrator"]).render_as_string(hide_password=False),
        url.set(username=names["cds_app"]).render_as_string(hide_password=False),
        names["cds"],
    )
    try:
        yield found
    finally:
        release(found.migrator)
        release(found.app)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{names["cds"]}" CASCADE'))
            for role in (names["cds_app"], names["cds_migrator"]):
                connection.execute(text(f'DROP OWNED BY "{role}"'))
                connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()


def refused(url: str, statement: str) -> bool:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(statement)
    except ProgrammingError as error:
        return "permission denied" in str(error) or "must be owner" in str(error)
    finally:
        engine.dispose()
    return False


def test_the_serving_role_serves_and_records_but_cannot_change_the_schema(
    roles: Roles, knowledge: Knowledge, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url=roles.app, migrate_at_start=False)
    app = create_app(settings, clock=fixed_clock(NOW), knowledge=knowledge)
    client = app.test_client()
    try:
        # Started before the migration Job: not ready, and says why; it changed nothing.
        waiting = client.get("/readyz")
        assert waiting.status_code == 503
        assert f"{MIGRATIONS} migrations behind" in waiting.get_json()["reason"], waiting.get_json()
        assert "cds-service migrate" in waiting.get_json()["reason"]
        with pytest.raises(StoreUnavailable):  # the serving role cannot migrate
            migrate(roles.app)
        assert migrate(roles.migrator) == MIGRATIONS  # the Job
        assert schema_lag(roles.app) is None
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.get_json()["store"] == "postgresql"

        # Serves: cards recorded, an override stored and honoured (rows written by the app role).
        request = json.loads(LOW_CALCIUM.read_text(encoding="utf-8"))["request"]
        answer = client.post(f"/cds-services/{SERVICE_ID}", json=request)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        card = answer.get_json()["cards"][0]
        app.extensions["cds_runtime"].recorder.flush()
        override = {
            "card": card["uuid"],
            "outcome": "overridden",
            "outcomeTimestamp": "2026-11-24T12:01:00Z",
        }
        stored = client.post(f"/cds-services/{SERVICE_ID}/feedback", json={"feedback": [override]})
        assert stored.status_code == 200 and stored.get_json()["new"] == 1, stored.get_json()
        again = client.post(f"/cds-services/{SERVICE_ID}", json=request).get_json()["cards"]
        assert card["source"]["topic"]["code"] not in [c["source"]["topic"]["code"] for c in again]
    finally:
        app.extensions["cds_runtime"].close()
    engine = create_engine(roles.migrator)
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(issued_cards)).scalar_one() >= 1
        assert connection.execute(select(func.count()).select_from(feedback)).scalar_one() == 1
    engine.dispose()

    # No DDL for the serving role, in its schema or in public; the migrator has it.
    assert refused(roles.app, "CREATE TABLE extra (i integer)")
    assert refused(roles.app, "CREATE TABLE public.extra (i integer)")
    assert refused(roles.app, "ALTER TABLE issued_cards ADD COLUMN extra integer")
    assert refused(roles.app, "DROP TABLE feedback")
    assert refused(roles.app, "TRUNCATE jwt_replay")
    assert not refused(roles.migrator, "ALTER TABLE issued_cards ADD COLUMN extra integer")
