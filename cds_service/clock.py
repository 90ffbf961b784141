"""Time and identifiers, made deterministic in one place for tests."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import uuid_utils


@dataclass
class Clock:
    """Supplies the current time and new UUIDs; tests pass a fixed time and a seeded id source."""

    now_fn: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # UUIDv7 (RFC 9562): random, but time-ordered, so the issued-card table's primary key grows at
    # its end instead of touching a random index page for every card recorded. uuid_utils draws
    # the random bits from a per-thread CSPRNG: no system call (and so no GIL hand-off) per id.
    id_fn: Callable[[], str] = field(default=lambda: str(uuid_utils.uuid7()))

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        return self.now_fn()

    def new_id(self) -> str:
        """A new UUID string (card and suggestion uuids)."""
        return self.id_fn()


def after_fork() -> None:
    """Reseed the id generator in a forked worker, so no two workers can draw the same random bits."""
    uuid_utils.reseed_rng()


def fixed_clock(at: datetime, seed: int = 0) -> Clock:
    """A clock frozen at `at` whose ids are UUIDs counted up from `seed` (for tests and fixtures)."""
    counter: Iterator[int] = itertools.count(seed)
    return Clock(now_fn=lambda: at, id_fn=lambda: str(uuid.UUID(int=next(counter) + 1)))
