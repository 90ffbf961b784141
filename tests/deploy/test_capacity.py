"""deploy/capacity.py: the capacity table follows the bench's CPU per call and the manifests' pod shape."""

from __future__ import annotations

import importlib.util
from typing import Any

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("capacity", ROOT / "deploy" / "capacity.py")
assert spec and spec.loader
capacity = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capacity)


def bench_result(cpu_ms: float) -> dict[str, Any]:
    row = {"scenario": "a", "alg": "RS384", "server": "service", "rps": 200.0}
    return {
        "date": "2026-12-06 12:00 UTC",
        "postgresql": "15",
        "machine": {"commit": "abc1234", "cpus": 2, "cpu": "test", "load": 1.0},
        "summary": [{**row, "cpu_ms": cpu_ms, "db_cpu_ms": 0.5}],
    }


def test_the_pod_shape_is_read_from_the_manifests() -> None:
    assert capacity.pod_shape() == {
        "request": 1.0,
        "limit": 2.0,
        "target": 0.5,
        "min": 2,
        "threads": 8,
    }


def test_pods_are_the_load_at_the_hpa_target_plus_a_spare_and_at_least_the_minimum() -> None:
    table = capacity.table(bench_result(cpu_ms=4.0), "bench/results.json")
    assert "| (a) patient-view, RS384 (the table's) | 4.00 ms | 250 | 0.50 ms | 200 |" in table
    # 500 calls/s x 4 ms = 2 cores; at 0.5 core per pod: 4 pods, + 1 spare.
    assert "| 500 | 2.00 cores | 5 (5) |" in table
    assert "| 50 | 0.20 cores | 2 (2) |" in table  # 1 needed + 1 spare
    assert "| 5 | 0.02 cores | 2 (2) |" in table  # the HPA's minimum
    # Twice the CPU per call, twice the pods the load needs.
    assert "| 500 | 4.00 cores | 9 (9) |" in capacity.table(bench_result(8.0), "x")
