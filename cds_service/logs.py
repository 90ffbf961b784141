"""Structured JSON logs; only the fields named here are written, so tokens and PHI cannot slip in."""

from __future__ import annotations

import json
import logging
import re
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
    "count",  # how many issued-card records a stopping worker could not store
)

# Libraries that log request URLs (which carry patient ids in FHIR queries) are held to warnings.
QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "werkzeug")

# The HTTP servers' own loggers: gunicorn (`serve`) and werkzeug (`run`). Their warning about a
# malformed request quotes the request line or header it could not parse, which can hold a bearer
# token or a patient id.
HTTP_SERVER_LOGGERS = ("gunicorn.error", "werkzeug")
# What those servers quote: Python reprs ('...', b'...', "..." with backslash escapes).
_QUOTED = re.compile(r"b?'(?:[^'\\]|\\.)*'" + r'|b?"(?:[^"\\]|\\.)*"')


class RequestContentFilter(logging.Filter):
    """Keeps an HTTP server's log line about a malformed request but drops what it quotes of the
    request: "Invalid HTTP Header: 'Bearer eyJ…'" becomes "Invalid HTTP Header: [redacted]"."""

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("Error handling request"):
            # gunicorn names the request's URI (unquoted) after it: the kind is enough.
            record.msg, record.args = "Error handling request [redacted]", ()
            return True
        message = record.getMessage()
        redacted = _QUOTED.sub("[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


_REQUEST_CONTENT_FILTER = RequestContentFilter()


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
    """Send the service's logs as JSON lines to stderr (the handler is added once per process), and
    keep request content out of the HTTP servers' own log lines."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in HTTP_SERVER_LOGGERS:
        logging.getLogger(name).addFilter(_REQUEST_CONTENT_FILTER)  # added once: same instance
    logger = logging.getLogger("cds_service")
    logger.setLevel(level)
    if not any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
