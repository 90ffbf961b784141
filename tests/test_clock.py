"""The clock's identifiers: random UUIDs in production, counted ones in tests."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from cds_service.clock import Clock, fixed_clock


def test_card_ids_are_random_version_4_uuids() -> None:
    clock = Clock()
    ids = [clock.new_id() for _ in range(2000)]
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 4 and u.variant == uuid.RFC_4122 for u in parsed)
    assert all(str(u) == i for u, i in zip(parsed, ids, strict=True))  # canonical lower-case form
    assert len(set(ids)) == len(ids)


def test_fixed_clock_counts_ids_up_from_its_seed() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    clock = fixed_clock(at, seed=5)
    assert clock.now() == at
    assert [clock.new_id() for _ in range(2)] == [str(uuid.UUID(int=6)), str(uuid.UUID(int=7))]


def test_a_forked_worker_draws_other_ids_than_its_master() -> None:
    clock = Clock()
    clock.new_id()  # the master has drawn ids before forking its workers
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker, forked as gunicorn forks: no reseeding step of ours
        try:
            os.write(write_end, " ".join(clock.new_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    master = {clock.new_id() for _ in range(50)}
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        worker = set(pipe.read().split())
    assert len(worker) == 50
    assert master.isdisjoint(worker)
