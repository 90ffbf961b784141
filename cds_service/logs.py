"""Structured JSON logs; only the fields named here are written, so tokens and PHI cannot slip in."""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import orjson

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
        return orjson.dumps(entry, default=str).decode()


# Libraries that log request URLs (which carry patient ids in FHIR queries) are held to warnings.
QUIET_LIBRARIES = ("httpx", "httpcore", "urllib3", "werkzeug")


def configure_logging(level: str) -> None:
    """Send the service's logs as JSON lines to stderr (once per process)."""
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("cds_service")
    if any(getattr(h, "_cds_json", False) for h in logger.handlers):
        logger.setLevel(level)
        return
    # The JSON lines carry none of the thread, process or source-line attributes a log record
    # gathers by default: skip working them out (the logging HOWTO's "Optimization" section).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = JsonLinesHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._cds_json = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = True


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that can hold its lines back and write a batch of them at once."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held: list[str] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Runs under the handler's lock (Handler.handle), as does the batch's start and end.
        if self._held is None:
            super().emit(record)
            return
        try:
            self._held.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    @contextmanager
    def batched(self) -> Iterator[None]:
        """Lines emitted meanwhile (by any thread) are written together, in order, at the end."""
        with self.lock:  # type: ignore[union-attr]
            self._held = []
        try:
            yield
        finally:
            with self.lock:  # type: ignore[union-attr]
                held, self._held = self._held, None
                if held:
                    # One write and one flush for the batch: a write per line is a system call
                    # that also hands Python's GIL to the request threads and back, every line.
                    self.stream.write("".join(held))
                    self.flush()


def _batched(logger: logging.Logger) -> ExitStack:
    """Every JsonLinesHandler a record of `logger` reaches, holding its lines until the stack ends."""
    stack = ExitStack()
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if isinstance(handler, JsonLinesHandler):
                stack.enter_context(handler.batched())
        current = current.parent if current.propagate else None
    return stack


class RequestLog:
    """The request log: one INFO record per request, handed to `logging` in batches.

    A record built at the end of a hook call costs several times what it costs in a batch (the
    call has pushed logging's code and data out of the CPU caches), so a request only queues its
    fields and their time; a background thread logs the queue every `interval` seconds, and at
    exit. Lines reach the log up to `interval` late, each with the time of its request.
    """

    def __init__(self, logger: logging.Logger, interval: float = 0.2) -> None:
        self.logger = logger
        self.interval = interval
        self._pending: deque[tuple[float, dict[str, Any]]] = deque()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        os.register_at_fork(before=self.flush, after_in_child=self._forget_thread)
        atexit.register(self.flush)

    def write(self, fields: dict[str, Any]) -> None:
        """Queue one request's line (if INFO is logged at all)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        self._pending.append((time.time(), fields))
        if self._thread is None:
            self._start()

    def flush(self) -> None:
        """Log everything queued so far, in order."""
        with self._lock, _batched(self.logger):
            pending = self._pending
            while pending:
                created, fields = pending.popleft()
                record = self.logger.makeRecord(
                    self.logger.name,
                    logging.INFO,
                    "(request log)",
                    0,
                    "request",
                    (),
                    None,
                    None,
                    fields,
                )
                record.created = created
                record.msecs = created % 1 * 1000
                self.logger.handle(record)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:  # threads do not survive fork: each process starts its own
                self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # a broken handler must not end the request log
                logging.getLogger(__name__).exception("request log flush failed")

    def _forget_thread(self) -> None:
        self._thread = None
        self._lock = threading.Lock()
