"""Writes issued-card records off the request path: hook calls queue them, one thread per worker
stores them in batches, and `close()` (at worker exit) stores what is still queued.

A synchronous write would add a commit to every hook call (~4 ms of wall time on PostgreSQL with
`synchronous_commit` on; bench/README.md); the records feed snoozing and reports
only. The feedback endpoint flushes the queue first, so feedback on a card this worker just issued
always finds the card's record.

While the database is down, the cards are held (up to `max_pending`) and stored when it returns, so
feedback on a card shown during an outage is still attributed to it; `unrecorded()` tells the
feedback endpoint which cards are still waiting (it answers 503 for those, and the EHR retries).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable

from cds_service.store import StoreRefused, StoreUnavailable
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
        retry_seconds: float = 1.0,
    ) -> None:
        self.url = url
        self.on_failure = on_failure
        self.batch_window = batch_window
        self.retry_seconds = retry_seconds
        self.max_pending = max_pending
        self._queue: queue.Queue[list[IssuedCard] | None] = queue.Queue(maxsize=max_pending)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._held: list[IssuedCard] = []  # a failed batch, stored again when the database returns
        self._waiting: set[str] = set()  # uuids of cards queued or held, not yet stored
        self._closed = False  # after close(): submit stores in the calling thread

    def unrecorded(self, card_uuids: set[str]) -> set[str]:
        """Those of `card_uuids` this worker issued and has not stored yet."""
        with self._lock:
            return card_uuids & self._waiting

    def submit(self, cards: list[IssuedCard]) -> None:
        """Queue cards for storing (stored now, in this thread, once closed: a worker stopped at
        once still answers the calls it has, and their cards must not be lost); when the queue is
        full (database far behind) they are dropped."""
        if not cards:
            return
        with self._lock:
            closed = self._closed
            # Threads do not survive fork: a gunicorn worker starts its own writer on first use.
            if not closed and (self._thread is None or not self._thread.is_alive()):
                self._thread = threading.Thread(target=self._run, name="card-recorder", daemon=True)
                self._thread.start()
        if closed:
            if self._store(cards):
                log.error("issued-card records lost at exit", extra={"count": len(cards)})
            return
        try:
            self._queue.put_nowait(cards)
        except queue.Full:
            self.on_failure("record issued cards (queue full)")
            return
        with self._lock:
            self._waiting.update(card.card_uuid for card in cards)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued or held so far is stored (or failed again), at most
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        if self._held:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait([])  # wakes the writer to try the held cards now
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._queue.all_tasks_done.wait(remaining)

    def close(self, timeout: float = 7.0) -> None:
        """Store what is queued and stop the writer thread, giving up on retries after `timeout`
        seconds (with a database that does not answer, a store attempt under way and the final
        one add a deadline each: ~10 s; cli.serve leaves a stopping worker 15 s); from now on
        `submit` stores in the calling thread."""
        deadline = time.monotonic() + timeout
        with self._lock:
            # Under the lock: every submit either queued before the end marker or sees `_closed`.
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)
        # Cards held from a failed write (a database that was slow or away) get a last try each
        # second until the deadline: once the process exits they are gone.
        while self._held and time.monotonic() < deadline:
            held, self._held = self._held, []
            self._held = self._store(held)
            if self._held:
                time.sleep(1.0)
        if self._held:
            log.error("issued-card records lost at exit", extra={"count": len(self._held)})

    def _run(self) -> None:
        while True:
            try:
                # With cards held from a failed write, wake up to retry them even if none arrive.
                batch = [self._queue.get(timeout=self.retry_seconds if self._held else None)]
            except queue.Empty:
                batch = []
            # Let a batch gather, then store it in one transaction; sleeping rather than waiting on
            # the queue spares each hook call a wake-up of this thread.
            time.sleep(self.batch_window)
            while (not batch or batch[-1] is not None) and len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            cards = self._held + [card for cards in batch if cards is not None for card in cards]
            try:
                # Held for the next try; beyond max_pending the oldest go (counted as failures).
                self._held = self._store(cards)[-self.max_pending :]
                stored = cards[: len(cards) - len(self._held)]
            finally:
                for _ in batch:
                    self._queue.task_done()
            with self._lock:
                self._waiting.difference_update(card.card_uuid for card in stored)
            if batch and batch[-1] is None:  # close(): everything queued before it is stored
                return

    def _store(self, cards: list[IssuedCard]) -> list[IssuedCard]:
        """Store `cards`; those to try again (the database is unavailable), if any."""
        try:
            record_issued(self.url, cards)
        except StoreRefused:  # our own data refused: retrying cannot help
            log.exception("issued-card recording refused by the database")
        except StoreUnavailable:
            self.on_failure("record issued cards")
            return cards
        except Exception:  # never let the writer die: log where it failed, keep serving
            log.exception("issued-card recording failed")
        return []
