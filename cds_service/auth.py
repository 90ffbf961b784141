"""Verification of CDS client JWTs (CDS Hooks §Trusting CDS Clients and the security best practices).

A request is accepted only with `Authorization: Bearer <JWT>` where: the header names an asymmetric
algorithm we accept (never `none`, never HMAC), `typ` JWT and a `kid`; `iss` is a trusted issuer;
the key is that issuer's: from its static JWK Set when that holds the `kid` (whatever `jku` the
header names), otherwise from a `jku` allowlisted for it (fetched with a TTL cache, within a
deadline and a size limit, and fetched at most once a minute per URL whatever tokens arrive, failed
fetches included); the header's algorithm is one the key allows (its JWK's `alg` if it names one,
otherwise any of ours for its type and curve); the signature verifies; `aud` is the URL the client
called; `exp`, `iat` and `nbf` are numbers within 1970-9999 and hold within the allowed clock skew;
the token lives at most an hour; and its `jti` has not been seen before (one INSERT in the database
shared by every worker and replica; see `Verifier` for an outage). Any failure is a bare 401; the
reason goes to the log, the token never does.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from jwt import PyJWK, PyJWKSet

from cds_service.errors import Unauthorized
from cds_service.fhir.client import call_deadline
from cds_service.store import StoreUnavailable
from cds_service.store.replay import remember_jti, token_hash
from cds_service.urls import is_loopback_host

log = logging.getLogger(__name__)

ALGORITHMS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384", "PS256", "PS512")
MAX_LIFETIME = timedelta(hours=1)
# RFC 7519 §5.1: typ is a media type (case-insensitive, "application/" may be left out).
TYP = frozenset({"jwt", "application/jwt"})
# NumericDates the service can turn into times: 1970-01-01 to 9999-12-31T23:59:59Z.
LATEST_NUMERIC_DATE = 253_402_300_799


class AuthConfigError(ValueError):
    """The trusted-issuers file is missing or malformed."""


@dataclass(frozen=True)
class TrustedIssuer:
    """One CDS client we trust: its `iss`, where its keys may come from, and an optional tenant."""

    iss: str
    jku: tuple[str, ...] = ()
    jwks: PyJWKSet | None = None
    tenant: str | None = None
    # kid -> the `alg` its JWK names, for the keys that name one (PyJWK fills in a default otherwise).
    declared_algs: Mapping[str, str] = field(default_factory=dict)


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
            if not isinstance(url, str) or not _may_serve_keys(url):
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
        issuers[entry["iss"]] = TrustedIssuer(
            entry["iss"], tuple(jku), jwks, entry.get("tenant"), declared_algs(keys)
        )
    return issuers


def declared_algs(document: Any) -> dict[str, str]:
    """kid -> `alg` for the keys of a JWK Set document that name their algorithm."""
    keys = document.get("keys") if isinstance(document, dict) else None
    return {
        key["kid"]: key["alg"]
        for key in keys or []
        if isinstance(key, dict)
        and isinstance(key.get("kid"), str)
        and isinstance(key.get("alg"), str)
    }


@dataclass
class JwksCache:
    """JWK Sets fetched from allowlisted `jku` URLs, kept for a TTL.

    Anyone can send a token naming a trusted issuer and a made-up `kid` (the key is looked up
    before any signature is checked), so fetches are bounded by time, not by tokens: a URL is
    fetched at most once per `min_refetch_seconds`, whether that fetch worked or not; one thread
    fetches it at a time, within `fetch_deadline_seconds` for the whole transfer and `max_bytes`;
    a caller that already has keys never waits for a fetch, and one without waits for at most one.
    """

    http: httpx.Client
    ttl_seconds: float = 3600.0
    # An unknown `kid` refetches the set (keys rotate), but not more often than this.
    min_refetch_seconds: float = 60.0
    fetch_deadline_seconds: float = 3.0
    max_bytes: int = 256 * 1024
    _entries: dict[str, tuple[float, PyJWKSet, dict[str, str]]] = field(default_factory=dict)
    _attempts: dict[str, float] = field(default_factory=dict)  # url -> last fetch started
    _fetching: dict[str, threading.Lock] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def keys(self, url: str, refresh: bool = False) -> tuple[PyJWKSet, Mapping[str, str]]:
        """The JWK Set at `url` (and its keys' declared algs), from cache unless stale or `refresh`
        and not fetched within `min_refetch_seconds`; raises Unauthorized when there is none."""
        with self._lock:
            cached = self._entries.get(url)
            fetching = self._fetching.setdefault(url, threading.Lock())
        age = time.monotonic() - cached[0] if cached else math.inf
        if cached and age < self.ttl_seconds and not refresh:
            return cached[1], cached[2]
        # With keys in hand, never wait for another thread's fetch; without, wait for one at most.
        wait = 0.0 if cached else self.fetch_deadline_seconds + 1
        got = fetching.acquire(timeout=wait) if wait else fetching.acquire(blocking=False)
        if not got:
            if cached:
                return cached[1], cached[2]
            raise _reject("the JWK Set is being fetched for another call")
        try:
            with self._lock:
                cached = self._entries.get(url)
                recent = time.monotonic() - self._attempts.get(url, -math.inf)
            if recent < self.min_refetch_seconds:
                if cached:
                    return cached[1], cached[2]
                raise _reject("the JWK Set could not be fetched a moment ago; not tried again yet")
            try:
                document = self._fetch(url)
                jwks = PyJWKSet.from_dict(document)
            except (jwt.PyJWTError, KeyError, TypeError, ValueError) as exc:
                raise _reject(f"the jku holds no usable JWK Set ({type(exc).__name__})") from None
            finally:
                # The interval runs from the end of the attempt, worked or not: a fetch that took
                # its whole deadline does not let the next caller start another one at once.
                with self._lock:
                    self._attempts[url] = time.monotonic()
            with self._lock:
                self._entries[url] = (time.monotonic(), jwks, declared_algs(document))
            return jwks, declared_algs(document)
        finally:
            fetching.release()

    def _fetch(self, url: str) -> Any:
        """The JSON at `url`, read within the fetch deadline (every socket read included, so a
        server that drips bytes is cut off) and at most `max_bytes` of it."""
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        body = bytearray()
        try:
            with (
                call_deadline(self.fetch_deadline_seconds),
                self.http.stream(
                    "GET", url, headers=headers, timeout=self.fetch_deadline_seconds
                ) as response,
            ):
                response.raise_for_status()
                if response.headers.get("Content-Encoding", "identity").lower() != "identity":
                    raise ValueError("an encoded body was not asked for")
                for chunk in response.iter_raw():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise ValueError("the JWK Set is too large")
            return json.loads(body)
        except (httpx.HTTPError, httpx.InvalidURL, ValueError, RecursionError) as exc:
            raise _reject(f"could not fetch the JWK Set from jku ({type(exc).__name__})") from None


@dataclass
class Verifier:
    """Verifies client JWTs for one service deployment.

    Replay checks use the database. While it is unavailable (`store_available()` false, or a call
    fails) they fall back to this worker's memory, and the ids accepted meanwhile are written to the
    database when it answers again (by the next call, or within `RECONCILE_SECONDS` by a background
    thread), so a replay to any worker after that is refused. Limits, stated in README §Security:
    during an outage another worker or replica does not see these ids (each accepts a token once),
    and ids accepted through the database are not kept in memory, so one accepted before an outage
    can be accepted once more during it.
    """

    issuers: dict[str, TrustedIssuer]
    public_base_url: str
    database_url: str
    jwks_cache: JwksCache
    clock_skew_seconds: int = 300
    store_available: Callable[[], bool] = lambda: True
    on_store_failure: Callable[[str], None] = lambda operation: None
    _local_replay: dict[str, datetime] = field(default_factory=dict)
    # Ids accepted from memory, not yet in the database: key -> (keep until, when accepted).
    _unwritten: dict[str, tuple[datetime, datetime]] = field(default_factory=dict)
    _reconciler: threading.Thread | None = None
    _closed: threading.Event = field(default_factory=threading.Event)
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
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in TYP:
            raise _reject("typ is not JWT")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _reject("no kid")
        issuer = self.issuers.get(str(payload.get("iss")))
        if issuer is None:
            raise _reject("untrusted issuer")
        for name in ("exp", "iat", "nbf"):
            if name in payload and not _numeric_date(payload[name]):
                raise _reject(f"{name} is not a NumericDate within 1970-9999")
        key, declared = self._key(issuer, header, kid)
        if not _allows(key, declared, alg):
            raise _reject(f"algorithm {alg!r} is not one this key allows")
        audience = self.public_base_url + path
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,  # the key itself: a PyJWK would impose its own (default) algorithm
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
        expires = datetime.fromtimestamp(claims["exp"], UTC)  # in range: checked above
        issued = datetime.fromtimestamp(claims["iat"], UTC)
        if expires - issued > MAX_LIFETIME:
            raise _reject("token lifetime exceeds one hour")
        self._check_replay(issuer.iss, str(claims["jti"]), expires, now)
        return claims

    def _key(
        self, issuer: TrustedIssuer, header: dict[str, Any], kid: str
    ) -> tuple[PyJWK, str | None]:
        # The trust file's keys decide for every kid they hold: a jku in the header cannot
        # replace them, and a deployment without internet access still verifies its clients.
        found = _find(issuer.jwks, kid)
        if found is not None:
            return found, issuer.declared_algs.get(kid)
        jku = header.get("jku")
        if jku is not None and jku not in issuer.jku:
            raise _reject("jku is not allowlisted for this issuer")
        for url in issuer.jku if jku is None else (jku,):
            for refresh in (False, True):
                jwks, declared = self.jwks_cache.keys(url, refresh=refresh)
                found = _find(jwks, kid)
                if found is not None:
                    return found, declared.get(kid)
        raise _reject("unknown kid")

    def _check_replay(self, iss: str, jti: str, expires: datetime, now: datetime) -> None:
        key = token_hash(iss, jti)
        keep_until = expires + timedelta(seconds=self.clock_skew_seconds)
        fresh: bool | None = None
        if self.store_available():
            try:
                fresh = remember_jti(self.database_url, key, keep_until, now)
            except StoreUnavailable:
                self.on_store_failure("record jti")
        if fresh is None:
            # Database down: replay protection falls back to this worker's memory (documented).
            log.warning("jti store unavailable; replay check is per worker until it returns")
            with self._lock:
                for old in [k for k, until in self._local_replay.items() if until < now]:
                    del self._local_replay[old]
                fresh = key not in self._local_replay
                self._local_replay[key] = keep_until
                if fresh:
                    self._unwritten[key] = (keep_until, now)
                self._start_reconciler()
        if not fresh:
            raise _reject("jti replayed")

    def _start_reconciler(self) -> None:
        # Called with the lock held. Threads do not survive fork: checked on every use.
        if self._reconciler is None or not self._reconciler.is_alive():
            self._reconciler = threading.Thread(
                target=self._reconcile_until_done, name="jti-reconciler", daemon=True
            )
            self._reconciler.start()

    def close(self) -> None:
        """Stop offering ids to the database (at worker exit)."""
        self._closed.set()

    def _reconcile_until_done(self) -> None:
        while not self._closed.wait(RECONCILE_SECONDS):
            with self._lock:
                if not self._unwritten:
                    self._reconciler = None
                    return
            # Tried whatever store_available() says: the sooner the ids are written, the shorter
            # the time another worker could accept one of them again.
            self._reconcile()

    def _reconcile(self) -> None:
        """Write the ids accepted from memory to the database (stops at the first failure)."""
        now = datetime.now(UTC)
        with self._lock:
            for key in [k for k, (until, _) in self._unwritten.items() if until < now]:
                del self._unwritten[key]  # expired: no replay of it can be accepted any more
            pending = dict(self._unwritten)
        for key, (keep_until, accepted) in pending.items():
            try:
                if not remember_jti(self.database_url, key, keep_until, accepted):
                    # Already recorded: another worker accepted the same id during the outage (a
                    # replay that could not be refused then), or our own write landed unanswered.
                    log.warning("a jti accepted during the outage was already recorded")
            except StoreUnavailable:
                self.on_store_failure("reconcile jti")
                return
            with self._lock:
                self._unwritten.pop(key, None)


def _may_serve_keys(url: str) -> bool:
    """Whether a jku may serve keys: https, or http on a loopback address (local testing)."""
    parts = urlsplit(url)
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(parts.hostname))


RECONCILE_SECONDS = 1.0  # how often ids accepted from memory are offered to the database again


def _numeric_date(value: Any) -> bool:
    """An RFC 7519 NumericDate the service can use: a JSON number (not a boolean), 1970-9999."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 <= value <= LATEST_NUMERIC_DATE
    )


def _allows(key: PyJWK, declared: str | None, alg: str) -> bool:
    """Whether a token signed with `alg` (one of ALGORITHMS) may be verified with `key`: the alg
    its JWK names, or else any of ours for its type (RSA: RS*/PS*; EC: the ES* of its curve)."""
    if declared is not None:
        return alg == declared
    if key.key_type == "RSA":
        return alg.startswith(("RS", "PS"))
    if key.key_type == "EC":
        return alg == key.algorithm_name  # PyJWK derives it from the curve
    return False


def _find(jwks: PyJWKSet | None, kid: str) -> PyJWK | None:
    keys = jwks.keys if jwks is not None else []
    return next((key for key in keys if key.key_id == kid), None)


def _reject(reason: str) -> Unauthorized:
    log.warning("client JWT rejected", extra={"reason": reason})
    return Unauthorized("authentication required")
