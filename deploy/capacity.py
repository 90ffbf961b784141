"""The capacity table (deploy/capacity.md) from the last `make bench` (bench/results.json).

`make capacity` (or `.venv/bin/python deploy/capacity.py [results.json]`) reads the production shape's
CPU per call that bench/run.py measured (`cds-service serve`, a fresh RS384 client JWT per call, its
`jti` stored in PostgreSQL, the patient-view request (a)), and the pod shape from deploy/k8s/base (CPU
request, HPA target and minimum, workers x threads), and writes the replicas and cores a hospital
needs at a given peak of calls. `make bench` runs it at its end.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "k8s" / "base"
PEAKS = (5, 50, 500)  # hook calls per second at the busiest minute
SPARE_PODS = (
    1  # a pod more than the load needs: a rolling update or a lost node (PDB maxUnavailable 1)
)
FETCH_SHARE, FETCH_SECONDS = 0.10, 0.5  # calls that fetch from FHIR (no prefetch), and how long


def manifest(name: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((BASE / name).read_text(encoding="utf-8"))
    return found


def cpu(value: str) -> float:
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def pod_shape() -> dict[str, float]:
    """What deploy/k8s/base runs: the numbers the table divides by."""
    (container,) = manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"]
    hpa = manifest("horizontalpodautoscaler.yaml")["spec"]
    (metric,) = hpa["metrics"]
    config = next(yaml.safe_load_all((BASE / "configmap.yaml").read_text(encoding="utf-8")))["data"]
    return {
        "request": cpu(container["resources"]["requests"]["cpu"]),
        "limit": cpu(container["resources"]["limits"]["cpu"]),
        "target": metric["resource"]["target"]["averageUtilization"] / 100,
        "min": hpa["minReplicas"],
        "threads": int(config["CDS_WORKERS"]) * int(config["CDS_THREADS"]),
    }


def table(result: dict[str, Any], source: str) -> str:
    rows = {(r["scenario"], r["alg"], r["server"]): r for r in result["summary"]}
    shape = rows[("a", "RS384", "service")]
    call_s, db_s = shape["cpu_ms"] / 1000, shape["db_cpu_ms"] / 1000
    pod = pod_shape()
    per_pod = pod["request"] * pod["target"]  # CPU a pod may use at peak: the HPA's target
    m = result["machine"]
    lines = [
        "# Capacity on paper",
        "",
        f"Written by `make capacity` (`deploy/capacity.py`) from `{source}`, which `make bench`",
        f"wrote on {result['date']} (commit {m['commit']}; {m['cpus']} CPUs of {m['cpu']}, load average",
        f"{m['load']:.1f}; PostgreSQL {result['postgresql']} on the same machine).",
        "",
        "**Measured** (the production shape: `cds-service serve`, gunicorn 2 workers x 4 threads, a fresh",
        "client JWT per call whose `jti` is stored in PostgreSQL; wrk at 8 connections; CPU read from",
        "`/proc` for the service's processes and, separately, its PostgreSQL backends. CPU per call holds",
        "on a shared machine, where calls per second do not; it still rises with the machine's load",
        "(caches and cores shared with other work), so a bench on a busy machine gives a conservative table):",
        "",
        "| request | service CPU per call | calls per core (per CPU-second) "
        "| PostgreSQL CPU per call | calls/s seen (2 cores, wrk beside) |",
        "|---|---|---|---|---|",
    ]
    for key, what in ((("a", "RS384"), "(a) patient-view, RS384 (the table's)"),
                      (("a", "ES384"), "(a) patient-view, ES384"),
                      (("d", "RS384"), "(d) order-sign, five drafts, RS384")):  # fmt: skip
        row = rows.get((*key, "service"))
        if row:
            lines.append(
                f"| {what} | {row['cpu_ms']:.2f} ms | {1000 / row['cpu_ms']:,.0f} | "
                f"{row['db_cpu_ms']:.2f} ms | {row['rps']:,.0f} |"
            )
    lines += [
        "",
        f"**Assumptions**: a pod requests {pod['request']:g} CPU (limit {pod['limit']:g}) and runs "
        f"{pod['threads']:.0f} threads; the HPA keeps pods at {pod['target']:.0%} of their request, so",
        f"plan {per_pod:g} core of calls per pod at peak (bursts within a second, p99 near the service time);",
        f"{SPARE_PODS} pod more than the load needs (a rolling update or a lost node), never fewer than the",
        f"HPA's minimum ({pod['min']}); the EHR sends prefetch, {FETCH_SHARE:.0%} of calls fetch from FHIR "
        f"for {FETCH_SECONDS:g} s (threads held, little CPU); PostgreSQL is a managed instance elsewhere.",
        "",
        "| peak calls/s | service CPU at peak | pods (cores requested) | threads busy / available | PostgreSQL |",
        "|---|---|---|---|---|",
    ]
    for peak in PEAKS:
        load = peak * call_s
        pods = max(pod["min"], math.ceil(load / per_pod) + SPARE_PODS)
        busy = peak * (call_s + FETCH_SHARE * FETCH_SECONDS)
        lines.append(
            f"| {peak} | {load:.2f} cores | {pods} ({pods * pod['request']:g}) | "
            f"{busy:.1f} / {pods * pod['threads']:.0f} | {peak * db_s:.3f} cores, ~{peak} commits/s "
            f"(one `jti` INSERT per call); `jwt_replay` gains {peak * 3600:,} rows an hour |"
        )
    lines += [
        "",
        f"Pods = max({pod['min']}, ceil(peak x {shape['cpu_ms']:.2f} ms / {per_pod:g} core) + "
        f"{SPARE_PODS}). The HPA does not keep the spare: at {pod['target']:.0%} it runs",
        "ceil(peak x CPU per call / its target) pods (at least its minimum), so a site that wants the",
        "spare at peak sets `minReplicas` to the table's count. Run `cds-service prune` hourly at the",
        "higher rates (expired `jti` rows). A site whose calls differ (order-sign with many drafts, long",
        "histories) scales the table by its own CPU per call: the (d) row above is one such request.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "bench" / "results.json"
    if not source.exists():
        sys.exit(f"{source} not found: run `make bench` first")
    target = ROOT / "deploy" / "capacity.md"
    result = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(table(result, str(source.resolve().relative_to(ROOT))), encoding="utf-8")
    print(f"wrote {target} from {source}")


if __name__ == "__main__":
    main()
