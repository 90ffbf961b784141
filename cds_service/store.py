"""The service's database (SQLite by default, PostgreSQL via CDS_DATABASE_URL), through SQLAlchemy."""

from __future__ import annotations

import hashlib
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

if TYPE_CHECKING:
    from cds_service.runtime import Runtime

metadata = MetaData()

# JWT ids already accepted, kept until the token expires, so a replayed client JWT is refused by every
# worker and replica that shares this database. Only a hash of issuer + jti is stored.
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
)


class StoreUnavailable(Exception):
    """The database could not be reached."""


@cache
def engine_for(url: str) -> Engine:
    """One pooled engine per database URL and process; an embedded SQLite file gets its folder made."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"connect_timeout": 3} if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def init_schema(url: str) -> None:
    """Create missing tables; raises StoreUnavailable when the database cannot be reached."""
    try:
        metadata.create_all(engine_for(url))
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(type(exc).__name__) from None


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


def token_hash(issuer: str, jti: str) -> str:
    """The stored form of a JWT id: a SHA-256 of issuer and jti (the token itself is never stored)."""
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


def remember_jti(url: str, key: str, expires_at: datetime, now: datetime) -> bool:
    """Record a JWT id; False when it was already recorded (a replay). Raises StoreUnavailable."""
    for attempt in (1, 2):
        try:
            engine = engine_for(url)
            with engine.begin() as connection:
                connection.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now))
            with engine.begin() as connection:
                connection.execute(insert(jwt_replay).values(token_hash=key, expires_at=expires_at))
        except IntegrityError:
            return False
        except (SQLAlchemyError, OSError) as exc:
            if attempt == 2:
                raise StoreUnavailable(type(exc).__name__) from None
            # The database may have been down at start-up: create the tables, then try once more.
            init_schema(url)
            continue
        return True
    return True
