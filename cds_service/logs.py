"""Structured JSON logs; only the fields named here are written, so tokens and PHI cannot slip in."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any

# The `extra` fields a log record may carry into the output. Anything else passed as `extra`
# (a body, a header, a patient id) is dropped rather than written.
ALLOWED_FIELDS = (
    "request_id",
    "method",
    "route",
    "service_id",
    "hook",
    "status",
    "latency_ms",
    "cards",
    "prefetch_key",
    "reason",
    "pages",
    "resource_type",
    "error_type",
)

# Libraries that log request URLs (which carry patient ids in FHIR queries) are held to warnings.
QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "werkzeug")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the allowed extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ALLOWED_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[1] is not None:
            # Where it failed, not what it said: exception messages can quote patient data.
            error = record.exc_info[1]
            frames = traceback.extract_tb(error.__traceback__)
            entry["exception"] = type(error).__name__
            entry["stack"] = [
                f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in frames[-12:]
            ]
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Send the service's logs as JSON lines to stderr (the handler is added once per process)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
