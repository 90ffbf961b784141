"""`cds-service serve` as operators run it: gunicorn, production settings, HTTPS, JWT required."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import func, select

from cds_service.store import engine_for
from cds_service.store.schema import issued_cards
from tests.conftest import FIXTURES, ROOT, SERVICE_ID, release


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Served:
    """A running `cds-service serve`: its base URL, an HTTP client for it, and its output."""

    def __init__(self, process: subprocess.Popen[bytes], base: str, log: Path, client: Any):
        self.process, self.base, self.log, self.client = process, base, log, client

    def stop(self) -> str:
        """SIGTERM, as an orchestrator stops a container; the output once it has exited."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)
        return self.log.read_text(errors="replace")


@contextmanager
def serve(tmp_path: Path, *args: str, **env: str) -> Iterator[Served]:
    port = free_port()
    scheme = "https" if "--certfile" in args else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    environ = {
        **os.environ,
        "CDS_ENV": "production",
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_TRUSTED_ISSUERS": str(ROOT / "deploy" / "trusted-issuers.example.json"),
        "CDS_PATIENT_HASH_KEY": "test-serve-key",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        **env,
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "cds_service.cli", "serve", "--host", "127.0.0.1"]
        process = subprocess.Popen(
            [*command, "--port", str(port), *args], env=environ, stdout=log, stderr=log, cwd=ROOT
        )
    verify: Any = True
    if scheme == "https":
        verify = ssl.create_default_context(cafile=args[args.index("--certfile") + 1])
    try:
        with httpx.Client(verify=verify, timeout=10) as client:
            for _ in range(300):
                try:
                    if client.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
            else:
                pytest.fail(log_path.read_text())
            yield Served(process, base, log_path, client)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serve_over_https_with_jwt_required(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    args = ("--workers", "1", "--certfile", str(cert), "--keyfile", str(key))
    with serve(tmp_path, *args, CDS_AUTH="jwt") as served:
        base, client = served.base, served.client
        assert client.get(f"{base}/healthz").json() == {"status": "ok"}
        ready = client.get(f"{base}/readyz").json()
        assert ready["status"] == "ready" and ready["auth"] == "jwt" and "warning" not in ready
        denied = client.get(f"{base}/cds-services")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        assert denied.json()["resourceType"] == "OperationOutcome"
        with pytest.raises(
            (httpx.RemoteProtocolError, httpx.ConnectError, httpx.ReadError)
        ):  # TLS only
            httpx.get(f"{base.replace('https', 'http')}/healthz", timeout=2)
        served.stop()


def test_gunicorns_own_log_lines_are_written(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "2", CDS_AUTH="off") as served:
        output = served.stop()
    assert "Listening at: http://127.0.0.1:" in output, output
    assert output.count("Booting worker with pid") == 2, output
    assert "Logging error" not in output and "Traceback" not in output, output


def test_no_issued_card_record_is_lost_when_workers_stop(tmp_path: Path) -> None:
    # Records are written by a thread in batches; SIGTERM right after the calls must not drop the
    # ones still queued (gunicorn's worker_exit hook stores them).
    scenario = json.loads((FIXTURES / "scenarios" / "42-baclofen-egfr-59.json").read_text())
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    returned = 0
    with serve(tmp_path, "--workers", "2", "--threads", "2", CDS_AUTH="off") as served:
        for n in range(40):
            body = {**scenario["request"], "context": {**scenario["request"]["context"]}}
            body["context"]["patientId"] = f"{body['context']['patientId']}-{n}"
            body["prefetch"] = json.loads(
                json.dumps(scenario["request"]["prefetch"]).replace(
                    scenario["request"]["context"]["patientId"], body["context"]["patientId"]
                )
            )
            answer = served.client.post(f"{served.base}/cds-services/{SERVICE_ID}", json=body)
            assert answer.status_code == 200, answer.text
            returned += len(answer.json()["cards"])
        served.stop()
    assert returned > 40
    with engine_for(url).connect() as connection:
        stored = connection.execute(select(func.count()).select_from(issued_cards)).scalar_one()
    release(url)
    assert stored == returned


def test_a_chunked_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with serve(tmp_path, "--workers", "1", CDS_AUTH="off", CDS_MAX_BODY_BYTES="2048") as served:

        def chunks() -> Iterator[bytes]:
            yield b'{"hook": "patient-view", "padding": "'
            for _ in range(8):
                yield b"x" * 1024
            yield b'"}'

        answer = served.client.post(
            f"{served.base}/cds-services/{SERVICE_ID}",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert answer.status_code == 413, answer.text
        assert answer.json()["issue"][0]["code"] == "too-long"
        served.stop()


def test_no_control_socket_and_the_metrics_directory_emptied_at_start(tmp_path: Path) -> None:
    runtime_dir, metrics_dir = tmp_path / "run", tmp_path / "prometheus"
    runtime_dir.mkdir()
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_999999.db"  # left by an earlier run: would add to the counts
    stale.write_bytes(b"old")
    env = {"XDG_RUNTIME_DIR": str(runtime_dir), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
    with serve(tmp_path, "--workers", "2", CDS_AUTH="off", **env) as served:
        assert not stale.exists()
        for _ in range(6):
            assert served.client.get(f"{served.base}/cds-services").status_code == 200
        metrics = served.client.get(f"{served.base}/metrics").text
        output = served.stop()
    assert 'cds_requests_total{endpoint="/cds-services",service="",status="200"} 6.0' in metrics
    assert not (runtime_dir / "gunicorn.ctl").exists()
    assert "control socket" not in output.lower(), output


@pytest.mark.parametrize("value", ["", "does-not-exist"])
def test_an_unusable_metrics_directory_stops_the_start(tmp_path: Path, value: str) -> None:
    environ = {**os.environ, "CDS_AUTH": "off", "CDS_ENV": "production"}
    environ["CDS_PATIENT_HASH_KEY"] = "k"
    environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / value) if value else ""
    done = subprocess.run(
        [sys.executable, "-m", "cds_service.cli", "serve", "--port", str(free_port())],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 1
    assert "PROMETHEUS_MULTIPROC_DIR" in done.stderr and "writable directory" in done.stderr
