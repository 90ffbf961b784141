"""The long-lived parts of a worker: settings, knowledge, clock, HTTP client, verifier, card recorder."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import httpx

from cds_service.auth import JwksCache, Verifier, load_trusted_issuers
from cds_service.clock import Clock
from cds_service.config import Settings
from cds_service.fhir.client import new_http_client
from cds_service.knowledge import Knowledge
from cds_service.knowledge.loader import Service
from cds_service.metrics import STORE_FAILURES
from cds_service.store import schema_lag
from cds_service.store.cards import OverriddenPatients
from cds_service.store.recorder import CardRecorder

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


class FetchPool(ThreadPoolExecutor):
    """The worker's threads for FHIR fetches. Once the interpreter is exiting (a worker stopped at
    once, its requests still running) a thread pool takes no new work; a call then fetches in its
    own thread rather than fail (the FHIR client's deadline still bounds it)."""

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        try:
            return super().submit(fn, *args, **kwargs)
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            future: Future[T] = Future()
            try:
                future.set_result(fn(*args, **kwargs))
            except Exception as exc:
                future.set_exception(exc)
            return future


@dataclass
class Runtime:
    """Built once by the app factory; shared by all requests of a worker process."""

    settings: Settings
    knowledge: Knowledge
    clock: Clock = field(default_factory=Clock)
    http: httpx.Client = field(init=False)
    executor: ThreadPoolExecutor = field(init=False)
    verifier: Verifier | None = field(init=False, default=None)
    recorder: CardRecorder = field(init=False)
    overridden: OverriddenPatients = field(init=False)
    _store_retry_at: float = field(init=False, default=0.0)
    _schema_current: bool = field(init=False, default=False)
    _services_by_id: dict[str, tuple[Service, ...]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        # One pooled client per worker; redirects are not followed so a FHIR server cannot bounce the
        # access token to a host that is not on the allowlist.
        self.http = new_http_client()
        self.executor = FetchPool(
            max_workers=self.settings.fhir_max_concurrency, thread_name_prefix="fhir-fetch"
        )
        for spec in self.knowledge.services:
            self._services_by_id[spec.id] = (*self._services_by_id.get(spec.id, ()), spec)
        settings = self.settings
        self.recorder = CardRecorder(settings.database_url, self.store_failed)
        self.overridden = OverriddenPatients(settings.database_url)
        if settings.auth == "jwt":
            assert settings.trusted_issuers and settings.public_base_url  # checked by load_settings
            self.verifier = Verifier(
                issuers=load_trusted_issuers(settings.trusted_issuers),
                public_base_url=settings.public_base_url,
                database_url=settings.database_url,
                jwks_cache=JwksCache(self.http, settings.jwks_cache_seconds),
                clock_skew_seconds=settings.jwt_clock_skew_seconds,
                store_available=self.store_available,
                on_store_failure=self.store_failed,
            )

    def store_available(self) -> bool:
        """False for a short while after a database failure, so hook calls do not wait on it."""
        return time.monotonic() >= self._store_retry_at

    def store_failed(self, operation: str) -> None:
        """Note a database failure: skip optional database work for the next few seconds."""
        STORE_FAILURES.labels(operation).inc()
        log.warning("database unavailable; continuing without it", extra={"reason": operation})
        self._store_retry_at = time.monotonic() + self.settings.store_retry_seconds

    def schema_lag(self) -> str | None:
        """Why the database schema is older than this release, if this process does not migrate at
        start (CDS_MIGRATE_AT_START=false); None once current (schemas only move forward).
        StoreUnavailable if the database does not answer."""
        if self.settings.migrate_at_start or self._schema_current:
            return None
        lag = schema_lag(self.settings.database_url)
        self._schema_current = lag is None
        return lag

    def services_with_id(self, service_id: str) -> tuple[Service, ...]:
        """Every (id, hook) entry registered under `service_id`."""
        return self._services_by_id.get(service_id, ())

    def exiting(self) -> None:
        """The process is about to exit (gunicorn's worker_exit, SIGTERM to `run`): store the queued
        records, and from now on each call's cards before it answers.

        A worker stopped at once (SIGINT, SIGQUIT) gets here while its requests still run, so the
        HTTP client and the fetch threads stay open for them: the process's exit releases both.
        """
        self.recorder.close()
        if self.verifier is not None:
            self.verifier.close()

    def close(self) -> None:
        """Store queued records and release the HTTP pool and threads (no request may be running)."""
        self.exiting()
        self.http.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
