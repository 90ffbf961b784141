"""JWT ids: one statement per call records an id, refuses a replay, and takes over an expired one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cds_service.store import migrate
from cds_service.store.replay import remember_jti, token_hash

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
