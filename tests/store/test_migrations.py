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
