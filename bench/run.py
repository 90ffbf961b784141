"""`make bench`: the service in its production shape against two floors under wrk load (README.md)."""

from __future__ import annotations

import argparse
import contextlib
import io
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
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import scenarios  # bench/ is on sys.path: Python puts the script's folder there
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

BENCH = Path(__file__).resolve().parent
ROOT, OUT = BENCH.parent, BENCH / "out"
HOST, ISSUER = "127.0.0.1", "https://ehr.bench.example"
WORKERS, THREADS, CONNECTIONS = 2, 4, 8  # every server's gunicorn; wrk's connections
EVEN_ATTEMPTS = 15  # wrk starts per run until its connections sit evenly on the workers
HOLD_MS = 300  # wrk's connections wait this long before their first request (see post.lua)
VARIANTS = 200  # patients the requests cycle through
TARGET = 1.5  # production shape: service p50 at most this many times the production floor's
PORT_BASE = int(os.environ.get("BENCH_PORT_BASE", "18100"))
DATABASE = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
GROUPS = [  # scenario, token algorithm (None: no token, auth off), servers in turn
    ("a", "RS384", ["framework", "production", "service"]),
    ("a", "ES384", ["production", "service"]),
    ("d", "RS384", ["framework", "production", "service"]),
    ("a", None, ["framework", "service-off"]),
    ("d", None, ["framework", "service-off"]),
]
Run = dict[str, Any]  # one wrk run: post.lua's numbers, then the runner's


class Server:
    """One gunicorn server in its own process group, stopped with the whole group."""

    def __init__(self, name: str, port: int, argv: list[str], env: dict[str, str]) -> None:
        self.name, self.port, self.log_path = name, port, OUT / f"{name}.log"
        self.base = f"http://{HOST}:{port}"  # + a path: a URL of this server
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    def wait_healthy(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            with contextlib.suppress(OSError):
                if http(self.base + "/healthz")[0] == 200:
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
                # a connection that closes meanwhile fails the count: the spread is then uneven
                counts.append(sum(1 for fd in fds if str(fd.readlink()) in inodes))
        return sorted(counts, reverse=True)

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(wait)


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds (user + system) each process has used so far, from /proc."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def http(url: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    headers |= {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, body, headers)  # a POST when there is a body
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def make_keys() -> dict[str, bytes]:
    """A private key per algorithm (PEM, for the signing processes); their JWKS in issuers.json."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = {"RS384": rsa_key, "ES384": ec.generate_private_key(ec.SECP384R1())}
    jwks = []
    for alg, key in keys.items():
        family = jwt.algorithms.RSAAlgorithm if alg == "RS384" else jwt.algorithms.ECAlgorithm
        public = json.loads(family.to_jwk(key.public_key()))
        jwks.append({**public, "kid": f"bench-{alg}", "alg": alg, "use": "sig"})
    issuers = {"issuers": [{"iss": ISSUER, "jwks": {"keys": jwks}}]}
    (OUT / "issuers.json").write_text(json.dumps(issuers))
    pkcs8 = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    return {alg: k.private_bytes(serialization.Encoding.PEM, *pkcs8) for alg, k in keys.items()}


def sign(alg: str, pem: bytes, audience: str, count: int) -> list[str]:
    """`count` tokens, each with a fresh jti (runs in the signing pool)."""
    # parsed once here: jwt.encode would parse a PEM on every call
    key = serialization.load_pem_private_key(pem, None)
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": ISSUER, "aud": audience, "iat": now, "exp": now + 3000}
    header = {"kid": f"bench-{alg}", "typ": "JWT"}
    return [
        jwt.encode({**claims, "jti": uuid.uuid4().hex}, key, algorithm=alg, headers=header)
        for _ in range(count)
    ]


class Bench:
    """The servers, keys and PostgreSQL schemas of one `make bench`, and its wrk runs."""

    def __init__(self, args: argparse.Namespace, admin: Any, schemas: dict[str, str]) -> None:
        self.args, self.admin, self.schemas = args, admin, schemas
        self.servers: dict[str, Server] = {}
        self.audience = f"http://{HOST}:{PORT_BASE}"  # the service's public URL; floors check it
        default = (signal.SIGTERM, signal.SIG_DFL)  # signers die of SIGTERM, unlike the runner
        self.pool = ProcessPoolExecutor(initializer=signal.signal, initargs=default)

    def token(self, path: str, alg: str = "RS384") -> str:
        return sign(alg, self.keys[alg], self.audience + path, 1)[0]

    def sign_many(self, alg: str, path: str, count: int) -> list[str]:
        chunks = [min(1000, count - n) for n in range(0, count, 1000)]
        args = [(alg, self.keys[alg], self.audience + path, n) for n in chunks]
        return [token for part in self.pool.map(sign, *zip(*args, strict=True)) for token in part]

    def start(self) -> dict[str, Any]:
        """The service twice (jwt, off), checked; then the floors with the service's answers."""
        self.keys = make_keys()
        base_env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
        cds = str(Path(sys.executable).with_name("cds-service"))
        for name, port, auth, schema in (
            ("service", PORT_BASE, "jwt", "service"),
            ("service-off", PORT_BASE + 1, "off", "off"),
        ):
            database = f"{DATABASE}?options=-csearch_path%3D{self.schemas[schema]}"
            env = {
                **base_env,
                "CDS_ENV": "production",
                "CDS_AUTH": auth,
                "CDS_TRUSTED_ISSUERS": str(OUT / "issuers.json"),
                "CDS_PUBLIC_BASE_URL": self.audience,
                "CDS_PATIENT_HASH_KEY": uuid.uuid4().hex,
                "CDS_DATABASE_URL": f"{database}&application_name=bench-{name}",
                "CDS_FHIR_SERVER_ALLOWLIST": f"http://{HOST}",
            }
            serve = [cds, "serve", "--host", HOST, "--port", str(port), "--workers", str(WORKERS)]
            self.servers[name] = Server(name, port, [*serve, "--threads", str(THREADS)], env)
        for server in self.servers.values():
            server.wait_healthy()
        service, off = self.servers["service"], self.servers["service-off"]
        status, data = http(service.base + "/cds-services", token=self.token("/cds-services"))
        if status != 200:
            raise SystemExit(f"discovery answered {status}: {data[:300]!r}")
        order = next(s for s in json.loads(data)["services"] if s["id"] == scenarios.ORDER_SERVICE)
        requests = {"a": scenarios.request_a(), "d": scenarios.request_d(order)}
        ids = {"a": scenarios.PATIENT_SERVICE, "d": scenarios.ORDER_SERVICE}
        self.paths = {key: f"/cds-services/{service_id}" for key, service_id in ids.items()}
        answers, checks = OUT / "answers", {}
        answers.mkdir(exist_ok=True)
        for key, request in requests.items():
            path, body = self.paths[key], json.dumps(request).encode()
            (OUT / f"request-{key}.json").write_bytes(body)
            token = self.token(path)
            status, answer = http(service.base + path, body, token)
            if status != 200:
                raise SystemExit(f"({key}) answered {status}: {answer[:500]!r}")
            (answers / f"{ids[key]}.json").write_bytes(answer)  # the floors' canned body
            checks[key] = {
                "cards": len(json.loads(answer)["cards"]),
                "answer_bytes": len(answer),
                "request_bytes": len(body),
                "replayed_token": http(service.base + path, body, token)[0],
                "no_token": http(service.base + path, body)[0],
                "auth_off": http(off.base + path, body)[0],
                "resources": sum(
                    len(scenarios.resources_of(v)) for v in request["prefetch"].values()
                ),
            }
        floor_args = [
            "--workers",
            str(WORKERS),
            "--threads",
            str(THREADS),
            "--answers",
            str(answers),
            "--issuers",
            str(OUT / "issuers.json"),
            "--audience",
            self.audience,
            "--database",
            f"{DATABASE}?options=-csearch_path%3D{self.schemas['floor']}",
        ]
        for name, port in (("framework", PORT_BASE + 2), ("production", PORT_BASE + 3)):
            argv = [sys.executable, str(BENCH / "floors.py"), name, "--port", str(port)]
            self.servers[name] = Server(name, port, [*argv, *floor_args], base_env)
        for name in ("framework", "production"):
            self.servers[name].wait_healthy()
        production, path = self.servers["production"], self.paths["a"]
        body, token = (OUT / "request-a.json").read_bytes(), self.token(path)
        tokens = (token, token, self.token(path, "ES384"), None)  # new, replayed, new, none
        statuses = [http(production.base + path, body, t)[0] for t in tokens]
        return {"checks": checks, "production_floor_statuses": statuses}

    def group(self, key: str, alg: str | None, names: list[str]) -> dict[str, Any]:
        """Warm-up, then rounds in which the servers take turns; tokens signed between runs."""
        print(f"[bench] ({key}) {alg or 'auth off'}: {', '.join(names)}", file=sys.stderr)
        path = self.paths[key]
        tokens = OUT / f"tokens-{key}-{alg}.txt" if alg else None
        signed: list[str] = []
        next_token = dict.fromkeys(names, 1)  # the first token line each server has not seen

        def top_up(count: int) -> None:  # as many tokens as the runs will send, while none runs
            if tokens and alg and count > 0:
                signed.extend(self.sign_many(alg, path, count))
                tokens.write_text("\n".join(signed) + "\n")

        def turn(name: str, seconds: int) -> Run:
            run = self.wrk(self.servers[name], key, tokens, next_token[name], seconds)
            next_token[name] += run["used"]
            return run

        top_up(int(self.args.warmup * 1500) + 200)
        warm = {name: turn(name, self.args.warmup) for name in names}
        if alg:  # the verifying servers: service and production floor
            rate = max(warm["service"]["rps"], warm["production"]["rps"])
            used = max(next_token["service"], next_token["production"])
            sent = rate * 1.5 * self.args.rounds * self.args.duration
            top_up(used + int(sent) + 500 - len(signed))
        runs: dict[str, list[Run]] = {name: [] for name in names}
        for _ in range(self.args.rounds):
            for name in names:
                runs[name].append(turn(name, self.args.duration))
        return {"scenario": key, "alg": alg, "runs": runs}

    def cpu(self, server: Server) -> tuple[dict[int, float], dict[int, float]]:
        """CPU so far of the server's processes and of its PostgreSQL backends (application_name)."""
        query = sa.text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
        with self.admin.connect() as connection:
            pids = connection.execute(query, {"name": f"bench-{server.name}"}).scalars()
            backends = cpu_of(list(pids))
        return cpu_of([server.proc.pid, *server.workers()]), backends

    def wrk(self, server: Server, key: str, tokens: Path | None, first: int, seconds: int) -> Run:
        """One wrk run whose connections sit evenly on the workers (restarted until they do)."""

        def start(line: int) -> subprocess.Popen[str]:
            body, url = OUT / f"request-{key}.json", server.base + self.paths[key]
            argv = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "10s", "-s"]
            argv += [str(BENCH / "post.lua"), url, "--", str(body), str(tokens or "-"), str(line)]
            argv += [str(HOLD_MS), str(CONNECTIONS), str(VARIANTS)]
            return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def result(proc: subprocess.Popen[str]) -> Run:
            out, err = proc.communicate(timeout=seconds + 60)
            if "BENCH_JSON " not in out:
                raise SystemExit(f"wrk failed on {server.name}: {err or out}")
            return json.loads(out.split("BENCH_JSON ", 1)[1].splitlines()[0])

        used, workers = 0, server.workers()
        for attempt in range(1, EVEN_ATTEMPTS + 1):
            before, proc = self.cpu(server), start(first + used)
            deadline = time.monotonic() + 10  # wrk reads its files, then opens every connection
            spread = server.spread(workers)
            while sum(spread) < CONNECTIONS and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.01)
                spread = server.spread(workers)
            # Even: every worker holds as many connections. The spread is read while the
            # connections hold their first request, so choosing a run never looks at its speed.
            even = len(set(spread)) == 1 and len(spread) == WORKERS and sum(spread) == CONNECTIONS
            if even or attempt == EVEN_ATTEMPTS:
                break
            proc.send_signal(signal.SIGINT)  # wrk stops and still reports the tokens it sent
            used += result(proc)["used"]
        run, after = result(proc), self.cpu(server)
        run.update(cpu_s=spent(before[0], after[0]), db_cpu_s=spent(before[1], after[1]))
        run["used"] += used
        busy_s = run["duration_us"] / 1e6 - HOLD_MS / 1000
        run.update(rps=run["requests"] / busy_s, spread=spread, attempts=attempt)
        return run

    def close(self) -> None:
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.terminate()  # a signing task still running when interrupted
        self.pool.shutdown(wait=False, cancel_futures=True)
        for server in self.servers.values():
            server.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per measured round")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per server")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server")
    p.add_argument("--quick", action="store_true", help="a ~1 minute smoke run, into bench/out/")
    args = p.parse_args()
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install -y wrk")
    OUT.mkdir(exist_ok=True)
    for port in range(PORT_BASE, PORT_BASE + 4):
        with socket.socket() as probe:
            if probe.connect_ex((HOST, port)) == 0:
                sys.exit(f"port {port} is busy: stop what listens there, or set BENCH_PORT_BASE")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("interrupted"))
    admin, tag, started = sa.create_engine(DATABASE), uuid.uuid4().hex[:8], time.monotonic()
    schemas = {name: f"bench_{tag}_{name}" for name in ("service", "off", "floor")}
    with admin.begin() as connection:
        for schema in schemas.values():
            connection.execute(sa.text(f"CREATE SCHEMA {schema}"))
        pg_version = connection.execute(sa.text("SHOW server_version")).scalar()
    bench = Bench(args, admin, schemas)
    try:
        result = bench.start()  # the checks before the runs
        result["groups"] = [bench.group(key, alg, names) for key, alg, names in GROUPS]
        result["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        result.update(machine=machine(), minutes=(time.monotonic() - started) / 60)
    finally:
        bench.close()
        with admin.begin() as connection:
            for schema in schemas.values():
                connection.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    result.update(postgresql=pg_version, argv=sys.argv[1:])
    result["summary"] = [
        {"scenario": g["scenario"], "alg": g["alg"], "server": name, **summarize(runs)}
        for g in result["groups"]
        for name, runs in g["runs"].items()
    ]
    target = OUT if args.quick else BENCH
    (target / "results.json").write_text(json.dumps(result) + "\n")  # one line: a small file
    (target / "results.md").write_text(report(result, args))
    plot(result, target / "latency.png")
    if not args.quick:  # deploy/capacity.md from the results.json just written
        subprocess.run([sys.executable, str(ROOT / "deploy" / "capacity.py")], check=True)
    print(f"[bench] done in {result['minutes']:.1f} min: {target / 'results.md'}", file=sys.stderr)
    return 0


def machine() -> dict[str, Any]:
    def run(*argv: str) -> str:
        with contextlib.suppress(OSError):
            return subprocess.run(argv, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        return "?"

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    changed = run("git", "status", "--porcelain", "--untracked-files=no")
    dirty = " + uncommitted changes" if changed else ""
    return {
        "cpu": next(models, platform.machine()),
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
        "commit": run("git", "rev-parse", "--short", "HEAD") + dirty,
        "python": platform.python_version(),
        "wrk": run("wrk", "--version").split(" [")[0],
    }


def summarize(runs: list[Run]) -> dict[str, Any]:
    requests = sum(r["requests"] for r in runs)
    return {
        "rps": requests / sum(r["requests"] / r["rps"] for r in runs),
        "p50": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99": statistics.median(r["p99_us"] for r in runs) / 1000,
        "requests": requests,
        "bad": sum(r["not_200"] + r["socket_errors"] for r in runs),
        "statuses": " ".join(r["statuses"] for r in runs).strip(),
        "spreads": sorted({"/".join(map(str, r["spread"])) for r in runs}),
        "starts": sum(r["attempts"] for r in runs),
        "cpu_ms": 1000 * sum(r["cpu_s"] for r in runs) / requests,
        "db_cpu_ms": 1000 * sum(r["db_cpu_s"] for r in runs) / requests,
    }


def label(group: dict[str, Any]) -> str:
    return f"({group['scenario']}) {group['alg'] or 'auth off'}"


def rows_of(result: dict[str, Any], group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    mine = (group["scenario"], group["alg"])
    return {r["server"]: r for r in result["summary"] if (r["scenario"], r["alg"]) == mine}


def report(result: dict[str, Any], args: argparse.Namespace) -> str:
    m, targets, table = result["machine"], [], []
    for group in result["groups"]:
        rows = rows_of(result, group)
        if group["alg"] == "RS384":
            ratio = rows["service"]["p50"] / rows["production"]["p50"]
            verdict = "met" if ratio <= TARGET else "missed"
            targets.append(
                f"- {label(group)}: service p50 / production floor p50 = **{ratio:.2f}×** "
                f"(target ≤ {TARGET}×: {verdict})."
            )
        for name, row in rows.items():
            cells = []
            for floor in ("production", "framework"):
                if floor in rows and name not in (floor, "framework"):
                    # the ratio of the medians, then each round's (the runs were neighbours)
                    pairs = zip(group["runs"][name], group["runs"][floor], strict=True)
                    each = ", ".join(f"{a['p50_us'] / b['p50_us']:.2f}" for a, b in pairs)
                    cells.append(f"**{row['p50'] / rows[floor]['p50']:.2f}×** ({each})")
                else:
                    cells.append("")
            table.append(
                f"| {label(group)} | {name} | {row['rps']:,.0f} | {row['p50']:.2f} | "
                f"{row['p99']:.2f} | {cells[0]} | {cells[1]} | {row['bad']} / "
                f"{row['requests']:,} {row['statuses']} | {', '.join(row['spreads'])} "
                f"({row['starts']}) | {row['cpu_ms']:.2f} ({row['db_cpu_ms']:.2f}) |"
            )
    bad = sum(row["bad"] for row in result["summary"])
    checks = [
        f"- ({key}): {c['resources']} resources, request {c['request_bytes']:,} B, answer "
        f"{c['answer_bytes']:,} B with {c['cards']} cards; the service answered "
        f"{c['replayed_token']} to a replayed token, {c['no_token']} to no token; auth-off "
        f"instance {c['auth_off']}."
        for key, c in result["checks"].items()
    ]
    s = result["production_floor_statuses"]
    nl = "\n"
    return f"""# `make bench` results

{result["date"]}, commit {m["commit"]}; {m["cpu"]}, {m["cpus"]} CPUs (load average {m["load"]:.1f} at
the end); Python {m["python"]}, {m["wrk"]}, PostgreSQL {result["postgresql"]}. Command:
`python bench/run.py {" ".join(result["argv"])}` ({result["minutes"]:.1f} min).

Every server: gunicorn gthread, {WORKERS} workers × {THREADS} threads. wrk: one thread, {CONNECTIONS}
connections, {args.rounds} alternating rounds of {args.duration:g} s per server after {args.warmup:g} s
of warm-up; p50/p99 = median of the rounds', req/s over all rounds. Every answer's status is checked.

## Targets

{nl.join(targets)}
- Answers other than 200, and socket errors, in all runs: **{bad}** (target 0: \
{"met" if bad == 0 else "missed"}).

## Table

| scenario | server | req/s | p50 ms | p99 ms | p50 ÷ production floor (rounds) | \
p50 ÷ framework floor (rounds) | not 200 / requests | connections per worker (wrk starts) | \
CPU ms per call: server (its PostgreSQL backends) |
|---|---|---|---|---|---|---|---|---|---|
{nl.join(table)}

Checks before the runs:

{nl.join(checks)}
- production floor: new RS384 token {s[0]}, replayed {s[1]}, new ES384 {s[2]}, no token {s[3]}.
"""


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    colors = {
        "framework": "#bbbbbb",
        "production": "#6a9fd4",
        "service": "#d4622a",
        "service-off": "#e8a36f",
    }
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x, ticks = 0.0, []
    for group in result["groups"]:
        start = x
        for name, row in rows_of(result, group).items():
            legend = name if name not in ax.get_legend_handles_labels()[1] else None
            ax.bar(x, row["p50"], 0.8, color=colors[name], label=legend)
            ax.plot([x, x], [row["p50"], row["p99"]], color="black", linewidth=1)
            x += 1
        ticks.append(((start + x - 1) / 2, label(group)))
        x += 0.8
    ax.set_xticks([t for t, _ in ticks], [name for _, name in ticks])
    ax.set_ylabel("latency, ms (bar p50, line to p99)")
    ax.set_title(f"make bench, {result['date']}: service vs floors at {CONNECTIONS} connections")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=110)
    # 8 colours draw this plot alike in a fifth of the bytes
    Image.open(png).convert("RGB").quantize(8).save(path, optimize=True)


if __name__ == "__main__":
    sys.exit(main())
