"""deploy/nginx.conf in front of `cds-service serve`: slow clients wait at nginx, not in gunicorn.

Runs the shipped configuration with only its `# site:` lines replaced (addresses, certificate, the
account, pid and log files) and temp paths in a private prefix, as the test user.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SERVICE_ID
from tests.deploy.conftest import require_tool
from tests.test_serve import free_port, self_signed

# One pytest-xdist worker runs this module's tests and the other real-server modules' (test_nginx,
# test_replicas, test_serve) one after another: side by side they would skew each other's timings.
pytestmark = [pytest.mark.deploy, pytest.mark.xdist_group("servers")]

NGINX_CONF = ROOT / "deploy" / "nginx.conf"
HOOK_PATH = f"/cds-services/{SERVICE_ID}"
REQUEST = json.loads(
    (ROOT / "fixtures" / "scenarios" / "17-calcium-6-9-severe.json").read_text(encoding="utf-8")
)["request"]
# How long nginx keeps a replica out after a failed attempt (deploy/nginx.conf, max_fails=1).
FAIL_TIMEOUT = float(re.findall(r"fail_timeout=(\d+)s", NGINX_CONF.read_text(encoding="utf-8"))[0])
SLOW_CLIENTS = 50  # of each kind: header line by line, body byte by byte
SLOW_INTERVAL = 5.0  # seconds between two pieces a slow client sends
CLIENT_HEADER_TIMEOUT = 10.0  # deploy/nginx.conf
# The bound on a legitimate call's median under attack: twice the median without, plus 50 ms
# (scheduling noise on a shared two-core machine; the attack's own threads run here too).
P50_FACTOR, P50_SLACK = 2.0, 0.05


def site_config(
    shipped: str, prefix: Path, port: int, upstreams: list[int], cert: Path, key: Path
) -> str:
    """The shipped configuration with each `# site:` line replaced; everything else untouched."""
    user = getpass.getuser()
    # Each replica line keeps the shipped parameters (max_fails, fail_timeout).
    found = re.search(r"(?m)^\s*server \S+ ([^;]*);\s*# site:", shipped)
    assert found, "nginx.conf has no `server ...;  # site: replica` line"
    by_directive = {
        # As root nginx would switch its workers to another account; as anyone else it cannot.
        "user": f"user {user};" if os.geteuid() == 0 else "",
        "pid": f"pid {prefix / 'nginx.pid'};",
        "error_log": f"error_log {prefix / 'error.log'} warn;",
        "listen": f"listen 127.0.0.1:{port} ssl;",
        "ssl_certificate": f"ssl_certificate {cert};",
        "ssl_certificate_key": f"ssl_certificate_key {key};",
        "server": "\n".join(f"server 127.0.0.1:{p} {found.group(1)};" for p in upstreams),
    }
    replaced: list[str] = []

    def replace(match: re.Match[str]) -> str:
        directive = match.group(2)
        replaced.append(directive)
        return match.group(1) + by_directive[directive]

    text = re.sub(r"(?m)^(\s*)(\w+)\b.*# site:.*$", replace, shipped)
    assert sorted(replaced) == sorted(by_directive), replaced
    # Debian's nginx keeps request-body temp files under /var/lib/nginx: here, under the prefix.
    temp_paths = "".join(
        f"\n    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return text.replace("http {", "http {" + temp_paths, 1)


def wait_until_answering(
    url: str, process: subprocess.Popen[bytes], log: Path, **kw: object
) -> None:
    for _ in range(400):
        assert process.poll() is None, log.read_text(errors="replace")
        try:
            if httpx.get(url, timeout=1, **kw).status_code == 200:  # type: ignore[arg-type]
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError(f"{url} never answered: {log.read_text(errors='replace')}")


def tls(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[int]:
    """`cds-service serve` (2 workers x 4 threads, as deployed) on a loopback port."""
    port = free_port()
    env = {
        **os.environ,
        "CDS_ENV": "production",
        "CDS_AUTH": "off",  # the attack needs no token; legitimate calls are measured end to end
        "CDS_PATIENT_HASH_KEY": "test-deploy-key",
        "CDS_DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "CDS_WORKERS": "2",
        "CDS_THREADS": "4",
    }
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cds_service.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                f"{port}",
            ],
            env=env,
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        try:
            wait_until_answering(f"http://127.0.0.1:{port}/healthz", process, log_path)
            yield port
        finally:
            stop(process)


@contextmanager
def running_nginx(tmp_path: Path, upstreams: list[int]) -> Iterator[tuple[int, Path, Path]]:
    """deploy/nginx.conf on a free port with TLS in front of `upstreams`: (port, CA file, log)."""
    binary = require_tool("nginx", "apt-get install -y nginx-light")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = self_signed(prefix)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        site_config(NGINX_CONF.read_text(encoding="utf-8"), prefix, port, upstreams, cert, key)
    )
    log_path = prefix / "stderr.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
            stdout=log,
            stderr=log,
        )
        try:
            # 401 or 404 is an answer: discovery goes to whichever upstream is first.
            for _ in range(400):
                assert process.poll() is None, log_path.read_text(errors="replace")
                try:
                    httpx.get(f"https://127.0.0.1:{port}/", timeout=1, verify=tls(cert))
                    break
                except httpx.HTTPError:
                    time.sleep(0.05)
            yield port, cert, prefix / "error.log"
        finally:
            stop(process)


@pytest.fixture
def nginx(tmp_path: Path, service: int) -> Iterator[tuple[int, Path]]:
    """deploy/nginx.conf in front of `service`; yields (port, CA file)."""
    with running_nginx(tmp_path, [service]) as (port, cert, _):
        yield port, cert


@dataclass
class Attack:
    """Slow clients on loopback: each reconnects when the server drops it."""

    port: int
    tls: ssl.SSLContext | None
    stop: threading.Event = field(default_factory=threading.Event)
    header_lifetimes: list[float] = field(default_factory=list)  # connections the server closed
    connected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if self.tls is not None:
            sock = self.tls.wrap_socket(sock, server_hostname="127.0.0.1")
        with self.lock:
            self.connected += 1
        return sock

    def _closed_by_server(self, sock: socket.socket, wait: float) -> bool:
        """Wait up to `wait` seconds; True if the server answered (408, 400) or closed."""
        sock.settimeout(wait)
        try:
            sock.recv(1024)  # an answer (408, 400) or b"" (closed): either way, the server ended it
            return True
        except TimeoutError:
            return False
        except OSError:
            return True

    def slow_header(self) -> None:
        while not self.stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                self.stop.wait(0.5)
                continue
            started = time.monotonic()
            with sock:
                try:
                    sock.sendall(f"POST {HOOK_PATH} HTTP/1.1\r\n".encode())
                    n = 0
                    while not self.stop.is_set():
                        if self._closed_by_server(sock, SLOW_INTERVAL):
                            with self.lock:
                                self.header_lifetimes.append(time.monotonic() - started)
                            break
                        n += 1
                        sock.sendall(f"X-Slow-{n}: a\r\n".encode())
                except OSError:
                    with self.lock:
                        self.header_lifetimes.append(time.monotonic() - started)

    def slow_body(self) -> None:
        head = (
            f"POST {HOOK_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Content-Length: 100000\r\n\r\n{"
        ).encode()
        while not self.stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                self.stop.wait(0.5)
                continue
            with sock:
                try:
                    sock.sendall(head)
                    while not self.stop.is_set():
                        if self._closed_by_server(sock, SLOW_INTERVAL):
                            break
                        sock.sendall(b" ")
                except OSError:
                    pass

    def start(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=target, daemon=True)
            for target in [self.slow_header] * SLOW_CLIENTS + [self.slow_body] * SLOW_CLIENTS
        ]
        for thread in threads:
            thread.start()
        return threads


def timed_calls(client: httpx.Client, url: str, seconds: float) -> list[float]:
    """Sequential legitimate hook calls for `seconds`; each must be answered 200."""
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.perf_counter()
        response = client.post(url, json=REQUEST, timeout=30)
        latencies.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
        assert response.json()["cards"]
    return latencies


def test_slow_clients_at_nginx_do_not_delay_legitimate_calls(nginx: tuple[int, Path]) -> None:
    port, cert = nginx
    url = f"https://127.0.0.1:{port}{HOOK_PATH}"
    with httpx.Client(verify=tls(cert)) as client:
        timed_calls(client, url, 1.0)  # first calls: TLS session, worker caches
        without = timed_calls(client, url, 5.0)
        attack = Attack(port, tls(cert))
        threads = attack.start()
        try:
            time.sleep(SLOW_INTERVAL + 1)  # every slow client connected and has sent a piece
            during = timed_calls(client, url, 2 * CLIENT_HEADER_TIMEOUT)
        finally:
            attack.stop.set()
            for thread in threads:
                thread.join(timeout=SLOW_INTERVAL + 5)
    p50_without, p50_during = statistics.median(without), statistics.median(during)
    print(
        f"\nlegitimate calls through nginx: p50 {p50_without * 1000:.1f} ms without attack "
        f"({len(without)} calls), {p50_during * 1000:.1f} ms with {SLOW_CLIENTS} slow-header and "
        f"{SLOW_CLIENTS} slow-body clients ({len(during)} calls, max {max(during) * 1000:.0f} ms); "
        f"{attack.connected} attack connections, slow-header ones closed after "
        f"{min(attack.header_lifetimes, default=0):.1f}-{max(attack.header_lifetimes, default=0):.1f} s"
    )
    assert attack.connected >= 2 * SLOW_CLIENTS
    assert p50_during <= P50_FACTOR * p50_without + P50_SLACK
    # nginx's client_header_timeout cut the header-by-line clients (one interval of detection).
    assert attack.header_lifetimes
    assert max(attack.header_lifetimes) <= CLIENT_HEADER_TIMEOUT + SLOW_INTERVAL + 1


def test_without_nginx_the_same_attack_starves_gunicorn(service: int) -> None:
    """The control: the attack is real. gunicorn's threads wait on slow clients, so nginx is needed."""
    url = f"http://127.0.0.1:{service}{HOOK_PATH}"
    with httpx.Client() as client:
        assert timed_calls(client, url, 0.5)
    attack = Attack(service, None)
    threads = attack.start()
    try:
        time.sleep(2)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(url, json=REQUEST, timeout=10)
    finally:
        attack.stop.set()
        for thread in threads:
            thread.join(timeout=SLOW_INTERVAL + 5)


class BlackHole:
    """An upstream that never answers. `dropped`: a listener whose accept queue is full, so the
    kernel drops every new SYN (as a firewall or a dead host does: no connection is ever made).
    `hung`: a listener that accepts and reads every request and never answers (a hung replica, or
    one cut off after the connection was made); it counts the requests it was sent."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.queued: list[socket.socket] = []
        self.requests = 0
        self.done = threading.Event()
        self.threads: list[threading.Thread] = []
        if kind == "dropped":
            self.listener.listen(0)
            while True:  # fill the accept queue until a connection is no longer made
                try:
                    self.queued.append(socket.create_connection(("127.0.0.1", self.port), 0.5))
                except TimeoutError:
                    break
                assert len(self.queued) < 10, "the kernel keeps accepting: not a black hole"
        else:
            self.listener.listen(64)
            self.threads.append(threading.Thread(target=self._swallow))
            self.threads[0].start()

    def _swallow(self) -> None:
        self.listener.settimeout(0.2)
        while not self.done.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.queued.append(connection)
            self.threads.append(threading.Thread(target=self._read, args=(connection,)))
            self.threads[-1].start()

    def _read(self, connection: socket.socket) -> None:
        connection.settimeout(0.2)
        while not self.done.is_set():
            try:
                data = connection.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.requests += data.count(b"POST /cds-services")

    def close(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(timeout=5)
        for sock in [*self.queued, self.listener]:
            sock.close()


CONNECT_TIMEOUT, READ_TIMEOUT = 2.0, 15.0  # proxy_connect_timeout, proxy_read_timeout
SLOW = CONNECT_TIMEOUT - 0.5  # a call this slow met the hole (others take milliseconds)


@pytest.mark.parametrize("kind", ["dropped", "hung"])
def test_a_black_holed_replica_is_taken_out_and_a_call_it_was_sent_is_not_resent(
    service: int, tmp_path: Path, kind: str
) -> None:
    """Two upstreams, one of them a black hole: after one failed attempt nginx sends it nothing
    for fail_timeout. A call that never reached it is passed to the good replica (200, one connect
    timeout late); a call it was sent and never answered is not (504 after proxy_read_timeout):
    with JWTs the next replica would refuse its token as a replay."""
    hole = BlackHole(kind)
    try:
        with running_nginx(tmp_path, [service, hole.port]) as (port, cert, error_log):
            url = f"https://127.0.0.1:{port}{HOOK_PATH}"
            calls: list[tuple[int, float]] = []
            met_hole_at = None
            with httpx.Client(verify=tls(cert), timeout=READ_TIMEOUT + 15) as client:
                # Round robin sends the first or second call to the hole; from then on, for
                # fail_timeout (less a margin), every call must go to the replica.
                while met_hole_at is not None or len(calls) < 4:
                    started = time.monotonic()
                    status = client.post(url, json=REQUEST).status_code
                    ended = time.monotonic()
                    calls.append((status, ended - started))
                    if ended - started > SLOW and met_hole_at is None:
                        met_hole_at = ended
                    if met_hole_at is not None and ended - met_hole_at > FAIL_TIMEOUT - 1.5:
                        break
            log = error_log.read_text(errors="replace")
    finally:
        hole.close()
    slow = [(status, seconds) for status, seconds in calls if seconds > SLOW]
    print(f"\n{kind} black hole: {len(calls)} calls, slow ones {slow}")
    assert "temporarily disabled" in log, log  # nginx took the black hole out
    assert len(slow) == 1, calls
    ((status, seconds),) = slow
    assert calls.index(slow[0]) <= 1, calls  # the first or second call met the hole
    rest = [s for s in calls if s != slow[0]]
    assert all(status == 200 for status, _ in rest), calls
    if kind == "dropped":  # nothing was sent: passed to the replica after the connect timeout
        assert status == 200 and CONNECT_TIMEOUT - 0.5 < seconds < CONNECT_TIMEOUT + 3, slow
    else:  # sent and never answered: 504 at the read timeout, not resent
        assert status == 504 and READ_TIMEOUT - 0.5 < seconds < READ_TIMEOUT + 5, slow
        assert hole.requests == 1
