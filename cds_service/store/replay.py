"""Replay protection for client JWTs: each (issuer, jti) may be used once until the token expires."""

from __future__ import annotations

import hashlib
from datetime import datetime
from types import ModuleType

from sqlalchemy import Insert, bindparam
from sqlalchemy.dialects import postgresql, sqlite

from cds_service.store import session
from cds_service.store.schema import jwt_replay


def token_hash(issuer: str, jti: str) -> str:
    """The stored form of a JWT id: a SHA-256 of issuer and jti (the token itself is never stored)."""
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


def _remember(dialect: ModuleType) -> Insert:
    statement = dialect.insert(jwt_replay).values(
        token_hash=bindparam("key"), expires_at=bindparam("expires_at")
    )
    upsert: Insert = statement.on_conflict_do_update(
        index_elements=["token_hash"],
        set_={"expires_at": statement.excluded.expires_at},
        where=jwt_replay.c.expires_at < bindparam("now"),
    ).returning(jwt_replay.c.token_hash)
    return upsert


# Built once: a statement built on every call costs SQLAlchemy its cache key every time (~0.3 ms
# CPU, ~7% of a production-shaped call; bench/README.md).
_REMEMBER = {"postgresql": _remember(postgresql), "sqlite": _remember(sqlite)}


def remember_jti(url: str, key: str, expires_at: datetime, now: datetime) -> bool:
    """Record a JWT id in one statement; False when it is already recorded and not yet expired (a
    replay). Expired ids are removed by `cds-service prune`; until then one is simply taken over.
    Raises StoreUnavailable."""
    with session(url, one_statement=True) as connection:
        statement = _REMEMBER[connection.dialect.name]
        values = {"key": key, "expires_at": expires_at, "now": now}
        return connection.execute(statement, values).first() is not None
