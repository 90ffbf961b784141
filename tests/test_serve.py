"""`cds-service serve` as operators run it (gunicorn, production settings, HTTPS, JWT required), and
the development server `cds-service run` (`make run`) where it must behave the same."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
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

from cds_service.cli import GRACEFUL_TIMEOUT_SECONDS, _in_master_only
from cds_service.store import engine_for
from cds_service.store.schema import issued_cards
from tests.conftest import FIXTURES, ROOT, SERVICE_ID, release

# One pytest-xdist worker runs this module's tests and the other real-server modules' (test_nginx,
# test_replicas, test_serve) one after another: side by side they would skew each other's timings.
pytestmark = pytest.mark.xdist_group("servers")


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
        # Longer than gunicorn's graceful timeout, so a slow stop shows its output.
        try:
            self.process.wait(timeout=GRACEFUL_TIMEOUT_SECONDS + 15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after SIGTERM:\n{self.log.read_text(errors='replace')}")
        return self.log.read_text(errors="replace")


def serve_environ(tmp_path: Path, **env: str) -> dict[str, str]:
    """The environment `serve` runs with in these tests: production settings, SQLite in tmp_path."""
    return {
        **os.environ,
        "CDS_ENV": "production",
        "CDS_TRUSTED_ISSUERS": str(ROOT / "deploy" / "trusted-issuers.example.json"),
        "CDS_PATIENT_HASH_KEY": "test-serve-key",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        **env,
    }


@contextmanager
def serve(tmp_path: Path, *args: str, command: str = "serve", **env: str) -> Iterator[Served]:
    """`cds-service serve` (or `run`, the development server) with `args`, on a free port."""
    port = free_port()
    scheme = "https" if "--certfile" in args else "http"
    base = f"{scheme}://127.0.0.1:{port}"
    environ = serve_environ(tmp_path, CDS_PUBLIC_BASE_URL=base, **env)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        command = [sys.executable, "-m", "cds_service.cli", command, "--host", "127.0.0.1"]
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


def test_a_worker_signalled_before_it_has_its_own_handlers_exits_at_once() -> None:
    # From fork until it installs its own handlers, a worker runs the master's (issue 17 attack:
    # a SIGTERM, SIGINT or SIGQUIT then was queued for a loop the worker never runs, and the stop
    # waited the whole graceful timeout). The master's handler still runs in the master.
    handled: list[int] = []
    previous = signal.signal(
        signal.SIGTERM, _in_master_only(os.getpid(), lambda n, _: handled.append(n))
    )
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert handled == [signal.SIGTERM]
        child = os.fork()
        if child == 0:  # a worker that has not booted yet
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(3)  # the signal was ignored
        _, status = os.waitpid(child, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to run the server as PID 1, as the image does",
)
def test_sigterm_while_starting_as_pid_1_stops_the_start(tmp_path: Path) -> None:
    # The image runs `cds-service serve` as PID 1, where the kernel drops a signal that has no
    # handler: a pod stopped while it was starting ran on until SIGKILL.
    port = free_port()
    environ = serve_environ(tmp_path, CDS_AUTH="off")
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # unset: serve warns, and the test waits for it
    log_path = tmp_path / "serve.log"
    # The entry point script, not the interpreter: the venv's interpreter links outside the checkout.
    serve_command = [str(Path(sys.executable).parent / "cds-service"), "serve", "--port", str(port)]
    with log_path.open("wb") as log:
        namespace = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--", *serve_command],
            env=environ,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
    try:
        # serve's first line (the metrics warning) comes after it takes SIGTERM, before the app
        # is built and gunicorn listens: a SIGTERM then must end the start.
        for _ in range(3000):
            if "PROMETHEUS_MULTIPROC_DIR" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.01)
        assert "Listening at" not in log_path.read_text(errors="replace")
        os.kill(worker_pids(namespace.pid)[0], signal.SIGTERM)
        namespace.wait(timeout=20)
        output = log_path.read_text(errors="replace")
        assert namespace.returncode == 128 + signal.SIGTERM, output
        assert "Listening at" not in output, output
    finally:
        if namespace.poll() is None:
            # Killing the namespace's PID 1 ends everything in it; unshare alone would orphan it.
            for pid in worker_pids(namespace.pid):
                os.kill(pid, signal.SIGKILL)
            namespace.wait(timeout=10)


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


class SlowFhirServer:
    """A FHIR server that answers every search with an empty Bundle after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                outer.requests += 1
                time.sleep(delay)
                body = json.dumps({"resourceType": "Bundle", "type": "searchset"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/fhir+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fhir"

    def __enter__(self) -> SlowFhirServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def slow_fhir_call(timeout_seconds: int) -> tuple[dict[str, Any], dict[str, str]]:
    """A hook call whose one FHIR fetch (procedures) goes to the fhirServer the caller sets, and
    the serve settings that allow it with `timeout_seconds` to answer."""
    scenario = json.loads(
        (FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json").read_text()
    )
    request = scenario["request"]
    del request["prefetch"]["procedures"]  # fetched from the slow server: in flight at the signal
    request["prefetch"]["medication-statements"] = None  # none on file: the one fetch is procedures
    settings = {
        "CDS_AUTH": "off",
        "CDS_FHIR_SERVER_ALLOWLIST": "http://127.0.0.1",
        "CDS_FHIR_TIMEOUT_SECONDS": str(timeout_seconds),
        "CDS_FHIR_DEADLINE_SECONDS": str(timeout_seconds),
    }
    return request, settings


def stored_card_uuids(url: str) -> set[str]:
    with engine_for(url).connect() as connection:
        stored = set(connection.execute(select(issued_cards.c.card_uuid)).scalars())
    release(url)
    return stored


@pytest.mark.parametrize("target", ["master", "worker"])
def test_a_quick_stop_mid_call_records_every_card_it_returned(tmp_path: Path, target: str) -> None:
    # SIGINT (and SIGQUIT) stop a worker at once, while its request threads still run: every card
    # such a call still answers with 200 must be recorded (else feedback on it is unattributed and
    # an override never snoozes it), and no call may fail with a 5xx.
    request, settings = slow_fhir_call(timeout_seconds=10)
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    answers: list[tuple[int, list[str]]] = []
    with SlowFhirServer(delay=2.0) as fhir:
        request["fhirServer"] = fhir.url
        # One worker with 4 threads and 8 calls: 4 wait on the FHIR server at the signal, 4 wait
        # for a thread and run while the worker is already exiting.
        with serve(tmp_path, "--workers", "1", "--threads", "4", **settings) as served:

            def call() -> None:
                try:
                    answer = httpx.post(
                        f"{served.base}/cds-services/{SERVICE_ID}", json=request, timeout=30
                    )
                except httpx.HTTPError:
                    return  # the connection was closed without an answer: nothing was shown
                cards = answer.json()["cards"] if answer.status_code == 200 else []
                answers.append((answer.status_code, [card["uuid"] for card in cards]))

            callers = [threading.Thread(target=call) for _ in range(8)]
            for caller in callers:
                caller.start()
            for _ in range(150):
                if fhir.requests == 4:
                    break
                time.sleep(0.01)
            time.sleep(0.2)
            assert fhir.requests == 4, served.log.read_text()
            if target == "master":
                served.process.send_signal(signal.SIGINT)
            else:
                for worker in worker_pids(served.process.pid):
                    os.kill(worker, signal.SIGINT)
            for caller in callers:
                caller.join()
            output = served.stop() if target == "worker" else wait_for_exit(served)
    returned = {uuid for status, uuids in answers if status == 200 for uuid in uuids}
    assert [status for status, _ in answers] == [200] * 8, output  # no 5xx, none cut off
    assert len(returned) >= 8, output
    assert returned - stored_card_uuids(url) == set(), output


def test_a_stopping_worker_leaves_itself_time_to_store_its_records(tmp_path: Path) -> None:
    # The master SIGKILLs a worker still running at the graceful timeout. A worker that waited for
    # its calls that long had no time left for worker_exit, which stores the queued card records
    # (issue 17 attack: a call answered just before the kill lost its record, unlogged): it stops
    # waiting 15 s earlier, with a call still running.
    request, settings = slow_fhir_call(timeout_seconds=60)  # still running at 15 s
    with SlowFhirServer(delay=60) as fhir:
        request["fhirServer"] = fhir.url
        with serve(tmp_path, "--workers", "1", **settings) as served:

            def call() -> None:
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{served.base}/cds-services/{SERVICE_ID}", json=request, timeout=70)

            threading.Thread(target=call, daemon=True).start()
            for _ in range(300):
                if fhir.requests:
                    break
                time.sleep(0.01)
            stopped = time.monotonic()
            served.process.send_signal(signal.SIGTERM)
            while "Worker exiting" not in served.log.read_text(errors="replace"):
                assert time.monotonic() - stopped < GRACEFUL_TIMEOUT_SECONDS, served.log.read_text()
                time.sleep(0.1)
            waited = time.monotonic() - stopped
    assert GRACEFUL_TIMEOUT_SECONDS - 17 < waited < GRACEFUL_TIMEOUT_SECONDS - 12


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def wait_for_exit(served: Served) -> str:
    served.process.wait(timeout=40)
    return served.log.read_text(errors="replace")


def test_the_development_server_records_every_card_when_stopped(tmp_path: Path) -> None:
    # `make run` stopped with SIGTERM right after answering: the cards still queued are stored.
    scenario = json.loads(
        (FIXTURES / "scenarios" / "14-calcium-8-4-below-default.json").read_text()
    )
    url = f"sqlite:///{tmp_path / 'serve.sqlite3'}"
    returned: set[str] = set()
    with serve(tmp_path, command="run", CDS_ENV="development", CDS_DATABASE_URL=url) as served:
        for _ in range(5):
            answer = served.client.post(
                f"{served.base}/cds-services/{SERVICE_ID}", json=scenario["request"]
            )
            assert answer.status_code == 200, answer.text
            returned |= {card["uuid"] for card in answer.json()["cards"]}
        output = served.stop()
    assert len(returned) >= 5
    assert returned - stored_card_uuids(url) == set(), output


def raw_exchange(base: str, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send `request` as is; the status and JSON body of the answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received or len(received.split(b"\r\n\r\n", 1)[1]) < length(
            received
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, body = received.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body[: length(received)])


def length(received: bytes) -> int:
    for line in received.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


@pytest.mark.parametrize(
    "body",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX\r\n0\r\n\r\n"],
    ids=["chunk size not hex", "chunk without its terminator"],
)
def test_a_malformed_chunked_body_is_a_400(tmp_path: Path, body: bytes) -> None:
    with serve(tmp_path, "--workers", "1", CDS_AUTH="off") as served:
        head = (
            f"POST /cds-services/{SERVICE_ID} HTTP/1.1\r\nHost: x\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        status, outcome = raw_exchange(served.base, head.encode() + body)
        output = served.stop()
    assert status == 400, output
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["diagnostics"] == "the request body could not be read"
    assert "Traceback" not in output and "unhandled error" not in output, output


LEAKED_TOKEN = "eyJhbGciOiJFUzM4NCJ9.eyJqdGkiOiJMRUFLIn0.c2lnbmF0dXJl"
LEAKED_PATIENT = "pt-LEAK-4711"
# Requests neither server can parse, each quoting a patient id or a bearer token where the server's
# complaint about it would quote it back.
MALFORMED = [
    f"GET /cds-services/{LEAKED_PATIENT} ?patient={LEAKED_PATIENT} HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET /cds-services?patient={LEAKED_PATIENT} x HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET /cds-services/{LEAKED_PATIENT}\r\nHost: x\r\n\r\n",
    f"POST /cds-services/x HTTP/1.1\r\nHost: x\r\nBearer {LEAKED_TOKEN} {LEAKED_PATIENT}\r\n\r\n",
]


def send_malformed(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    for request in MALFORMED:
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request.encode())
            assert sock.recv(1024)  # answered (a 4xx; werkzeug answers HTTP/0.9 without a status)


@pytest.mark.parametrize("command", ["serve", "run"])
def test_malformed_requests_are_logged_without_what_they_carried(
    tmp_path: Path, command: str
) -> None:
    env = {"CDS_AUTH": "off"} if command == "serve" else {"CDS_ENV": "development"}
    with serve(tmp_path, command=command, **env) as served:
        send_malformed(served.base)
        output = served.stop()
    assert LEAKED_TOKEN not in output and "eyJ" not in output, output
    assert LEAKED_PATIENT not in output, output
    # The operator still sees that malformed requests arrived, and of what kind.
    if command == "serve":
        assert "Invalid request from ip=127.0.0.1: Invalid HTTP Header: [redacted]" in output
        assert "Invalid request from ip=127.0.0.1: Invalid HTTP request line: [redacted]" in output
        assert output.count("Invalid request from ip=127.0.0.1: Invalid HTTP Version") == 2
    else:
        assert output.count("code 400, message Bad request syntax ([redacted])") == 2, output
