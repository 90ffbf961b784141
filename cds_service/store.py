"""The service's database (SQLite by default, PostgreSQL via CDS_DATABASE_URL), through SQLAlchemy."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

if TYPE_CHECKING:
    from cds_service.runtime import Runtime


@cache
def engine_for(url: str) -> Engine:
    """One pooled engine per database URL and process; an embedded SQLite file gets its folder made."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, pool_pre_ping=True)


def ping(rt: Runtime) -> tuple[bool, str]:
    """(reachable, backend name or the error class) for readiness checks; never raises."""
    url = rt.settings.database_url
    try:
        engine = engine_for(url)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        return False, f"unreachable ({type(exc).__name__})"
    return True, engine.dialect.name
