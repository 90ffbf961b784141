"""CPU per hook call in the production shape, for deploy/README.md's capacity table.

`cds-service serve` (2 workers x 4 threads) with RS384 client JWTs (a fresh token, so a fresh jti
INSERT, per call) on the local PostgreSQL (a private schema), loaded by wrk at 8 connections with
the (a) bench request (patient-view, full prefetch, ~50 resources). Reports calls/s and latency as
wrk saw them, and the CPU seconds the service's processes and PostgreSQL's backends spent per call
(from /proc): calls per CPU-second holds on a machine shared with other work, where calls/s does
not. Run: .venv/bin/python deploy/capacity.py [seconds]
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get(
    "CDS_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BASE = "https://cds.capacity.example"
PATH = "/cds-services/leg-cramps-after-stroke"
ISSUER = "https://ehr.capacity.example"
CALLS_PER_SECOND_CEILING = 1500  # tokens made: seconds x this (each call needs a new jti)
TICKS = os.sysconf("SC_CLK_TCK")
APPLICATION = "cds-capacity"
WARM_UP_TOKENS = 3 * CALLS_PER_SECOND_CEILING


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def postgres_backends(admin: Engine) -> list[int]:
    """The PostgreSQL server processes serving this run's connections (not other users')."""
    query = text("SELECT pid FROM pg_stat_activity WHERE application_name = :name")
    with admin.connect() as connection:
        return [int(pid) for (pid,) in connection.execute(query, {"name": APPLICATION})]


def main(seconds: int) -> None:
    scenario = ROOT / "fixtures" / "scenarios" / "42-baclofen-egfr-59.json"
    body = json.loads(scenario.read_text())["request"]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS384"}
    work = Path(tempfile.mkdtemp(prefix="cds-capacity-"))
    issuers = work / "issuers.json"
    issuers.write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": {"keys": [public]}}]}))
    count = WARM_UP_TOKENS + seconds * CALLS_PER_SECOND_CEILING
    now = int(time.time())
    tokens = [
        jwt.encode(
            {
                "iss": ISSUER,
                "aud": BASE + PATH,
                "exp": now + 3600,
                "iat": now,
                "jti": uuid.uuid4().hex,
            },
            key,
            algorithm="RS384",
            headers={"kid": "k1", "typ": "JWT"},
        )
        for _ in range(count)
    ]
    (work / "tokens.lua").write_text("return {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
    (work / "body.json").write_text(json.dumps(body))
    (work / "post.lua").write_text(
        f"""
local tokens = dofile("{work / "tokens.lua"}")
local f = io.open("{work / "body.json"}"); local body = f:read("*a"); f:close()
local i = 0
init = function(args) i = tonumber(args[1]) end  -- the warm-up and the run use different tokens
request = function()
  i = i + 1
  return wrk.format("POST", "{PATH}", {{["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(i - 1) % #tokens + 1]}}, body)
end
"""
    )
    schema = f"cds_capacity_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        **os.environ,
        "CDS_ENV": "production",
        "CDS_AUTH": "jwt",
        "CDS_PUBLIC_BASE_URL": BASE,
        "CDS_TRUSTED_ISSUERS": str(issuers),
        "CDS_PATIENT_HASH_KEY": "capacity",
        "CDS_DATABASE_URL": (
            f"{POSTGRES}?options=-csearch_path%3D{schema}&application_name={APPLICATION}"
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(work),
    }
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=log,
    )
    try:
        for _ in range(600):
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}{PATH}"
        wrk = ["wrk", "-t1", "-c8", "--latency", "-s", str(work / "post.lua"), url]
        subprocess.run([*wrk, "-d3s", "--", "0"], capture_output=True, check=True)  # warm-up
        ours = [server.pid, *children(server.pid)]
        backends = postgres_backends(admin)
        before = cpu_seconds(ours), cpu_seconds(backends), time.monotonic()
        measured = [*wrk, f"-d{seconds}s", "--", str(WARM_UP_TOKENS)]
        out = subprocess.run(measured, capture_output=True, text=True).stdout
        after = cpu_seconds(ours), cpu_seconds(backends), time.monotonic()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if "Non-2xx" in out or "Socket errors" in out:
        sys.exit(f"calls failed, so this run measured nothing useful:\n{out}")
    percentiles = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    service, database = after[0] - before[0], after[1] - before[1]
    print(out)
    print(
        f"{requests} calls in {after[2] - before[2]:.1f} s: {requests / (after[2] - before[2]):.0f} calls/s, "
        f"p50 {percentiles.get('50')}, p99 {percentiles.get('99')}; loadavg {os.getloadavg()[0]:.1f}\n"
        f"service CPU {service:.1f} s = {service / requests * 1000:.2f} ms per call "
        f"= {requests / service:.0f} calls per CPU-second; PostgreSQL backends {database:.1f} s = "
        f"{database / requests * 1000:.2f} ms per call"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
