"""`cds-service serve` as operators run it: gunicorn, production settings, HTTPS, JWT required."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import ROOT


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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path, float]]:
    cert, key = self_signed(tmp_path)
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    env = {
        **os.environ,
        "CDS_ENV": "production",
        "CDS_PUBLIC_BASE_URL": base,
        "CDS_TRUSTED_ISSUERS": str(ROOT / "deploy" / "trusted-issuers.example.json"),
        "CDS_PATIENT_HASH_KEY": "test-serve-key",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
    }
    env.pop("CDS_AUTH", None)  # production default: jwt
    log = (tmp_path / "serve.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds_service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--certfile",
            str(cert),
            "--keyfile",
            str(key),
        ],
        env=env,
        stdout=log,
        stderr=log,
        cwd=ROOT,
    )
    try:
        cold_start = -1.0
        with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
            for _ in range(300):
                try:
                    if client.get(f"{base}/healthz", timeout=1).status_code == 200:
                        cold_start = time.monotonic() - started
                        break
                except httpx.HTTPError:
                    time.sleep(0.05)
        assert cold_start > 0, (tmp_path / "serve.log").read_text()
        yield base, cert, cold_start
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        log.close()


def test_serve_over_https_with_jwt_required(served: tuple[str, Path, float]) -> None:
    base, cert, _ = served
    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert))) as client:
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
