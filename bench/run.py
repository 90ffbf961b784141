"""`make bench`: the service under its production gunicorn settings against a framework floor.

Everything runs on 127.0.0.1 in one go and is torn down at the end (or on any error or signal):

* the service: `cds-service serve` (gunicorn, gthread), CDS_ENV=production, CDS_AUTH=off (JWT
  verification excluded; one extra scenario runs a second instance with CDS_AUTH=jwt and a unique,
  validly signed ES384 token per request), SQLite under bench/out/;
* the floor: bench/floor_app.py, a minimal Flask app under the same gunicorn settings that parses the
  same request JSON and answers one fixed card;
* for scenario (c): the local FHIR server (Medplum, tests/support/fhir_server.py) seeded with the
  patient, behind bench/delay_proxy.mjs adding 50 ms to every request;
* load: wrk with bench/post.lua (fixed-duration runs at a fixed concurrency, after a short warm-up).

Results: bench/results.md (tables, targets, machine, command, date), bench/latency.png, and the raw
numbers in bench/out/results.json. Targets are reported (met / missed), never asserted: the exit code
is 0 unless the benchmark itself could not run (a busy port, a server that would not start, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import http.client
import json
import math
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import report  # noqa: E402
import scenarios  # noqa: E402

HOST = "127.0.0.1"
SERVICE_PATH = f"/cds-services/{scenarios.PATIENT_SERVICE}"
JWT_ISSUER = "https://bench-ehr.example.org"
JWT_KID = "bench-es384"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


class BenchError(RuntimeError):
    """The benchmark could not run (not a missed target)."""


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Processes: each in its own process group, SIGTERM'ed on the runner's death, all stopped on exit

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Proc:
    """A child process in its own process group; stop() ends the whole group."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        stdout_pipe: bool = False,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, limit: int = 3000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=timeout)
        # Whatever is left of the group (a gunicorn worker that outlived its master, ...).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=5)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        self._log.close()


def _raise_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(f"interrupted by signal {signum}")


def ensure_port_free(port: int, what: str) -> None:
    probe = socket.socket()
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        probe.bind((HOST, port))
    except OSError as exc:
        raise BenchError(
            f"port {port} on {HOST} (for the {what}) is busy ({exc.strerror}); stop whatever "
            "listens there or pick other ports with BENCH_PORT_BASE=<n> (uses n..n+4)"
        ) from None
    finally:
        probe.close()


def http_get(
    port: int, path: str, timeout: float = 2.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def http_post(
    port: int, path: str, body: bytes, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes, float]:
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        started = time.perf_counter()
        connection.request(
            "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
        )
        response = connection.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - started
    finally:
        connection.close()


def wait_healthy(proc: Proc, port: int, timeout: float = 60.0) -> float:
    """Seconds from the process start to its first 200 on /healthz (polled every 10 ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if not proc.alive():
            raise BenchError(
                f"{proc.name} exited with code {proc.popen.returncode} before it was "
                f"healthy; its log ({proc.log_path}):\n{proc.log_tail()}"
            )
        try:
            status, _ = http_get(port, "/healthz", timeout=1.0)
            if status == 200:
                return time.perf_counter() - proc.started
        except OSError:
            pass
        time.sleep(0.01)
    raise BenchError(
        f"{proc.name} was not healthy on port {port} within {timeout:g} s; its log:\n"
        f"{proc.log_tail()}"
    )


# ---------------------------------------------------------------------------------------------
# /proc: gunicorn workers, their memory, and the CPU everyone else is using


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields from 3 (state) on


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields and int(fields[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def connections_per_worker(master: int, port: int) -> dict[int, int]:
    """Established connections to `port` held by each worker (child) of the gunicorn `master`."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(f"socket:[{fields[9]}]")
    found: dict[int, int] = {}
    for worker in children_of(master):
        count = 0
        try:
            fds = os.listdir(f"/proc/{worker}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{worker}/fd/{fd}") in inodes:
                    count += 1
            except OSError:
                continue
        found[worker] = count
    return found


def descendants_of(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found.extend(kids)
        frontier.extend(kids)
    return found


def memory_kb(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            values[name] = int(rest.split()[0])
    return values


def worker_memory(master: int, workers: int, timeout: float = 20.0) -> dict[int, dict[str, int]]:
    """VmRSS etc. of each gunicorn worker (children of the master), once all are up and settled."""
    deadline = time.monotonic() + timeout
    previous: dict[int, int] = {}
    steady = 0
    while True:
        pids = children_of(master)
        try:
            current = {pid: memory_kb(pid)["VmRSS"] for pid in pids}
        except (OSError, KeyError):
            current = {}
        if (
            len(current) == workers
            and current.keys() == previous.keys()
            and all(abs(current[p] - previous[p]) <= 0.002 * previous[p] for p in current)
        ):
            steady += 1
            if steady >= 3:
                return {pid: memory_kb(pid) for pid in pids}
        else:
            steady = 0
        previous = current
        if time.monotonic() > deadline:
            if len(current) != workers:
                raise BenchError(
                    f"expected {workers} gunicorn workers under pid {master}, "
                    f"found {sorted(current)}"
                )
            return {pid: memory_kb(pid) for pid in pids}
        time.sleep(0.3)


def cpu_busy_ticks() -> int:
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    # irq and softirq are left out: loopback networking of our own traffic lands there, unattributed.
    user, nice, system, _idle, _iowait, _irq, _softirq, steal = fields[:8]
    return user + nice + system + steal


def process_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


@contextmanager
def cpu_accounting() -> Iterator[dict[str, float]]:
    """Share of the machine's CPUs used by processes that are not this benchmark's, meanwhile."""
    me = os.getpid()
    result: dict[str, float] = {}
    ours_before = process_ticks([me, *descendants_of(me)])
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_before, wall_before = cpu_busy_ticks(), time.monotonic()
    yield result
    busy_after, wall_after = cpu_busy_ticks(), time.monotonic()
    ours_after = process_ticks([me, *descendants_of(me)])
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (
        children_after.ru_utime
        + children_after.ru_stime
        - children_before.ru_utime
        - children_before.ru_stime
    ) * CLK_TCK
    available = (wall_after - wall_before) * CLK_TCK * NCPU
    other = (busy_after - busy_before) - (ours_after - ours_before) - reaped
    result["other_cpu"] = max(0.0, other / available) if available > 0 else 0.0
    result["busy_cpu"] = (busy_after - busy_before) / available if available > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# Load

ROTATION_BYTES = 32 * 2**20  # request variants wrk keeps per thread (per body size), at most 1000


def patient_variants(body_file: Path) -> int:
    """How many patients wrk's calls are spread over (per wrk thread): up to 1000, fewer for big
    bodies ((b): ~18), since wrk keeps every variant in memory."""
    return max(1, min(1000, ROTATION_BYTES // max(body_file.stat().st_size, 1)))


@dataclass
class Run:
    """One wrk run against one server."""

    label: str
    target: str  # "service", "floor", "service-jwt"
    connections: int
    duration: float
    raw: dict[str, Any] = field(default_factory=dict)
    other_cpu: float = 0.0
    split: dict[int, int] = field(default_factory=dict)  # worker pid -> wrk connections it holds
    restarts: int = 0  # wrk starts dropped for an uneven spread before this run (start_wrk)

    @property
    def unbalanced(self) -> bool:
        """All or all but one of the connections on one worker (throughput of one process)."""
        return report.one_worker(list(self.split.values()), self.connections)

    @property
    def requests(self) -> int:
        return int(self.raw["requests"])

    @property
    def rps(self) -> float:
        return self.requests / (float(self.raw["duration_us"]) / 1e6)

    def ms(self, key: str) -> float:
        return float(self.raw["latency_us"][key]) / 1000

    @property
    def errors(self) -> int:
        e = self.raw["errors"]
        failed = sum(int(e[kind]) for kind in ("connect", "read", "write", "timeout"))
        # not_200 already holds wrk's own status count (400 or more), or more (see post.lua).
        return failed + int(self.raw["not_200"])

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "target": self.target,
            "connections": self.connections,
            "duration_s": self.duration,
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "p50_ms": self.ms("p50"),
            "p95_ms": self.ms("p95"),
            "p99_ms": self.ms("p99"),
            "max_ms": self.ms("max"),
            "errors": self.errors,
            "wrk_errors": self.raw["errors"],
            "statuses": self.raw.get("statuses", "each"),
            "not_200": self.raw["not_200"],
            "not_200_sample": self.raw["not_200_sample"],
            "tokens_exhausted": self.raw.get("tokens_exhausted", 0),
            "other_cpu": round(self.other_cpu, 3),
            "connections_per_worker": sorted(self.split.values(), reverse=True),
            "uneven_starts": self.restarts,
            "percentiles_ms": [[p, v / 1000] for p, v in self.raw["percentiles"]],
        }


class Load:
    def __init__(self, wrk: str, timeout_s: float) -> None:
        self.wrk = wrk
        self.timeout_s = timeout_s

    def run(
        self,
        label: str,
        target: str,
        port: int,
        path: str,
        body_file: Path,
        *,
        duration: float,
        connections: int,
        tokens: Path | None = None,
        patient: str | None = None,
        master: int = 0,
        even_attempts: int = 0,
        statuses: str = "errors",
    ) -> Run:
        """One wrk run. With `even_attempts` (and the gunicorn master), wrk is started again, at most
        that often, until its connections are spread evenly over the workers (see `start_wrk`).
        `statuses` is post.lua's STATUSES: "errors" (wrk counts statuses of 400 or more) or "each"
        (every status checked in Lua, at a cost per byte answered borne by wrk)."""
        threads = max(1, min(2, connections))
        argv = [
            self.wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, math.ceil(duration))}s",  # wrk takes whole seconds
            f"--timeout={self.timeout_s:g}s",
            "-s",
            str(BENCH / "post.lua"),
            f"http://{HOST}:{port}{path}",
            "--",
            str(body_file),
            str(tokens or "-"),
            statuses,
            str(threads),
            patient or "-",
            str(patient_variants(body_file) if patient else 1),
        ]
        split: dict[int, int] = {}
        wrk, restarts = start_wrk(argv, master, port, connections, even_attempts)
        with cpu_accounting() as cpu:
            deadline = time.monotonic() + duration + self.timeout_s + 60
            try:
                # Which worker holds which of wrk's keep-alive connections (fixed for the run).
                while wrk.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                    if master:
                        seen = connections_per_worker(master, port)
                        if sum(seen.values()) == connections:
                            split = seen
                stdout, stderr = wrk.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                wrk.kill()
                wrk.communicate()
                raise BenchError(f"wrk did not finish ({label}, {target})") from None
            finally:
                if wrk.poll() is None:
                    wrk.kill()
                    wrk.wait()
        line = next((ln for ln in stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
        if wrk.returncode != 0 or line is None:
            raise BenchError(
                f"wrk failed ({label}, {target}), exit {wrk.returncode}:\n"
                f"{stdout[-2000:]}\n{stderr[-2000:]}"
            )
        run = Run(
            label,
            target,
            connections,
            duration,
            json.loads(line[len("BENCH_JSON ") :]),
            cpu["other_cpu"],
            split,
            restarts,
        )
        spread = "/".join(str(n) for n in sorted(split.values(), reverse=True))
        log(
            f"  {label:<24} {target:<12} c={connections:<3} {run.rps:8.1f} req/s  "
            f"p50 {run.ms('p50'):8.1f} ms  p99 {run.ms('p99'):8.1f} ms  errors {run.errors}"
            + (f"  workers {spread}" if spread else "")
            + (f" ({restarts} uneven starts dropped)" if restarts else "")
            + (f"  (other CPU load {run.other_cpu:.0%})" if run.other_cpu >= 0.05 else "")
        )
        return run


def combined(label: str, runs: list[Run]) -> dict[str, Any]:
    """One summary of a target's alternating rounds: counts added up, each latency percentile the
    median of the rounds' (wrk reports percentiles, not histograms that could be pooled), max the
    largest, connection spread the most lopsided round's (a lopsided round makes a ratio
    inconclusive)."""
    parts = [run.summary() for run in runs]
    if len(parts) == 1:
        return parts[0]
    duration = sum(run.duration for run in runs)

    def total(key: str) -> int:
        return sum(int(p[key]) for p in parts)

    def median_of(key: str) -> float:
        return float(statistics.median(p[key] for p in parts))

    # The rounds share target and connections; every other field is combined here.
    return {
        **parts[0],
        "label": label,
        "duration_s": duration,
        "requests": total("requests"),
        "rps": round(sum(run.rps * run.duration for run in runs) / duration, 1),
        "p50_ms": median_of("p50_ms"),
        "p95_ms": median_of("p95_ms"),
        "p99_ms": median_of("p99_ms"),
        "max_ms": max(p["max_ms"] for p in parts),
        "errors": total("errors"),
        "wrk_errors": {k: sum(p["wrk_errors"][k] for p in parts) for k in parts[0]["wrk_errors"]},
        "not_200": total("not_200"),
        "not_200_sample": " ".join(p["not_200_sample"] for p in parts if p["not_200_sample"]),
        "tokens_exhausted": total("tokens_exhausted"),
        "other_cpu": round(max(p["other_cpu"] for p in parts), 3),
        "connections_per_worker": max(
            (p["connections_per_worker"] for p in parts), key=lambda c: max(c, default=0)
        ),
        "uneven_starts": total("uneven_starts"),
        "rounds": len(parts),
        "percentiles_ms": [
            [pct, statistics.median(p["percentiles_ms"][i][1] for p in parts)]
            for i, (pct, _) in enumerate(parts[0]["percentiles_ms"])
        ],
    }


def _spawn(argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_die_with_parent,
    )


def even(counts: list[int]) -> bool:
    """Connections spread over the workers as evenly as their number allows (4/4 for 8 on 2)."""
    return not counts or max(counts) - min(counts) <= 1


def start_wrk(
    argv: list[str], master: int, port: int, connections: int, attempts: int
) -> tuple[subprocess.Popen[str], int]:
    """wrk started; with `attempts`, started again until its connections are spread evenly.

    wrk's keep-alive connections stay on the gunicorn worker that accepted them, and which worker
    accepts is chance. In this closed loop a worker holding k connections answers each in about k
    times its CPU per call, so a 5/3 or 6/2 run has two latency modes and its p50 falls on either.
    Service and floor are compared at the same, even spread. The spread is read as soon as every
    connection is open, before any latency counts: the choice never looks at speed. Returns the
    process and how often it was restarted (the last attempt is kept whatever its spread).
    """
    restarts = 0
    while True:
        wrk = _spawn(argv)
        if not master or attempts <= 0 or restarts >= attempts:
            return wrk, restarts
        split: dict[int, int] = {}
        opened_by = time.monotonic() + 10  # wrk's script builds its bodies before it connects
        while wrk.poll() is None and time.monotonic() < opened_by:
            time.sleep(0.05)
            split = connections_per_worker(master, port)
            if sum(split.values()) >= connections:
                break
        if (
            wrk.poll() is not None  # wrk failed: the caller reports it
            or sum(split.values()) < connections  # not all seen open: keep it rather than guess
            or even(list(split.values()))
        ):
            return wrk, restarts
        wrk.kill()
        wrk.wait()
        restarts += 1
        time.sleep(0.2)  # let the workers see the closed connections


# ---------------------------------------------------------------------------------------------
# The benchmark


@dataclass
class Ports:
    service: int
    floor: int
    service_jwt: int
    fhir: int
    proxy: int

    @classmethod
    def from_base(cls, base: int) -> Ports:
        return cls(base, base + 1, base + 2, base + 3, base + 4)


def service_env(port: int, database: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDS_", "PROMETHEUS_"))}
    env.update(
        {
            "CDS_ENV": "production",
            "CDS_AUTH": "off",
            "CDS_PATIENT_HASH_KEY": "bench-" + uuid.uuid4().hex,
            "CDS_DATABASE_URL": f"sqlite:///{database}",
            "CDS_PUBLIC_BASE_URL": f"http://{HOST}:{port}",
            "CDS_FHIR_SERVER_ALLOWLIST": f"http://{HOST}",
            "PYTHONUNBUFFERED": "1",  # as the Docker image
        }
    )
    env.update(extra)
    return env


class Bench:
    def __init__(self, args: argparse.Namespace, stack: ExitStack) -> None:
        self.args = args
        self.stack = stack
        self.out: Path = args.out
        self.ports = Ports.from_base(args.port_base)
        self.bin = Path(sys.executable).parent
        self.load = Load(args.wrk, args.wrk_timeout)
        self.results: dict[str, Any] = {"runs": [], "scenarios": {}, "notes": []}
        self.service_requests = 0  # requests the no-auth service has answered so far
        self.service_pid = 0
        self.patients: dict[Path, str] = {}  # body file -> the patient id wrk varies
        self.masters: dict[int, int] = {}  # port -> pid of the gunicorn master serving it

    # -- processes --------------------------------------------------------------------------

    def start(self, name: str, argv: list[str], env: dict[str, str], port: int) -> Proc:
        ensure_port_free(port, name)
        proc = Proc(name, argv, env, self.out / f"{name}.log")
        self.stack.callback(proc.stop)
        self.masters[port] = proc.pid  # the gunicorn master is the process itself
        return proc

    def start_service(self, name: str, port: int, env: dict[str, str]) -> Proc:
        argv = [
            str(self.bin / "cds-service"),
            "serve",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            str(self.args.workers),
            "--threads",
            str(self.args.threads),
        ]
        return self.start(name, argv, env, port)

    def start_floor(self) -> Proc:
        argv = [
            sys.executable,
            str(BENCH / "floor_app.py"),
            "--host",
            HOST,
            "--port",
            str(self.ports.floor),
            "--workers",
            str(self.args.workers),
            "--threads",
            str(self.args.threads),
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        return self.start("floor", argv, env, self.ports.floor)

    # -- measurements -------------------------------------------------------------------------

    def drive(
        self,
        label: str,
        target: str,
        port: int,
        path: str,
        body: Path,
        *,
        duration: float,
        connections: int,
        tokens: Path | None = None,
        even_start: bool = False,
        statuses: str = "errors",
    ) -> Run:
        """One wrk run; counts what the no-auth service answered (for the memory checkpoint)."""
        run = self.load.run(
            label,
            target,
            port,
            path,
            body,
            duration=duration,
            connections=connections,
            tokens=tokens,
            patient=self.patients.get(body),
            master=self.masters.get(port, 0),
            # A dropped start would replay its one-use tokens: token runs start once.
            even_attempts=self.args.even_attempts if even_start and tokens is None else 0,
            statuses=statuses,
        )
        if target == "service":
            self.service_requests += run.requests
        return run

    def measure(
        self,
        label: str,
        target: str,
        port: int,
        path: str,
        body: Path,
        *,
        connections: int,
        duration: float | None = None,
        warmup: bool = True,
        tokens: tuple[Path, Path] | None = None,
        statuses: str = "errors",
    ) -> Run:
        """A warm-up (unless warmup=False), then the measured run, which is kept in the results."""
        if warmup and self.args.warmup > 0:
            self.drive(
                f"{label} warm-up",
                target,
                port,
                path,
                body,
                duration=self.args.warmup,
                connections=connections,
                tokens=tokens[0] if tokens else None,
            )
        run = self.drive(
            label,
            target,
            port,
            path,
            body,
            duration=duration or self.args.duration,
            connections=connections,
            tokens=tokens[1] if tokens else None,
            even_start=True,
            statuses=statuses,
        )
        retries = 0
        # wrk's keep-alive connections stay on the worker that accepted them; when (nearly) all
        # landed on one, the run measures one process, not the server: measure again (bounded),
        # and keep the best-spread attempt (chosen by spread alone, never by its speed).
        kept = run
        while run.unbalanced and retries < self.args.rebalance_retries and not tokens:
            retries += 1
            log(f"  connections all on one worker ({run.split}): measuring again")
            run = self.drive(
                label,
                target,
                port,
                path,
                body,
                duration=duration or self.args.duration,
                connections=connections,
                even_start=True,
                statuses=statuses,
            )
            if max(run.split.values(), default=0) < max(kept.split.values(), default=0):
                kept = run
        run = kept
        summary = run.summary()
        summary["rebalance_retries"] = retries
        self.results["runs"].append(summary)
        return run

    def run(self) -> None:
        a = self.args
        self.out.mkdir(parents=True, exist_ok=True)
        for stale in [*self.out.glob("*.sqlite3*"), *self.out.glob("*.log")]:
            stale.unlink()
        self.results["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        self.results["machine"] = machine_info()
        self.results["settings"] = {
            "workers": a.workers,
            "threads": a.threads,
            "worker_class": "gthread",
            "connections": a.connections,
            "duration_s": a.duration,
            "rounds": a.rounds,
            "warmup_s": a.warmup,
            "soak_connections": a.soak_connections,
            "soak_duration_s": a.soak_duration,
            "memory_requests": a.memory_requests,
            "fhir_delay_ms": a.fhir_delay_ms,
            "wrk_timeout_s": a.wrk_timeout,
        }
        drift = floor_settings_drift()
        if drift:
            note = (
                "The floor's gunicorn settings no longer match `cds-service serve`'s ("
                + ", ".join(drift)
                + "): update bench/floor_app.py."
            )
            log(f"WARNING: {note}")
            self.results["notes"].append(note)
        for name in ("service", "floor", "service_jwt", "fhir", "proxy"):
            ensure_port_free(getattr(self.ports, name), name.replace("_", " "))

        bodies = self.write_bodies()
        database = self.out / "cds-bench.sqlite3"
        env = service_env(self.ports.service, database)

        # Cold start: process start to first 200 on /healthz; the last start of each is kept.
        log("cold start (process start to the first 200 on /healthz)")
        cold: dict[str, list[float]] = {"service": [], "floor": []}
        service = floor = None
        for attempt in range(a.cold_starts):
            keep = attempt == a.cold_starts - 1
            proc = self.start_service("service", self.ports.service, env)
            cold["service"].append(wait_healthy(proc, self.ports.service))
            if not keep:
                proc.stop()
            else:
                service = proc
            proc = self.start_floor()
            cold["floor"].append(wait_healthy(proc, self.ports.floor))
            if not keep:
                proc.stop()
            else:
                floor = proc
            log(
                f"  start {attempt + 1}: service {cold['service'][-1]:.2f} s"
                f"{' (fresh database: migrations run)' if attempt == 0 else ''}, "
                f"floor {cold['floor'][-1]:.2f} s"
            )
        assert service is not None and floor is not None
        self.service_pid = service.pid
        self.results["cold_start_s"] = cold
        self.results["service_code"] = service_code(service.log_path)
        log(f"service code: {self.results['service_code']}")

        memory: dict[str, Any] = {}
        memory["service_start"] = worker_memory(service.pid, a.workers)
        memory["floor_start"] = worker_memory(floor.pid, a.workers)

        discovery = self.discover(self.ports.service)
        patient_service = next(s for s in discovery if s["id"] == scenarios.PATIENT_SERVICE)
        order_service = next(
            (
                s
                for s in discovery
                if s["id"] == scenarios.ORDER_SERVICE and s["hook"] == "order-sign"
            ),
            None,
        )
        self.results["discovered_services"] = [f"{s['id']} ({s['hook']})" for s in discovery]

        # (a) ~50 resources, then the soak and the memory checkpoint (only (a) requests before it).
        sc = self.results["scenarios"]
        sc["a"] = self.scenario(
            "a", "patient-view, full prefetch (~50 resources)", bodies["a"], SERVICE_PATH, memory
        )
        self.memory_checkpoint(service, bodies["a"], memory)
        log(f"soak: (a) with {a.soak_connections} connections for {a.soak_duration:g} s")
        soak = self.measure(
            "soak (a)",
            "service",
            self.ports.service,
            SERVICE_PATH,
            bodies["a"],
            connections=a.soak_connections,
            duration=a.soak_duration,
            warmup=False,
            statuses="each",  # the zero-errors target: any status but 200 is an error
        )
        soak_floor = self.measure(
            "soak (a)",
            "floor",
            self.ports.floor,
            SERVICE_PATH,
            bodies["a"],
            connections=a.soak_connections,
            duration=a.duration,
            warmup=False,
            statuses="each",
        )
        memory["service_after_soak"] = worker_memory(service.pid, a.workers)
        memory["service_after_soak_requests"] = self.service_requests
        self.results["soak"] = {"service": soak.summary(), "floor": soak_floor.summary()}
        own = self.measure(
            "(a) at c=1",
            "service",
            self.ports.service,
            SERVICE_PATH,
            bodies["a"],
            connections=1,
            warmup=False,
        )
        self.results["own_time_c1"] = own.summary()
        own_floor = self.measure(
            "(a) at c=1",
            "floor",
            self.ports.floor,
            SERVICE_PATH,
            bodies["a"],
            connections=1,
            warmup=False,
        )
        self.results["own_time_c1_floor"] = own_floor.summary()

        # (b) ~2,000 resources.
        sc["b"] = self.scenario(
            "b", "patient-view, long history (~2,000 resources)", bodies["b"], SERVICE_PATH, None
        )

        # (c) five keys fetched from the FHIR server behind the delaying proxy.
        sc["c"] = self.scenario_c(bodies, patient_service, own)

        # (d) order-sign with five draft orders, if the order service is there.
        if order_service is None:
            listed = ", ".join(self.results["discovered_services"])
            sc["d"] = {
                "title": "order-sign with 5 draft orders",
                "skipped": f"service not available: discovery does not list "
                f"`{scenarios.ORDER_SERVICE}` for order-sign (it lists: {listed})",
            }
            log(f"(d) skipped: {sc['d']['skipped']}")
        else:
            request = scenarios.request_d(order_service)
            bodies["d"] = self.write_body("d", request)
            sc["d"] = self.scenario(
                "d",
                f"order-sign with 5 draft orders (`{scenarios.ORDER_SERVICE}`)",
                bodies["d"],
                f"/cds-services/{scenarios.ORDER_SERVICE}",
                None,
            )

        memory["service_end"] = worker_memory(service.pid, a.workers)
        memory["service_end_requests"] = self.service_requests
        memory["floor_end"] = worker_memory(floor.pid, a.workers)
        self.results["memory"] = memory
        service.stop()

        # (a) again, with JWT verification on: a second instance, one unique token per request.
        if a.jwt:
            sc["a_jwt"] = self.scenario_jwt(bodies["a"], sc["a"])
        floor.stop()

        self.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")

    # -- pieces -----------------------------------------------------------------------------

    def write_body(self, name: str, request: dict[str, Any], rotate: bool = True) -> Path:
        """The body as a file for wrk; with `rotate`, wrk spreads the calls over many patients."""
        path = self.out / f"body-{name}.json"
        path.write_text(json.dumps(request, separators=(",", ":")), encoding="utf-8")
        if rotate:
            self.patients[path] = request["context"]["patientId"]
        return path

    def write_bodies(self) -> dict[str, Path]:
        log("building the request bodies")
        bodies = {
            "a": self.write_body("a", scenarios.request_a()),
            "b": self.write_body("b", scenarios.request_b()),
        }
        proxy_base = f"http://{HOST}:{self.ports.proxy}/fhir/R4"
        # (c) keeps its one patient: the FHIR server holds only that one.
        bodies["c"] = self.write_body("c", scenarios.request_c(proxy_base), rotate=False)
        return bodies

    def discover(self, port: int, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
        status, data = http_get(port, "/cds-services", timeout=10, headers=headers)
        if status != 200:
            raise BenchError(f"discovery answered {status}: {data[:500]!r}")
        services: list[dict[str, Any]] = json.loads(data)["services"]
        return services

    def preflight(
        self, port: int, path: str, body: Path, headers: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """One call: the status, the cards' kinds and the latency of an unloaded call."""
        status, data, elapsed = http_post(port, path, body.read_bytes(), headers=headers)
        found: dict[str, Any] = {"status": status, "latency_ms": round(elapsed * 1000, 1)}
        if status == 200:
            cards = json.loads(data).get("cards", [])
            found["cards"] = [
                c.get("source", {}).get("topic", {}).get("code", c.get("summary")) for c in cards
            ]
        else:
            found["body"] = data[:600].decode("utf-8", "replace")
        return found

    def scenario(
        self, key: str, title: str, body: Path, path: str, memory: dict[str, Any] | None
    ) -> dict[str, Any]:
        a = self.args
        request = json.loads(body.read_text(encoding="utf-8"))
        result: dict[str, Any] = {
            "title": title,
            "resources": scenarios.count_resources(request),
            "body_kb": round(body.stat().st_size / 1024, 1),
            "connections": a.connections,
        }
        log(f"({key}) {title}: {result['resources']} resources, {result['body_kb']} KB")
        result["preflight"] = self.preflight(self.ports.service, path, body)
        self.service_requests += 1
        if result["preflight"]["status"] != 200:
            result["failed"] = (
                f"the service answered {result['preflight']['status']}: "
                f"{result['preflight'].get('body', '')}"
            )
            log(f"  ({key}) not measured: {result['failed']}")
            return result
        log(f"  cards: {', '.join(result['preflight']['cards']) or '(none)'}")
        for target, port in (("floor", self.ports.floor), ("service", self.ports.service)):
            self.drive(
                f"({key}) warm-up",
                target,
                port,
                path,
                body,
                duration=a.warmup,
                connections=a.connections,
            )
        if memory is not None:
            memory["service_after_warmup"] = worker_memory(self.service_pid, a.workers)
            memory["service_after_warmup_requests"] = self.service_requests
        # The floor and the service take turns, a.rounds times, sharing the measured time: the
        # machine's speed drifts (by ~8% within an hour here), and both sides then see the same drift.
        rounds = max(1, a.rounds)
        runs: dict[str, list[Run]] = {"floor": [], "service": []}
        for n in range(1, rounds + 1):
            for target, port in (("floor", self.ports.floor), ("service", self.ports.service)):
                runs[target].append(
                    self.measure(
                        f"({key})" if rounds == 1 else f"({key}) round {n}/{rounds}",
                        target,
                        port,
                        path,
                        body,
                        connections=a.connections,
                        duration=a.duration / rounds,
                        warmup=False,
                    )
                )
        result["service"] = combined(f"({key})", runs["service"])
        result["floor"] = combined(f"({key})", runs["floor"])
        result["rounds"] = [
            {
                "service_p50_ms": s.ms("p50"),
                "floor_p50_ms": f.ms("p50"),
                "service_rps": round(s.rps, 1),
                "floor_rps": round(f.rps, 1),
            }
            for s, f in zip(runs["service"], runs["floor"], strict=True)
        ]
        return result

    def memory_checkpoint(self, service: Proc, body: Path, memory: dict[str, Any]) -> None:
        """RSS once --memory-requests (a) calls have been answered since the warm-up reading
        (so both "from start" and "from after warm-up" span at least that many; tops up if short)."""
        a = self.args
        goal = memory["service_after_warmup_requests"] + a.memory_requests
        missing = goal - self.service_requests
        if missing > 0:
            rate = max(self.results["scenarios"]["a"]["service"]["rps"], 1.0)
            duration = min(max(missing / rate + 0.5, 1), a.memory_topup_max)
            log(
                f"memory: {self.service_requests} requests so far; ~{missing} more of (a) "
                f"({duration:.0f} s)"
            )
            top_up = self.drive(
                "memory top-up (a)",
                "service",
                self.ports.service,
                SERVICE_PATH,
                body,
                duration=duration,
                connections=a.connections,
            )
            self.results["memory_topup"] = top_up.summary()
        memory["service_after_n"] = worker_memory(service.pid, a.workers)
        memory["service_after_n_requests"] = self.service_requests
        log(
            f"memory: after {self.service_requests} requests: "
            + ", ".join(f"{m['VmRSS'] / 1024:.1f} MiB" for m in memory["service_after_n"].values())
        )

    def scenario_c(
        self, bodies: dict[str, Path], patient_service: dict[str, Any], own: Run
    ) -> dict[str, Any]:
        a = self.args
        title = (
            f"patient-view, 5 of 6 prefetch keys missing, fetched from the FHIR server "
            f"(+{a.fhir_delay_ms:g} ms per request)"
        )
        result: dict[str, Any] = {"title": title, "connections": a.connections}
        log(f"(c) {title}")
        seed_dir = self.out / "seed-c"
        seed_dir.mkdir(exist_ok=True)
        (seed_dir / "bench-a.json").write_text(json.dumps(scenarios.seed_c()), encoding="utf-8")
        ensure_port_free(self.ports.fhir, "FHIR server")
        fhir, direct_base = self.start_fhir_server(seed_dir)
        proxy = self.start(
            "delay-proxy",
            [
                a.node,
                str(BENCH / "delay_proxy.mjs"),
                "--upstream",
                f"http://{HOST}:{self.ports.fhir}",
                "--port",
                str(self.ports.proxy),
                "--delay-ms",
                f"{a.fhir_delay_ms:g}",
            ],
            dict(os.environ),
            self.ports.proxy,
        )
        wait_listening(proxy, self.ports.proxy)
        proxy_base = f"http://{HOST}:{self.ports.proxy}/fhir/R4"

        queries = scenarios.fhir_queries(patient_service)
        missing = [k for k in queries if k not in json.loads(bodies["c"].read_text())["prefetch"]]
        result["missing_keys"] = missing
        result["fhir_round_trip"] = round_trips(
            direct_base, proxy_base, {k: queries[k] for k in missing}, a.rt_samples
        )
        rt = result["fhir_round_trip"]
        log(
            f"  one FHIR round trip through the proxy: median {rt['single_ms']:.1f} ms "
            f"(slowest key's median; direct: {rt['direct_single_ms']:.1f} ms)"
        )

        result["resources"] = scenarios.count_resources(json.loads(bodies["a"].read_text())) - 1
        result["body_kb"] = round(bodies["c"].stat().st_size / 1024, 1)
        result["preflight"] = self.preflight(self.ports.service, SERVICE_PATH, bodies["c"])
        self.service_requests += 1
        if result["preflight"]["status"] != 200:
            result["failed"] = (
                f"the service answered {result['preflight']['status']}: "
                f"{result['preflight'].get('body', '')}"
            )
            log(f"  (c) not measured: {result['failed']}")
            return result
        log(f"  cards: {', '.join(result['preflight']['cards']) or '(none)'}")
        result["fetch_pattern"] = self.fetch_pattern(bodies["c"], a.rt_samples)
        fp = result["fetch_pattern"]
        log(
            f"  one call: {fp['latency_ms']:.1f} ms; its {fp['fhir_requests']:g} FHIR requests "
            f"arrived within {fp['arrival_spread_ms']:.1f} ms of each other, all answered "
            f"{fp['fhir_window_ms']:.1f} ms after the first arrived (medians)"
        )
        single = self.measure(
            "(c) at c=1", "service", self.ports.service, SERVICE_PATH, bodies["c"], connections=1
        )
        floor = self.measure(
            "(c)", "floor", self.ports.floor, SERVICE_PATH, bodies["c"], connections=a.connections
        )
        service = self.measure(
            "(c)",
            "service",
            self.ports.service,
            SERVICE_PATH,
            bodies["c"],
            connections=a.connections,
        )
        result["single"] = single.summary()
        result["own_time"] = own.summary()
        result["service"], result["floor"] = service.summary(), floor.summary()
        proxy.stop()
        fhir.stop()
        return result

    def start_fhir_server(self, seed_dir: Path) -> tuple[Proc, str]:
        """The local FHIR server of the tests (same command as LocalFhirServer), run as one of our
        process groups so that it is stopped with everything else."""
        from tests.support.fhir_server import READY_PREFIX, LocalFhirServer

        argv = LocalFhirServer([seed_dir], port=self.ports.fhir).command()
        proc = Proc(
            "fhir-server", argv, dict(os.environ), self.out / "fhir-server.log", stdout_pipe=True
        )
        self.stack.callback(proc.stop)
        assert proc.popen.stdout is not None
        fd = proc.popen.stdout.fileno()
        deadline = time.monotonic() + 90
        buffer = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([fd], [], [], 0.5)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buffer += chunk
            for line in buffer.decode("utf-8", "replace").splitlines():
                if line.startswith(READY_PREFIX):
                    return proc, line[len(READY_PREFIX) :].strip()
        raise BenchError(f"the local FHIR server did not start:\n{proc.log_tail()}")

    def fetch_pattern(self, body: Path, calls: int) -> dict[str, Any]:
        """How one unloaded (c) call uses the FHIR server, from the delaying proxy's timings: are
        the missing keys fetched concurrently, and how long is the FHIR part of the call?"""
        seen: list[dict[str, float]] = []
        for _ in range(calls):
            http_get(self.ports.proxy, "/__log")  # clears it
            status, _, elapsed = http_post(self.ports.service, SERVICE_PATH, body.read_bytes())
            self.service_requests += 1
            _, data = http_get(self.ports.proxy, "/__log")
            timings = [t for t in json.loads(data) if t["done"] is not None]
            if status != 200 or not timings:
                raise BenchError(f"(c): a call answered {status} with {len(timings)} FHIR requests")
            arrived = [t["arrived"] for t in timings]
            upstream = [t["done"] - t["forwarded"] for t in timings]
            window = max(t["done"] for t in timings) - min(arrived)
            seen.append(
                {
                    "latency_ms": elapsed * 1000,
                    "fhir_requests": len(timings),
                    "arrival_spread_ms": max(arrived) - min(arrived),
                    "fhir_window_ms": window,
                    "upstream_max_ms": max(upstream),
                    "upstream_sum_ms": sum(upstream),
                    "outside_fhir_ms": elapsed * 1000 - window,
                }
            )
        found: dict[str, Any] = {
            key: round(statistics.median(row[key] for row in seen), 2) for key in seen[0]
        }
        found["calls"] = calls
        return found

    def scenario_jwt(self, body: Path, plain: dict[str, Any]) -> dict[str, Any]:
        import jwt as pyjwt
        from cryptography.hazmat.primitives.asymmetric import ec

        a = self.args
        title = "(a) with client JWT verification on (ES384, unique jti per request)"
        result: dict[str, Any] = {
            "title": title,
            "resources": plain.get("resources"),
            "body_kb": plain.get("body_kb"),
            "connections": a.connections,
        }
        log(title)
        key = ec.generate_private_key(ec.SECP384R1())
        public = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        public.update({"kid": JWT_KID, "alg": "ES384", "use": "sig"})
        issuers = self.out / "trusted-issuers.json"
        issuers.write_text(
            json.dumps({"issuers": [{"iss": JWT_ISSUER, "jwks": {"keys": [public]}}]})
        )
        port = self.ports.service_jwt
        base = f"http://{HOST}:{port}"
        env = service_env(
            port,
            self.out / "cds-bench-jwt.sqlite3",
            CDS_AUTH="jwt",
            CDS_TRUSTED_ISSUERS=str(issuers),
        )
        rate = plain.get("service", {}).get("rps", 100.0)
        per_run = {"warm": int(rate * a.warmup * 2) + 500, "run": int(rate * a.duration * 2) + 1000}
        started = time.perf_counter()

        def tokens(count: int, path: str) -> list[str]:
            now = int(time.time())
            claims = {
                "iss": JWT_ISSUER,
                "sub": JWT_ISSUER,
                "aud": base + path,
                "iat": now,
                "exp": now + 3000,
            }
            return [
                pyjwt.encode(
                    {**claims, "jti": uuid.uuid4().hex},
                    key,
                    algorithm="ES384",
                    headers={"kid": JWT_KID, "typ": "JWT"},
                )
                for _ in range(count)
            ]

        files = []
        for name, count in per_run.items():
            path = self.out / f"tokens-{name}.txt"
            path.write_text("\n".join(tokens(count, SERVICE_PATH)) + "\n")
            files.append(path)
        log(f"  signed {sum(per_run.values())} tokens in {time.perf_counter() - started:.1f} s")
        proc = self.start_service("service-jwt", port, env)
        result["cold_start_s"] = wait_healthy(proc, port)
        discovery_token = tokens(1, "/cds-services")[0]
        self.discover(port, {"Authorization": f"Bearer {discovery_token}"})
        result["preflight"] = self.preflight(
            port, SERVICE_PATH, body, {"Authorization": f"Bearer {tokens(1, SERVICE_PATH)[0]}"}
        )
        status, _, _ = http_post(port, SERVICE_PATH, body.read_bytes())
        result["without_token_status"] = status
        if result["preflight"]["status"] != 200:
            result["failed"] = f"the service answered {result['preflight']['status']}"
            proc.stop()
            return result
        run = self.measure(
            "(a) + JWT",
            "service-jwt",
            port,
            SERVICE_PATH,
            body,
            connections=a.connections,
            tokens=(files[0], files[1]),
        )
        result["service"] = run.summary()
        result["floor"] = plain.get("floor")
        proc.stop()
        return result


def wait_listening(proc: Proc, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise BenchError(f"{proc.name} exited early:\n{proc.log_tail()}")
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{proc.name} is not listening on {port}")


def round_trips(
    direct_base: str, proxy_base: str, queries: dict[str, str], samples: int
) -> dict[str, Any]:
    """Median time of one GET per query, sequentially on a kept-alive connection, through the proxy
    and directly; `single_ms` is the slowest query's median (a concurrent fetch of all of them can't
    be faster than that)."""
    import httpx

    headers = {"Authorization": f"Bearer {scenarios.FHIR_TOKEN}", "Accept": "application/fhir+json"}
    found: dict[str, Any] = {"per_key_ms": {}, "direct_per_key_ms": {}, "entries": {}}
    with httpx.Client(timeout=10, headers=headers) as client:
        for base, into in ((proxy_base, "per_key_ms"), (direct_base, "direct_per_key_ms")):
            times: dict[str, list[float]] = {k: [] for k in queries}
            for _ in range(samples):
                for key, query in queries.items():
                    started = time.perf_counter()
                    response = client.get(f"{base}/{query}")
                    elapsed = time.perf_counter() - started
                    if response.status_code != 200:
                        raise BenchError(f"FHIR {query} answered {response.status_code}")
                    times[key].append(elapsed * 1000)
                    found["entries"][key] = len(response.json().get("entry", []))
            found[into] = {k: round(statistics.median(v), 2) for k, v in times.items()}
    found["single_ms"] = max(found["per_key_ms"].values())
    found["direct_single_ms"] = max(found["direct_per_key_ms"].values())
    found["samples"] = samples
    return found


# Settings of `cds-service serve` that only make sense for the service itself (its worker
# warm-up hooks: the floor has nothing to warm).
SERVICE_ONLY_SETTINGS = {"post_fork", "post_worker_init", "certfile", "keyfile"}


def service_code(log_path: Path) -> str:
    """What `cds-service serve` said at start about its code: compiled (mypyc) or pure Python."""
    text = log_path.read_text(encoding="utf-8", errors="replace")
    said = [line.removeprefix("Code: ") for line in text.splitlines() if line.startswith("Code: ")]
    return said[-1] if said else "not stated by the service"


def gunicorn_setting_names(path: Path) -> set[str]:
    return set(re.findall(r'self\.cfg\.set\(\s*"(\w+)"', path.read_text(encoding="utf-8")))


def floor_settings_drift() -> list[str]:
    """Gunicorn settings `cds-service serve` sets that the floor does not, or the other way round."""
    serve = gunicorn_setting_names(ROOT / "cds_service" / "cli.py") - SERVICE_ONLY_SETTINGS
    floor = gunicorn_setting_names(BENCH / "floor_app.py")
    return sorted(f"serve only: {name}" for name in serve - floor) + sorted(
        f"floor only: {name}" for name in floor - serve
    )


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])

    def version(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (
            (done.stdout or done.stderr).strip().splitlines()[0]
            if (done.stdout or done.stderr)
            else "?"
        )

    from importlib.metadata import version as package_version

    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "cpu": cpu,
        "cpus": NCPU,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "flask": package_version("flask"),
        "gunicorn": package_version("gunicorn"),
        "wrk": version(["wrk", "--version"]),
        "node": version(["node", "--version"]),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(git("status", "--porcelain")),
    }


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CDS service benchmark against a framework floor")
    parser.add_argument("--duration", type=float, default=15, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3, help="warm-up seconds before each")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--soak-duration", type=float, default=60)
    parser.add_argument("--soak-connections", type=int, default=32)
    parser.add_argument("--memory-requests", type=int, default=10_000)
    parser.add_argument(
        "--memory-topup-max",
        type=float,
        default=180,
        help="most seconds spent topping up to --memory-requests",
    )
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (both servers)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (both)")
    parser.add_argument("--fhir-delay-ms", type=float, default=50)
    parser.add_argument("--rt-samples", type=int, default=20)
    parser.add_argument("--wrk-timeout", type=float, default=10)
    parser.add_argument(
        "--rebalance-retries",
        type=int,
        default=4,
        help="re-measure a run whose connections all sat on one worker, at most this often",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="scenarios (a)-(d): floor and service take turns this often, sharing --duration",
    )
    parser.add_argument(
        "--even-attempts",
        type=int,
        default=15,
        help="restart wrk, at most this often per measured run, until its connections are spread"
        " evenly over the workers (0: keep the first start)",
    )
    parser.add_argument("--no-jwt", dest="jwt", action="store_false")
    parser.add_argument(
        "--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE", "18080"))
    )
    parser.add_argument("--out", type=Path, default=BENCH / "out")
    parser.add_argument("--results", type=Path, default=BENCH / "results.md")
    parser.add_argument("--plot", type=Path, default=BENCH / "latency.png")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run (short durations); writes under --out only",
    )
    parser.add_argument("--wrk", default="wrk")
    parser.add_argument("--node", default="node")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.soak_duration, args.rounds = 3, 1, 5, 1
        args.memory_requests, args.cold_starts, args.rt_samples = 500, 1, 3
        args.results, args.plot = args.out / "results-quick.md", args.out / "latency-quick.png"
    return args


def check_tools(args: argparse.Namespace) -> None:
    wrk = shutil.which(args.wrk)
    if wrk is None:
        raise BenchError("`wrk` is not installed: apt-get update && apt-get install -y wrk")
    args.wrk = wrk
    node = shutil.which(args.node)
    if node is None:
        raise BenchError("`node` (Node.js 20+) is needed for the local FHIR server")
    args.node = node
    if not (ROOT / "fhir_server" / "node_modules" / "@medplum" / "fhir-router").is_dir():
        raise BenchError("fhir_server/node_modules is missing: run `make bench` (it runs npm ci)")
    if not (Path(sys.executable).parent / "cds-service").exists():
        raise BenchError(f"cds-service is not installed beside {sys.executable}")
    if not scenarios.SYNTHEA_B.exists():
        raise BenchError(f"the Synthea bundle for (b) is missing: {scenarios.SYNTHEA_B}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, _raise_on_signal)
    started = time.monotonic()
    try:
        check_tools(args)
        with ExitStack() as stack:
            bench = Bench(args, stack)
            bench.run()
    except BenchError as exc:
        log(f"FAILED: {exc}")
        return 2
    results = bench.results
    results["command"] = (
        "make bench"
        if os.environ.get("MAKELEVEL")
        else " ".join([Path(sys.executable).name, *sys.argv])
    )
    results["argv"] = sys.argv[1:]
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    raw = json.dumps(results, indent=2, default=str)
    (args.out / "results.json").write_text(raw)
    report.write(json.loads(raw), args.results, args.plot)
    log(f"done in {results['elapsed_s']:.0f} s: {args.results} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
