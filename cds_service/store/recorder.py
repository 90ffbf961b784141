"""Writes issued-card records off the request path: hook calls queue them, one thread per worker
stores them in batches, and `close()` (at worker exit) stores what is still queued.

A worker told to stop at once (SIGINT, SIGQUIT) runs its exit hook while request threads are still
answering: cards submitted after `close()` are stored synchronously, before their call answers, so
no card shown with a 200 goes unrecorded.

A synchronous write would add a commit to every hook call (~4 ms of wall time on PostgreSQL with
`synchronous_commit` on; bench/README.md); the records feed snoozing and reports
only. The feedback endpoint flushes the queue first, so feedback on a card this worker just issued
always finds the card's record.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from cds_service.store import StoreUnavailable
from cds_service.store.cards import IssuedCard, record_issued

log = logging.getLogger(__name__)


class CardRecorder:
    """A bounded queue of issued cards and the thread that stores them."""

    def __init__(
        self,
        url: str,
        on_failure: Callable[[str], None],
        max_pending: int = 10_000,
        batch_window: float = 0.05,
    ) -> None:
        self.url = url
        self.on_failure = on_failure
        self.batch_window = batch_window
        self._queue: queue.Queue[list[IssuedCard] | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, cards: list[IssuedCard]) -> None:
        """Queue cards for storing (stored now, in this thread, once closed); when the queue is full
        (database far behind) they are dropped."""
        if not cards:
            return
        with self._lock:
            if not self._closed:
                # Threads do not survive fork: a gunicorn worker starts its own writer on first use.
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(
                        target=self._run, name="card-recorder", daemon=True
                    )
                    self._thread.start()
                try:
                    self._queue.put_nowait(cards)
                except queue.Full:
                    self.on_failure("record issued cards (queue full)")
                return
        self._store(cards)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued so far is stored (or failed), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._queue.all_tasks_done.wait(remaining)

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued (waiting at most `timeout`) and stop the writer thread; from now on
        `submit` stores in the calling thread."""
        with self._lock:
            # Under the lock: every submit either queued before the end marker or sees `_closed`.
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            # Let a batch gather, then store it in one transaction; sleeping rather than waiting on
            # the queue spares each hook call a wake-up of this thread.
            time.sleep(self.batch_window)
            while batch[-1] is not None and len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._store([card for cards in batch if cards is not None for card in cards])
            finally:
                for _ in batch:
                    self._queue.task_done()
            if batch[-1] is None:  # close(): everything queued before it is stored
                return

    def _store(self, cards: list[IssuedCard]) -> None:
        try:
            record_issued(self.url, cards)
        except StoreUnavailable:
            self.on_failure("record issued cards")
        except Exception:  # never let the writer die: log where it failed, keep serving
            log.exception("issued-card recording failed")
