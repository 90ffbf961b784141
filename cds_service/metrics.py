"""Prometheus metrics: requests and latency per endpoint and service, cards, feedback, snoozes.

Under gunicorn with several workers set PROMETHEUS_MULTIPROC_DIR (an empty, writable directory) so
/metrics aggregates every worker; without it each scrape sees the worker that answers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter(
    "cds_requests_total", "HTTP requests answered", ["endpoint", "service", "status"]
)
LATENCY = Histogram(
    "cds_request_duration_seconds",
    "Time to answer an HTTP request",
    ["endpoint", "service"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CARDS = Counter("cds_cards_total", "Cards returned", ["service", "kind", "indicator"])
SILENT = Counter(
    "cds_cards_silent_total",
    "Cards of silent kinds: recorded as issued, not returned",
    ["service", "kind", "indicator"],
)
SNOOZED = Counter(
    "cds_cards_snoozed_total",
    "Cards held back because a clinician overrode them",
    ["service", "kind"],
)
FEEDBACK = Counter(
    "cds_feedback_total", "Feedback items received (new ones only)", ["service", "outcome"]
)
STORE_FAILURES = Counter(
    "cds_store_failures_total", "Database operations that failed", ["operation"]
)


def count_request(endpoint: str, service: str, status: int, seconds: float) -> None:
    """Count one answered request and observe its latency."""
    REQUESTS.labels(endpoint, service, str(status)).inc()
    LATENCY.labels(endpoint, service).observe(seconds)


def inc(counter: Counter, *labels: str) -> None:
    """Add one to the series of `counter` with these label values."""
    counter.labels(*labels).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type (aggregated across workers in multiprocess mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
