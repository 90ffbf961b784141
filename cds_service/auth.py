"""Verification of CDS client JWTs (CDS Hooks §Trusting CDS Clients and the security best practices).

A request is accepted only with `Authorization: Bearer <JWT>` where: the header names an asymmetric
algorithm we accept (never `none`, never HMAC), `typ` JWT and a `kid`; `iss` is a trusted issuer;
the key is that issuer's: from its static JWK Set when that holds the `kid` (whatever `jku` the
header names), otherwise from a `jku` allowlisted for it (fetched with a TTL cache and refetched on
an unknown `kid` at most once a minute); the signature verifies; `aud` is the URL the client
called; `exp`, `iat` and `nbf` hold within the allowed clock skew; the token lives at most an hour;
and its `jti` has not been seen before (one INSERT in the database shared by every worker and
replica). Any failure is a bare 401; the reason goes to the log, the token never does.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

from cds_service.errors import Unauthorized
from cds_service.store import StoreUnavailable
from cds_service.store.replay import remember_jti, token_hash
from cds_service.urls import is_loopback_host

log = logging.getLogger(__name__)

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384", "PS256", "PS512")
MAX_LIFETIME = timedelta(hours=1)


class AuthConfigError(ValueError):
    """The trusted-issuers file is missing or malformed."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One CDS client we trust: its `iss`, where its keys may come from, and an optional tenant."""

    iss: str
    jku: tuple[str, ...] = ()
    jwks: PyJWKSet | None = None
    tenant: str | None = None


def load_trusted_issuers(path: Path) -> dict[str, TrustedIssuer]:
    """The trusted issuers in a JSON file (format in README §Security); AuthConfigError if invalid."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AuthConfigError(f"cannot read trusted issuers file {path}: {exc}") from None
    issuers: dict[str, TrustedIssuer] = {}
    entries = document.get("issuers") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise AuthConfigError(f'{path}: expected {{"issuers": [...]}}')
    for number, entry in enumerate(entries):
        where = f"{path}: issuers[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str):
            raise AuthConfigError(f"{where}: needs an 'iss' string")
        jku = entry.get("jku", [])
        jku = [jku] if isinstance(jku, str) else jku
        for url in jku:
            if not isinstance(url, str) or check_jku(url):
                raise AuthConfigError(
                    f"{where}: each jku must be an https URL (http only on loopback)"
                )
        keys = entry.get("jwks")
        if isinstance(entry.get("jwks_file"), str):
            key_path = (path.parent / entry["jwks_file"]).resolve()
            try:
                keys = json.loads(key_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise AuthConfigError(f"{where}: cannot read jwks_file: {exc}") from None
        jwks = None
        if keys is not None:
            try:
                jwks = PyJWKSet.from_dict(keys)
            except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
                raise AuthConfigError(f"{where}: invalid JWK Set: {exc}") from None
        if jwks is None and not jku:
            raise AuthConfigError(f"{where}: give 'jwks', 'jwks_file' or 'jku'")
        issuers[entry["iss"]] = TrustedIssuer(entry["iss"], tuple(jku), jwks, entry.get("tenant"))
    return issuers


@dataclass
class JwksCache:
    """JWK Sets fetched from allowlisted `jku` URLs, kept for a TTL."""

    http: httpx.Client
    ttl_seconds: float = 3600.0
    # An unknown `kid` refetches the set (keys rotate), but not more often than this: tokens with
    # made-up kids must not turn into a stream of fetches.
    min_refetch_seconds: float = 60.0
    _entries: dict[str, tuple[float, PyJWKSet]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self, url: str, refresh: bool = False) -> PyJWKSet:
        """The JWK Set at `url`, from cache unless stale or `refresh`; raises Unauthorized on failure."""
        with self._lock:
            cached = self._entries.get(url)
        age = time.monotonic() - cached[0] if cached else math.inf
        if cached and age < self.ttl_seconds and (not refresh or age < self.min_refetch_seconds):
            return cached[1]
        try:
            response = self.http.get(url, timeout=3.0, headers={"Accept": "application/json"})
            response.raise_for_status()
            jwks = PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            raise _reject(f"could not fetch the JWK Set from jku ({type(exc).__name__})") from None
        with self._lock:
            self._entries[url] = (time.monotonic(), jwks)
        return jwks


@dataclass
class Verifier:
    """Verifies client JWTs for one service deployment."""

    issuers: dict[str, TrustedIssuer]
    public_base_url: str
    database_url: str
    jwks_cache: JwksCache
    clock_skew_seconds: int = 300
    _local_replay: dict[str, datetime] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def verify(self, authorization: str | None, path: str, now: datetime) -> dict[str, Any]:
        """The verified claims of the bearer JWT for a call to `path`; raises Unauthorized."""
        if not authorization or not authorization.startswith("Bearer "):
            raise _reject("no bearer token")
        token = authorization.removeprefix("Bearer ").strip()
        try:
            unverified = jwt.api_jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _reject("malformed token") from None
        header, payload = unverified["header"], unverified["payload"]
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise _reject(f"algorithm {alg!r} is not accepted")
        if header.get("typ") not in (None, "JWT"):
            raise _reject("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _reject("no kid")
        issuer = self.issuers.get(str(payload.get("iss")))
        if issuer is None:
            raise _reject("untrusted issuer")
        key = self._key(issuer, header, kid)
        audience = self.public_base_url + path
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=issuer.iss,
                leeway=self.clock_skew_seconds,
                options={"require": ["iss", "aud", "exp", "iat", "jti"], "verify_iat": True},
            )
        except jwt.InvalidAudienceError:
            raise _reject("aud is not this endpoint") from None
        except jwt.ExpiredSignatureError:
            raise _reject("expired") from None
        except jwt.ImmatureSignatureError:
            raise _reject("not yet valid (nbf or iat in the future)") from None
        except jwt.InvalidSignatureError:
            raise _reject("bad signature") from None
        except jwt.PyJWTError as exc:
            raise _reject(f"invalid token ({type(exc).__name__})") from None
        if issuer.tenant and claims.get("tenant") != issuer.tenant:
            raise _reject("tenant is not the one trusted for this issuer")
        expires = datetime.fromtimestamp(claims["exp"], UTC)
        issued = datetime.fromtimestamp(claims["iat"], UTC)
        if expires - issued > MAX_LIFETIME:
            raise _reject("token lifetime exceeds one hour")
        self._check_replay(issuer.iss, str(claims["jti"]), expires, now)
        return claims

    def _key(self, issuer: TrustedIssuer, header: dict[str, Any], kid: str) -> PyJWK:
        # The trust file's keys decide for every kid they hold: a jku in the header cannot
        # replace them, and a deployment without internet access still verifies its clients.
        found = _find(issuer.jwks, kid)
        if found is not None:
            return found
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku:
            raise _reject("jku is not allowlisted for this issuer")
        for url in issuer.jku if jku is None else (jku,):
            found = _find(self.jwks_cache.keys(url), kid) or _find(
                self.jwks_cache.keys(url, refresh=True), kid
            )
            if found is not None:
                return found
        raise _reject("unknown kid")

    def _check_replay(self, iss: str, jti: str, expires: datetime, now: datetime) -> None:
        key = token_hash(iss, jti)
        keep_until = expires + timedelta(seconds=self.clock_skew_seconds)
        try:
            fresh = remember_jti(self.database_url, key, keep_until, now)
        except StoreUnavailable:
            # Database down: replay protection falls back to this worker's memory (documented).
            log.warning("jti store unavailable; replay check is per worker until it returns")
            with self._lock:
                for old in [k for k, until in self._local_replay.items() if until < now]:
                    del self._local_replay[old]
                fresh = key not in self._local_replay
                self._local_replay[key] = keep_until
        if not fresh:
            raise _reject("jti replayed")


def check_jku(url: str) -> str | None:
    """None when `url` may serve keys: https, or http on a loopback address (local testing)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return None
    return "not https"


def _find(jwks: PyJWKSet | None, kid: str) -> PyJWK | None:
    if jwks is None:
        return None
    for key in jwks.keys:
        if key.key_id == kid:
            return key
    return None


def _reject(reason: str) -> Unauthorized:
    log.warning("client JWT rejected", extra={"reason": reason})
    return Unauthorized("authentication required")
