"""Runs the local Medplum FHIR R4 server (fhir_server/server.mjs) as a subprocess for tests."""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_DIR = REPO_ROOT / "fhir_server"
READY_PREFIX = "FHIR server listening on "
_STOP_TIMEOUT = 10.0


class FhirServerError(RuntimeError):
    """The local FHIR server could not be started or did not become ready."""


class LocalFhirServer:
    """One local FHIR server process; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        seed: Sequence[Path] = (),
        *,
        timeout: float = 60,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: Sequence[str] = (),
        server_dir: Path = SERVER_DIR,
    ) -> None:
        self.seed = [Path(p) for p in seed]
        self.timeout = timeout
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.server_dir = server_dir
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        """The FHIR base URL, e.g. http://127.0.0.1:40123/fhir/R4 (only while running)."""
        if self._base_url is None:
            raise FhirServerError("the local FHIR server is not running")
        return self._base_url

    def command(self) -> list[str]:
        """The argv that starts the server."""
        node = shutil.which("node")
        if node is None:
            raise FhirServerError("`node` is not on PATH; the local FHIR server needs Node.js 20+")
        args = [
            node,
            "--experimental-websocket",
            str(self.server_dir / "server.mjs"),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        for path in self.seed:
            args += ["--seed", str(path)]
        return args + self.extra_args

    def start(self) -> str:
        """Starts the server, waits for its "listening on" line and returns the base URL."""
        if self._proc is not None:
            raise FhirServerError("the local FHIR server is already running")
        if not (self.server_dir / "node_modules" / "@medplum" / "fhir-router").is_dir():
            raise FhirServerError(
                f"{self.server_dir / 'node_modules'} is missing or incomplete: run `make test` "
                "(it runs `npm ci` in fhir_server/) before the FHIR server tests"
            )
        command = self.command()
        # stderr goes to a file, not a pipe: nobody drains it, and a full pipe would stall node.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        try:
            self._proc = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
            )
            self._base_url = self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self._base_url

    def _wait_until_ready(self) -> str:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + self.timeout
        buffer = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FhirServerError(
                    f"the local FHIR server did not report ready within {self.timeout:g} s"
                    + self._stderr_tail()
                )
            # selectors (epoll), not select(): a long test session may hold descriptors past 1024.
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_READ)
                readable = selector.select(remaining)
            if not readable:
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                code = proc.wait(timeout=_STOP_TIMEOUT)
                raise FhirServerError(
                    f"the local FHIR server exited with code {code} before it was ready"
                    + self._stderr_tail()
                )
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode("utf-8", "replace").strip()
                if text.startswith(READY_PREFIX):
                    return text[len(READY_PREFIX) :]

    def _stderr_tail(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace")[-limit:].strip()
        return f"; its stderr:\n{text}" if text else ""

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL) and closes its pipes; safe to call twice."""
        proc, self._proc, self._base_url = self._proc, None, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def start_fhir_server(seed: Sequence[Path], timeout: float = 60) -> Iterator[str]:
    """Runs a local FHIR server loaded with the seed files/dirs; yields its base URL."""
    with LocalFhirServer(seed, timeout=timeout) as base_url:
        yield base_url


def _origin(base_url: str) -> str:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}"


@cache
def _test_aid_client() -> httpx.Client:
    # One client for the test aids below: each new client loads the system CA bundle (~30 ms),
    # and the fallback tests call them twice per scenario. Plain HTTP on loopback needs none.
    return httpx.Client(timeout=10, verify=False)


def requests_seen(base_url: str) -> list[dict[str, Any]]:
    """The server's log of FHIR requests, oldest first: {method, path, query, authorization}."""
    response = _test_aid_client().get(f"{_origin(base_url)}/__requests")
    response.raise_for_status()
    seen: list[dict[str, Any]] = response.json()
    return seen


def reset_requests(base_url: str) -> None:
    """Clears the server's request log."""
    _test_aid_client().post(f"{_origin(base_url)}/__reset").raise_for_status()
