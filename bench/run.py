"""`make bench`: the service in its production shape against two floors, under load from wrk.

Servers (all on 127.0.0.1, gunicorn gthread, the same workers and threads; bench/README.md):
  service      `cds-service serve`, CDS_ENV=production, CDS_AUTH=jwt, PostgreSQL (a private schema)
  service-off  the same with CDS_AUTH=off (the secondary rows)
  production   bench/floors.py production: verify the JWT, INSERT its jti once, canned answer
  framework    bench/floors.py framework: read the body, canned answer
Every request carries a token no server has seen (RS384 or ES384, signed before the runs); every
answer's status is checked. Floor and service take turns in rounds, so both see the same drift of
the machine. Each run also reads the CPU time (/proc) of the server's processes and PostgreSQL
backends: CPU ms per call. Writes bench/results.md, results.json and latency.png, then the capacity
table deploy/capacity.md from results.json (`--quick`: bench/out/ only, no table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
sys.path.insert(0, str(BENCH))
import scenarios  # noqa: E402

HOST = "127.0.0.1"
ISSUER = "https://ehr.bench.example"
HOLD_MS = 300  # wrk's connections wait this long before their first request (see post.lua)
VARIANTS = 200  # patients the requests cycle through
TARGET = 1.5  # production shape: service p50 at most this many times the production floor's


def log(message: str) -> None:
    print(f"[bench {datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """One gunicorn server in its own process group, stopped with the whole group."""

    def __init__(self, name: str, port: int, argv: list[str], env: dict[str, str]) -> None:
        self.name, self.port = name, port
        self.log_path = OUT / f"{name}.log"
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True,
            )

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}"

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if http(self.url("/healthz"))[0] == 200:
                    return
            time.sleep(0.3)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        raise SystemExit(f"{self.name} did not start (see {self.log_path}):\n{tail}")

    def workers(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def spread(self, workers: list[int]) -> list[int]:
        """Established connections to this server held by each worker, most first."""
        inodes = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].split(":")[1], 16) == self.port:
                inodes.add(f"socket:[{fields[9]}]")
        counts = []
        for pid in workers:
            with contextlib.suppress(OSError):
                fds = Path(f"/proc/{pid}/fd").iterdir()
                counts.append(sum(1 for fd in fds if _readlink(fd) in inodes))
        return sorted(counts, reverse=True)

    def code(self) -> str:  # what serve says it runs: compiled modules or pure Python
        lines = self.log_path.read_text(errors="replace").splitlines()
        return next((line[6:] for line in lines if line.startswith("Code: ")), "not reported")

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)


def _readlink(path: Path) -> str:
    with contextlib.suppress(OSError):
        return os.readlink(path)
    return ""


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far, from /proc."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_now(server: Server, args: argparse.Namespace) -> tuple[dict[int, float], dict[int, float]]:
    """CPU so far of the server's processes and of its PostgreSQL backends (its application_name):
    CPU per call holds on a shared machine, where calls per second do not (deploy/capacity.py)."""
    import sqlalchemy as sa

    with args.admin.connect() as connection:
        pids = connection.execute(sa.text("SELECT pid FROM pg_stat_activity WHERE application_name"
                                          " = :name"), {"name": f"bench-{server.name}"}).scalars()
        backends = cpu_of(list(pids))
    return cpu_of([server.proc.pid, *server.workers()]), backends


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def http(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, body, headers, method="POST" if body else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()




def make_keys() -> dict[str, Any]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    keys = {
        "RS384": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES384": ec.generate_private_key(ec.SECP384R1()),
    }
    jwks = []
    for alg, key in keys.items():
        family = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
        public = json.loads(family.to_jwk(key.public_key()))
        jwks.append({**public, "kid": f"bench-{alg}", "alg": alg, "use": "sig"})
    (OUT / "issuers.json").write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": jwks}}]}))
    return keys


def _sign(alg: str, pem: bytes | Any, audience: str, count: int) -> list[str]:
    import jwt
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(pem, None) if isinstance(pem, bytes) else pem  # once: jwt.encode would load a PEM on every call
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": ISSUER, "aud": audience, "iat": now, "exp": now + 3000}
    header = {"kid": f"bench-{alg}", "typ": "JWT"}
    return [
        jwt.encode({**claims, "jti": uuid.uuid4().hex}, key, algorithm=alg, headers=header)
        for _ in range(count)
    ]


def sign_tokens(pool: ProcessPoolExecutor, key: Any, alg: str, audience: str, count: int) -> list[str]:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    chunks = [min(1000, count - n) for n in range(0, count, 1000)]
    return [t for part in pool.map(_sign, *zip(*[(alg, pem, audience, n) for n in chunks])) for t in part]




def wrk(server: Server, path: str, body: Path, tokens: Path | None, first: int, seconds: int,
        args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run whose connections sit evenly on the workers (restarted until they do)."""
    def argv(first: int) -> list[str]:
        return ["wrk", "-t1", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s", "-s",
                str(BENCH / "post.lua"), server.url(path), "--", str(body), str(tokens or "-"),
                str(first), str(HOLD_MS), str(args.connections), str(VARIANTS)]

    def result(proc: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = proc.communicate(timeout=seconds + 60)
        if "BENCH_JSON " not in out:
            raise SystemExit(f"wrk failed on {server.name}: {err or out}")
        run: dict[str, Any] = json.loads(out.split("BENCH_JSON ", 1)[1].splitlines()[0])
        return run

    used, workers = 0, server.workers()
    for attempt in range(1, args.even_attempts + 1):
        before = cpu_now(server, args)
        proc = subprocess.Popen(argv(first + used), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        deadline = time.monotonic() + 10  # wrk reads its files, then opens every connection
        spread = server.spread(workers)
        while sum(spread) < args.connections and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
            spread = server.spread(workers)
        # Even: every worker holds as many connections. The spread is read while the connections
        # hold their first request, so choosing a run never looks at its speed.
        even = len(set(spread)) == 1 and len(spread) == args.workers
        if even and sum(spread) == args.connections or attempt == args.even_attempts:
            break
        proc.send_signal(signal.SIGINT)  # wrk stops and still reports the tokens it sent
        used += result(proc)["used"]
    run = result(proc)
    after = cpu_now(server, args)
    run.update(cpu_s=spent(before[0], after[0]), db_cpu_s=spent(before[1], after[1]))
    run["used"] += used
    busy_s = run["duration_us"] / 1e6 - HOLD_MS / 1000
    run.update(server=server.name, rps=run["requests"] / busy_s, spread=spread, attempts=attempt)
    return run




def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per measured round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--even-attempts", type=int, default=15, help="wrk starts per run")
    p.add_argument("--port-base", type=int, default=int(os.environ.get("BENCH_PORT_BASE", 18100)))
    p.add_argument("--database", default=os.environ.get(
        "BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run, into bench/out/")
    args = p.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
    return args


GROUPS = [  # scenario, token algorithm (None: no token, auth off), servers in turn
    ("a", "RS384", ["framework", "production", "service"]),
    ("a", "ES384", ["production", "service"]),
    ("d", "RS384", ["framework", "production", "service"]),
    ("a", None, ["framework", "service-off"]),
    ("d", None, ["framework", "service-off"]),
]


def main() -> int:
    args = parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for port in range(args.port_base, args.port_base + 4):
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                print(f"port {port} is busy: stop what listens there, or set BENCH_PORT_BASE",
                      file=sys.stderr)
                return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("interrupted"))
    import sqlalchemy as sa

    engine = args.admin = sa.create_engine(args.database)
    tag = uuid.uuid4().hex[:8]
    schemas = {name: f"bench_{tag}_{name}" for name in ("service", "off", "floor")}
    with engine.begin() as connection:
        for schema in schemas.values():
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        pg_version = connection.execute(sa.text("SHOW server_version")).scalar()
    servers: dict[str, Server] = {}
    started = time.monotonic()
    pool = ProcessPoolExecutor(os.cpu_count(), initializer=signal.signal,
                               initargs=(signal.SIGTERM, signal.SIG_DFL))
    try:
        result = bench(args, schemas, servers, pool)
        result.update(postgresql=pg_version, minutes=(time.monotonic() - started) / 60)
    finally:
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()  # a signing task still running when interrupted
        pool.shutdown(wait=False, cancel_futures=True)
        for server in servers.values():
            server.stop()
        with engine.begin() as connection:
            for schema in schemas.values():
                connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    target = OUT if args.quick else BENCH
    result["summary"] = [{"scenario": g["scenario"], "alg": g["alg"], "server": name,
                          **summarize(runs)} for g in result["groups"] for name, runs in g["runs"].items()]
    (target / "results.json").write_text(json.dumps(result, indent=1))
    (target / "results.md").write_text(report(result, args))
    plot(result, target / "latency.png")
    if not args.quick:  # the capacity table in deploy/capacity.md, from the results.json just written
        subprocess.run([sys.executable, str(ROOT / "deploy" / "capacity.py")], check=True)
    log(f"done in {result['minutes']:.1f} min: {target / 'results.md'}")
    return 0


def bench(args: argparse.Namespace, schemas: dict[str, str], servers: dict[str, Server],
          pool: ProcessPoolExecutor) -> dict[str, Any]:
    keys = make_keys()
    base = args.port_base
    audience = f"http://{HOST}:{base}"  # the service's public base URL; the floors check it too
    python = str(Path(sys.executable))
    cds = str(Path(sys.executable).with_name("cds-service"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    serve = [cds, "serve", "--host", HOST, "--workers", str(args.workers), "--threads", str(args.threads)]
    for name, port, auth, schema in (("service", base, "jwt", "service"),
                                     ("service-off", base + 1, "off", "off")):
        env = {**base_env, "CDS_ENV": "production", "CDS_AUTH": auth,
               "CDS_TRUSTED_ISSUERS": str(OUT / "issuers.json"), "CDS_PUBLIC_BASE_URL": audience,
               "CDS_PATIENT_HASH_KEY": uuid.uuid4().hex,
               "CDS_DATABASE_URL": f"{args.database}?options=-csearch_path%3D{schemas[schema]}"
                                   f"&application_name=bench-{name}",
               "CDS_FHIR_SERVER_ALLOWLIST": f"http://{HOST}"}
        servers[name] = Server(name, port, [*serve, "--port", str(port)], env)
    for server in servers.values():
        server.wait_healthy()
    service = servers["service"]

    def one_token(path: str, alg: str = "RS384") -> str:
        return _sign(alg, keys[alg], audience + path, 1)[0]

    status, data = http(service.url("/cds-services"), token=one_token("/cds-services"))
    if status != 200:
        raise SystemExit(f"discovery answered {status}: {data[:300]!r}")
    order = next(s for s in json.loads(data)["services"] if s["id"] == scenarios.ORDER_SERVICE)
    requests = {"a": (scenarios.PATIENT_SERVICE, scenarios.request_a()),
                "d": (scenarios.ORDER_SERVICE, scenarios.request_d(order))}
    answers = OUT / "answers"
    answers.mkdir(exist_ok=True)
    bodies, checks = {}, {}
    for key, (service_id, request) in requests.items():
        path, bodies[key] = f"/cds-services/{service_id}", OUT / f"request-{key}.json"
        bodies[key].write_bytes(json.dumps(request).encode())
        token = one_token(path)
        status, answer = http(service.url(path), bodies[key].read_bytes(), token)
        if status != 200:
            raise SystemExit(f"({key}) answered {status}: {answer[:500]!r}")
        (answers / f"{service_id}.json").write_bytes(answer)  # the floors' canned body
        replay = http(service.url(path), bodies[key].read_bytes(), token)[0]
        missing = http(service.url(path), bodies[key].read_bytes())[0]
        off = http(servers["service-off"].url(path), bodies[key].read_bytes())[0]
        checks[key] = {"cards": len(json.loads(answer)["cards"]), "answer_bytes": len(answer),
                       "request_bytes": bodies[key].stat().st_size, "replayed_token": replay,
                       "no_token": missing, "auth_off": off,
                       "resources": sum(len(scenarios.resources_of(v))
                                        for v in request["prefetch"].values())}
    floor_args = ["--host", HOST, "--workers", str(args.workers), "--threads", str(args.threads),
                  "--answers", str(answers), "--issuers", str(OUT / "issuers.json"),
                  "--audience", audience,
                  "--database", f"{args.database}?options=-csearch_path%3D{schemas['floor']}"]
    for name, port in (("framework", base + 2), ("production", base + 3)):
        servers[name] = Server(name, port, [python, str(BENCH / "floors.py"), name, "--port",
                                            str(port), *floor_args], base_env)
    for name in ("framework", "production"):
        servers[name].wait_healthy()
    path_a = f"/cds-services/{scenarios.PATIENT_SERVICE}"
    token = one_token(path_a)
    floor_status = [http(servers["production"].url(path_a), bodies["a"].read_bytes(), t)[0]
                    for t in (token, token, one_token(path_a, "ES384"), None)]
    next_token: dict[tuple[str, str, str], int] = {}
    groups = []
    for key, alg, names in GROUPS:
        path = f"/cds-services/{requests[key][0]}"
        tokens = OUT / f"tokens-{key}-{alg}.txt" if alg else None
        signed: list[str] = []
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        log(f"({key}) {alg or 'auth off'}: {', '.join(names)}")

        def top_up(count: int) -> None:
            # Tokens are signed while no server is measured, as many as the runs will send.
            if tokens and count > 0:
                signed.extend(sign_tokens(pool, keys[alg], alg, audience + path, count))
                tokens.write_text("\n".join(signed) + "\n")

        def turn(name: str, seconds: int) -> dict[str, Any]:
            slot = (name, alg or "-", path)
            run = wrk(servers[name], path, bodies[key], tokens, next_token.get(slot, 1), seconds, args)
            next_token[slot] = next_token.get(slot, 1) + run["used"]
            return run

        top_up(int(args.warmup * 1500) + 200)
        warm = {name: turn(name, args.warmup) for name in names}
        if alg:  # the verifying servers: service and production floor
            rate = max(warm[n]["rps"] for n in ("service", "production") if n in warm)
            used = max(next_token.get((n, alg, path), 1) for n in ("service", "production"))
            top_up(used + int(rate * 1.5 * args.rounds * args.duration) + 500 - len(signed))
        for _ in range(args.rounds):
            for name in names:
                runs[name].append(turn(name, args.duration))
        groups.append({"scenario": key, "alg": alg, "runs": runs})
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "groups": groups,
        "checks": checks, "production_floor_statuses": floor_status, "code": service.code(),
        "machine": machine(), "argv": sys.argv[1:],
    }



def machine() -> dict[str, Any]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        except OSError:
            return "?"

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    dirty = " + uncommitted changes" if run("git", "status", "--porcelain", "--untracked-files=no") else ""
    return {"cpu": cpu, "cpus": os.cpu_count(), "load": os.getloadavg()[0],
            "commit": run("git", "rev-parse", "--short", "HEAD") + dirty,
            "python": platform.python_version(), "wrk": run("wrk", "--version").split(" [")[0]}




def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    busy = sum(r["requests"] / r["rps"] for r in runs)
    return {
        "rps": sum(r["requests"] for r in runs) / busy,
        "p50": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99": statistics.median(r["p99_us"] for r in runs) / 1000,
        "requests": sum(r["requests"] for r in runs),
        "bad": sum(r["not_200"] + r["socket_errors"] for r in runs),
        "statuses": " ".join(r["statuses"] for r in runs).strip(),
        "spreads": sorted({"/".join(map(str, r["spread"])) for r in runs}),
        "starts": sum(r["attempts"] for r in runs),
        "cpu_ms": 1000 * sum(r["cpu_s"] for r in runs) / sum(r["requests"] for r in runs),
        "db_cpu_ms": 1000 * sum(r["db_cpu_s"] for r in runs) / sum(r["requests"] for r in runs),
    }


def label(group: dict[str, Any]) -> str:
    return f"({group['scenario']}) {group['alg'] or 'auth off'}"


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m = result["machine"]
    lines = [
        "# `make bench` results", "",
        f"{result['date']}, commit {m['commit']}; {m['cpu']}, {m['cpus']} CPUs (load average "
        f"{m['load']:.1f} at the end); Python {m['python']}, {m['wrk']}, PostgreSQL "
        f"{result['postgresql']}; service code: {result['code']}. Command: `python bench/run.py "
        f"{' '.join(result['argv'])}` ({result['minutes']:.1f} min).", "",
        f"Every server: gunicorn gthread, {args.workers} workers × {args.threads} threads. wrk: one "
        f"thread, {args.connections} connections, {args.rounds} alternating rounds of "
        f"{args.duration:g} s per server after {args.warmup:g} s of warm-up; p50/p99 = median of the "
        "rounds', req/s over all rounds. Every answer's status is checked.", "",
        "## Targets", "",
    ]
    bad = 0
    for group in result["groups"]:
        rows = {name: summarize(runs) for name, runs in group["runs"].items()}
        bad += sum(row["bad"] for row in rows.values())
        if group["alg"] == "RS384":
            ratio = rows["service"]["p50"] / rows["production"]["p50"]
            verdict = "met" if ratio <= TARGET else "missed"
            lines.append(f"- {label(group)}: service p50 / production floor p50 = **{ratio:.2f}×** "
                         f"(target ≤ {TARGET}×: {verdict}).")
    lines += [f"- Answers other than 200, and socket errors, in all runs: **{bad}** (target 0: "
              f"{'met' if bad == 0 else 'missed'}).", "", "## Table", "",
              "| scenario | server | req/s | p50 ms | p99 ms | p50 ÷ production floor (rounds) | "
              "p50 ÷ framework floor (rounds) | not 200 / requests | connections per worker (wrk starts) "
              "| CPU ms per call: server (its PostgreSQL backends) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for group in result["groups"]:
        rows = {name: summarize(runs) for name, runs in group["runs"].items()}
        for name, row in rows.items():
            cells = []
            for floor in ("production", "framework"):
                if floor in rows and name not in (floor, "framework"):
                    # the ratio of the medians, then each round's (the runs were neighbours)
                    each = [a["p50_us"] / b["p50_us"] for a, b in
                            zip(group["runs"][name], group["runs"][floor])]
                    cells.append(f"**{row['p50'] / rows[floor]['p50']:.2f}×** ("
                                 + ", ".join(f"{r:.2f}" for r in each) + ")")
                else:
                    cells.append("")
            lines.append(f"| {label(group)} | {name} | {row['rps']:,.0f} | {row['p50']:.2f} | "
                         f"{row['p99']:.2f} | {cells[0]} | {cells[1]} | {row['bad']} / "
                         f"{row['requests']:,} {row['statuses']} | {', '.join(row['spreads'])} "
                         f"({row['starts']}) | {row['cpu_ms']:.2f} ({row['db_cpu_ms']:.2f}) |")
    lines += ["", "Checks before the runs:", ""]
    for key, c in result["checks"].items():
        lines.append(f"- ({key}): {c['resources']} resources, request {c['request_bytes']:,} B, "
                     f"answer {c['answer_bytes']:,} B with {c['cards']} cards; the service answered "
                     f"{c['replayed_token']} to a replayed token, {c['no_token']} to no token; "
                     f"auth-off instance {c['auth_off']}.")
    s = result["production_floor_statuses"]
    lines.append(f"- production floor: new RS384 token {s[0]}, replayed {s[1]}, new ES384 {s[2]}, "
                 f"no token {s[3]}.")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"framework": "#bbbbbb", "production": "#6a9fd4", "service": "#d4622a",
              "service-off": "#e8a36f"}
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x, ticks = 0.0, []
    for group in result["groups"]:
        rows = {name: summarize(runs) for name, runs in group["runs"].items()}
        start = x
        for name, row in rows.items():
            ax.bar(x, row["p50"], 0.8, color=colors[name],
                   label=name if name not in ax.get_legend_handles_labels()[1] else None)
            ax.plot([x, x], [row["p50"], row["p99"]], color="black", linewidth=1)
            x += 1
        ticks.append(((start + x - 1) / 2, label(group)))
        x += 0.8
    ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks])
    ax.set_ylabel("latency, ms (bar p50, line to p99)")
    ax.set_title(f"make bench, {result['date']}: service vs floors at 8 connections")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
