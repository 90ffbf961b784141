"""Time and identifiers, made deterministic in one place for tests."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass
class Clock:
    """Supplies the current time and new UUIDs; tests pass a fixed time and a seeded id source."""

    now_fn: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    id_fn: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))

    def now(self) -> datetime:
        """The current time, timezone-aware."""
        return self.now_fn()

    def new_id(self) -> str:
        """A new UUID string (card and suggestion uuids)."""
        return self.id_fn()


def fixed_clock(at: datetime, seed: int = 0) -> Clock:
    """A clock frozen at `at` whose ids are UUIDs counted up from `seed` (for tests and fixtures)."""
    counter: Iterator[int] = itertools.count(seed)
    return Clock(now_fn=lambda: at, id_fn=lambda: str(uuid.UUID(int=next(counter) + 1)))
