"""The `cds-service` command's process set-up (serving itself is covered by test_serve.py)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from cds_service.cli import GC_THRESHOLD, settle_heap


class Node:
    """An object that can sit in a reference cycle and be watched with a weak reference."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("restored_gc")
def test_settle_heap_freezes_what_exists_and_raises_the_young_threshold() -> None:
    settle_heap()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_THRESHOLD


@pytest.mark.usefixtures("restored_gc")
def test_cyclic_garbage_is_still_collected_without_an_explicit_collect() -> None:
    settle_heap()
    a, b = Node(), Node()
    a.other, b.other = b, a
    watch = weakref.ref(a)
    del a, b
    assert watch() is not None  # a cycle outlives its last outside reference...
    churn = [
        [] for _ in range(GC_THRESHOLD * 3)
    ]  # ...until enough allocations trigger the collector
    del churn
    assert watch() is None
