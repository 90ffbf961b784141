"""Alembic migrations build the schema the code expects, on SQLite and PostgreSQL, idempotently."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from cds_service.store import engine_for, migrate
from cds_service.store.schema import metadata


def test_migrations_create_every_table_and_match_the_models(database_url: str) -> None:
    migrate(database_url)
    migrate(database_url)  # a second run is a no-op
    engine = engine_for(database_url)
    tables = set(inspect(engine).get_table_names())
    assert {"jwt_replay", "issued_cards", "feedback", "alembic_version"} <= tables
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []


def test_recorder_stores_cards_in_the_background_and_flushes_on_close(database_url: str) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import func, select

    from cds_service.store.cards import IssuedCard
    from cds_service.store.recorder import CardRecorder
    from cds_service.store.schema import issued_cards

    migrate(database_url)
    failures: list[str] = []
    recorder = CardRecorder(database_url, failures.append)
    now = datetime(2026, 11, 24, tzinfo=UTC)
    for n in range(250):
        recorder.submit(
            [
                IssuedCard(
                    f"00000000-0000-4000-8000-{n:012d}",
                    "svc",
                    "kind",
                    "info",
                    "p" * 64,
                    "e" * 64,
                    now,
                )
            ]
        )
    recorder.close()
    with engine_for(database_url).connect() as connection:
        stored = connection.execute(select(func.count()).select_from(issued_cards)).scalar_one()
    assert stored == 250 and failures == []


def test_recorder_reports_a_down_database_and_keeps_going(tmp_path: object) -> None:
    from datetime import UTC, datetime

    from cds_service.store.cards import IssuedCard
    from cds_service.store.recorder import CardRecorder

    failures: list[str] = []
    recorder = CardRecorder("postgresql+psycopg://nobody@127.0.0.1:1/none", failures.append)
    card = IssuedCard(
        "00000000-0000-4000-8000-000000000001",
        "svc",
        "kind",
        "info",
        "p" * 64,
        "e" * 64,
        datetime.now(UTC),
    )
    recorder.submit([card])
    recorder.flush(timeout=10)
    recorder.submit([card])
    recorder.close(timeout=1)  # held cards get a last try at close, within the timeout
    assert set(failures) == {"record issued cards"} and len(failures) >= 2


def test_replicas_started_together_migrate_once(database_url: str) -> None:
    """Several processes (replicas starting at once) migrate the same fresh database: exactly one
    applies the migrations, the others wait for it and find nothing to do, none fails."""
    import subprocess
    import sys

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tests.conftest import ROOT

    script = "import sys; from cds_service.store import migrate; print(migrate(sys.argv[1]))"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script, database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [process.communicate(timeout=120) for process in processes]
    assert [p.returncode for p in processes] == [0] * 4, [err for _, err in results]
    config = Config()
    config.set_main_option("script_location", str(ROOT / "cds_service" / "store" / "migrations"))
    revisions = len(list(ScriptDirectory.from_config(config).walk_revisions()))
    assert sorted(int(out) for out, _ in results) == [0, 0, 0, revisions]


def test_cards_recorded_before_0004_are_shown_and_unversioned(database_url: str) -> None:
    """0004 adds the content version and the silent flag: older records read as shown cards of no
    version (the report's "(unversioned)"), never as silent."""
    from datetime import UTC, datetime

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import select, text

    from cds_service.store.report import UNVERSIONED, report
    from cds_service.store.schema import issued_cards
    from tests.conftest import ROOT

    config = Config()
    config.set_main_option("script_location", str(ROOT / "cds_service" / "store" / "migrations"))
    config.attributes["engine"] = engine_for(database_url)
    command.upgrade(config, "0003")
    with engine_for(database_url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO issued_cards (card_uuid, service_id, card_kind, indicator, "
                "patient_hash, evidence_hash, issued_at) VALUES ('00000000-0000-4000-8000-0000000"
                "00001', 'svc', 'calcium-low', 'warning', :p, :e, :at)"
            ),
            {"p": "p" * 64, "e": "e" * 64, "at": datetime(2026, 11, 24, tzinfo=UTC)},
        )
    assert migrate(database_url) == 1
    with engine_for(database_url).connect() as connection:
        row = connection.execute(select(issued_cards)).one()
    assert (row.silent, row.knowledge_version, row.content_hash) == (False, None, None)
    [counted] = report(database_url, None, by_version=True)
    assert (counted.version, counted.shown, counted.silent) == (UNVERSIONED, 1, 0)
