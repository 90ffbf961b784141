"""Replay protection for client JWTs: each (issuer, jti) may be used once until the token expires."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite

from cds_service.store import session
from cds_service.store.schema import jwt_replay


def token_hash(issuer: str, jti: str) -> str:
    """The stored form of a JWT id: a SHA-256 of issuer and jti (the token itself is never stored)."""
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


def remember_jti(url: str, key: str, expires_at: datetime, now: datetime) -> bool:
    """Record a JWT id in one statement; False when it is already recorded and not yet expired (a
    replay). Expired ids are removed by `cds-service prune`; until then one is simply taken over.
    Raises StoreUnavailable."""
    with session(url, one_statement=True) as connection:
        dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(jwt_replay).values(token_hash=key, expires_at=expires_at)
        statement = statement.on_conflict_do_update(
            index_elements=["token_hash"],
            set_={"expires_at": statement.excluded.expires_at},
            where=jwt_replay.c.expires_at < now,
        ).returning(jwt_replay.c.token_hash)
        return connection.execute(statement).first() is not None
