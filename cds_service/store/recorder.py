"""Writes issued-card records off the request path: hook calls enqueue, one thread per worker writes.

The records feed snoozing and reports only, and recording is fail-open anyway, so a hook call never
waits on the database for them. The feedback endpoint flushes the queue first, so feedback on a card
this worker just issued always finds the card's record.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

from cds_service.store import StoreUnavailable
from cds_service.store.cards import IssuedCard, record_issued

log = logging.getLogger(__name__)

# This process's id, kept current across forks (os.getpid() is a system call on every use).
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class CardRecorder:
    """A bounded queue of issued cards and the thread that stores them in batches."""

    def __init__(
        self,
        url: str,
        on_failure: Callable[[str], None],
        max_pending: int = 10_000,
        batch_window: float = 0.05,
    ) -> None:
        self.url = url
        self.batch_window = batch_window
        self.on_failure = on_failure
        self._queue: queue.Queue[list[IssuedCard] | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._owner_pid = 0
        self._lock = threading.Lock()

    def submit(self, cards: list[IssuedCard]) -> None:
        """Queue cards for storing; when the queue is full (database far behind) they are dropped."""
        if not cards:
            return
        self._ensure_thread()
        try:
            self._queue.put_nowait(cards)
        except queue.Full:
            self.on_failure("record issued cards (queue full)")

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued so far is stored (or failed), at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._queue.all_tasks_done.wait(remaining)

    def close(self, timeout: float = 2.0) -> None:
        """Store what is queued (waiting at most `timeout`), then stop the writer thread."""
        self.flush(timeout)
        thread = self._thread
        if thread is not None and thread.is_alive() and self._owner_pid == os.getpid():
            self._queue.put(None)
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        # Threads do not survive fork: a gunicorn worker starts its own writer on first use.
        thread = self._thread
        if thread is not None and self._owner_pid == _pid and thread.is_alive():
            return  # the usual case, without a lock or a system call
        with self._lock:
            if self._thread is None or self._owner_pid != _pid or not self._thread.is_alive():
                self._owner_pid = _pid
                self._thread = threading.Thread(target=self._run, name="card-recorder", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:  # close()
                self._queue.task_done()
                return
            batch = [first]
            if self.batch_window:
                # Let a batch gather, then write it in one transaction. Sleeping (rather than
                # waiting on the queue) means hook calls submitting meanwhile wake nobody: a
                # wake-up per call would cost every call a thread switch.
                time.sleep(self.batch_window)
            while len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:  # put back the stop signal for the next loop
                    self._queue.task_done()
                    self._queue.put(None)
                    break
                batch.append(item)
            try:
                record_issued(self.url, [card for cards in batch for card in cards])
            except StoreUnavailable:
                self.on_failure("record issued cards")
            except Exception:  # never let the writer die: log where it failed, keep serving
                log.exception("issued-card recording failed")
            finally:
                for _ in batch:
                    self._queue.task_done()
