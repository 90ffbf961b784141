"""Replay protection for client JWTs: each (issuer, jti) may be used once until the token expires."""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from cds_service.store import STORE_ERRORS, StoreUnavailable, engine_for
from cds_service.store.schema import jwt_replay


def token_hash(issuer: str, jti: str) -> str:
    """The stored form of a JWT id: a SHA-256 of issuer and jti (the token itself is never stored)."""
    return hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()


def remember_jti(url: str, key: str, expires_at: datetime, now: datetime) -> bool:
    """Record a JWT id; False when it was already recorded (a replay). Raises StoreUnavailable."""
    try:
        engine = engine_for(url)
        with engine.begin() as connection:
            connection.execute(delete(jwt_replay).where(jwt_replay.c.expires_at < now))
        with engine.begin() as connection:
            connection.execute(insert(jwt_replay).values(token_hash=key, expires_at=expires_at))
    except IntegrityError:
        return False
    except STORE_ERRORS as exc:
        raise StoreUnavailable(type(exc).__name__) from None
    return True
