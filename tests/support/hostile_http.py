"""Loopback doubles for what a real FHIR server will not do on demand: drip, flood, nest, bomb.

`FaultyFhirServer` answers `/<fault>/fhir/...` with the named fault and records, per connection, the
request line, the bytes it sent and when the connection ended, so a test can tell whether the
service stopped reading. `RecordingProxy` is tests.support.tcp_proxy.TcpProxy that also keeps the
raw request lines it forwards: what really went on the wire, before any server normalized it.
"""

from __future__ import annotations

import gzip
import json
import socket
import socketserver
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from tests.support.tcp_proxy import TcpProxy

PATIENT = {"resourceType": "Patient", "id": "pt-1", "birthDate": "1950-01-01"}


@dataclass
class Connection:
    """One connection the server accepted."""

    request_line: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    sent: int = 0
    ended: float | None = None  # monotonic time the server saw the connection end


def nested(depth: int) -> bytes:
    """A FHIR-looking resource whose `entry` nests `depth` arrays."""
    return (
        b'{"resourceType":"Bundle","type":"searchset","entry":' + b"[" * depth + b"]" * depth + b"}"
    )


@cache
def _gzip_bomb() -> bytes:
    # 200 MB of spaces inside a JSON string: about 200 kB on the wire.
    body = b'{"resourceType":"Patient","id":"pt-1","text":"' + b" " * (200 * 1024 * 1024) + b'"}'
    return gzip.compress(body, compresslevel=9)


def _searchset(next_url: str | None) -> bytes:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    if next_url is not None:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return json.dumps(bundle).encode()


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        sock: socket.socket = self.request
        conn = Connection()
        with self.server.lock:
            self.server.connections.append(conn)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = sock.recv(65536)
                if not data:
                    return
                head += data
            lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            conn.request_line = lines[0]
            conn.headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
            }
            path = lines[0].split(" ")[1]
            fault = self.server.override or path.split("/")[1]
            getattr(self, "fault_" + fault.replace("-", "_"), self.fault_unknown)(sock, conn, path)
        except OSError:
            pass
        finally:
            conn.ended = time.monotonic()

    def _send(self, sock: socket.socket, conn: Connection, data: bytes) -> None:
        sock.sendall(data)
        conn.sent += len(data)

    def _answer(
        self,
        sock: socket.socket,
        conn: Connection,
        body: bytes,
        status: str = "200 OK",
        extra: str = "",
    ) -> None:
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: application/fhir+json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        self._send(sock, conn, head.encode() + body)

    def _resource(self, path: str) -> bytes:
        return json.dumps(PATIENT).encode() if "/Patient/" in path else _searchset(None)

    # --- faults, chosen by the first path segment ---------------------------------------------

    def fault_unknown(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b'{"resourceType":"OperationOutcome"}', "404 Not Found")

    def fault_ok(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, self._resource(path))

    def fault_error(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b'{"resourceType":"OperationOutcome"}', "500 Server Error")

    def fault_silent(self, sock: socket.socket, conn: Connection, path: str) -> None:
        sock.settimeout(0.05)
        while not self.server.stopping.is_set():
            try:
                if not sock.recv(1):
                    return  # the service hung up
            except TimeoutError:
                continue

    def fault_drip_headers(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._send(sock, conn, b"HTTP/1.1 200 OK\r\n")
        while not self.server.stopping.wait(0.05):
            self._send(sock, conn, b"X")  # one header byte at a time, never finished

    def fault_drip_body(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._send(sock, conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n{")
        while not self.server.stopping.wait(0.05):
            self._send(sock, conn, b" ")

    def fault_endless(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._send(sock, conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b" " * 65536
        framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        self._send(sock, conn, b"1\r\n{\r\n")
        while not self.server.stopping.is_set():
            self._send(sock, conn, framed)

    def fault_huge(self, sock: socket.socket, conn: Connection, path: str) -> None:
        size = 100 * 1024 * 1024  # declared, and sent until the reader goes away
        self._send(sock, conn, f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        block = b" " * 65536
        while conn.sent < size and not self.server.stopping.is_set():
            self._send(sock, conn, block)

    def fault_huge_undeclared(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._send(sock, conn, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        block = b" " * 65536
        while conn.sent < 100 * 1024 * 1024 and not self.server.stopping.is_set():
            self._send(sock, conn, block)

    def fault_gzip_bomb(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, _gzip_bomb(), extra="Content-Encoding: gzip\r\n")

    def fault_gzip_ok(self, sock: socket.socket, conn: Connection, path: str) -> None:
        body = gzip.compress(self._resource(path))
        self._answer(sock, conn, body, extra="Content-Encoding: gzip\r\n")

    def fault_deflate_ok(self, sock: socket.socket, conn: Connection, path: str) -> None:
        body = zlib.compress(self._resource(path))
        self._answer(sock, conn, body, extra="Content-Encoding: deflate\r\n")

    def fault_brotli(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, self._resource(path), extra="Content-Encoding: br\r\n")

    def fault_bad_gzip(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b"\x1f\x8bnot gzip at all", extra="Content-Encoding: gzip\r\n")

    def fault_deep(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, nested(1000))

    def fault_deeper(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, nested(100_000))

    def fault_deep_100(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, nested(100))

    def fault_not_json(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b"<html>hello</html>")

    def fault_bad_utf8(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b'{"resourceType":"Patient","id":"\xff\xfe"}')

    def fault_redirect(self, sock: socket.socket, conn: Connection, path: str) -> None:
        self._answer(sock, conn, b"", "302 Found", "Location: /admin/steal\r\n")

    def fault_jwks(self, sock: socket.socket, conn: Connection, path: str) -> None:
        """The JWK Set the test put in `FaultyFhirServer.jwks` (a JWKS endpoint that works)."""
        body = json.dumps(self.server.jwks).encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        self._send(sock, conn, head.encode() + body)

    def fault_next(self, sock: socket.socket, conn: Connection, path: str) -> None:
        """A searchset whose next link is the rest of the path after `/next/<n>/`, as stored."""
        if "/Patient/" in path:
            self._answer(sock, conn, self._resource(path))
            return
        index = int(path.split("/")[2])
        self._answer(sock, conn, _searchset(self.server.next_links[index]))


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.connections: list[Connection] = []
        self.stopping = threading.Event()
        self.next_links: list[str] = []
        self.jwks: dict[str, Any] = {"keys": []}
        self.override: str | None = None  # a fault every path answers with, whatever it names


class FaultyFhirServer:
    """A loopback HTTP server with one fault per path prefix; use as a context manager."""

    def __init__(self) -> None:
        self._server = _Server()
        self.origin = f"http://127.0.0.1:{self._server.server_address[1]}"

    def base(self, fault: str) -> str:
        """The fhirServer URL that makes every request answer with `fault`."""
        return f"{self.origin}/{fault}/fhir"

    def next_base(self, next_url: str) -> str:
        """A fhirServer whose searches answer a Bundle with `next_url` as its next link."""
        self._server.next_links.append(next_url.replace("{origin}", self.origin))
        return f"{self.origin}/next/{len(self._server.next_links) - 1}/fhir"

    def serve_jwks(self, jwks: dict[str, Any]) -> None:
        """What the `jwks` fault answers."""
        self._server.jwks = jwks

    def answer_every_path_with(self, fault: str | None) -> None:
        """Make every request answer with `fault` (None: each path names its own again)."""
        self._server.override = fault

    @property
    def connections(self) -> list[Connection]:
        with self._server.lock:
            return list(self._server.connections)

    def reset(self) -> None:
        with self._server.lock:
            self._server.connections.clear()

    def __enter__(self) -> FaultyFhirServer:
        _gzip_bomb()  # made now, so it is not the service's clock that pays for compressing it
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()


class RecordingProxy(TcpProxy):
    """TcpProxy that keeps every HTTP request line a client sent through it, byte for byte."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.request_lines: list[tuple[str, bool]] = []  # (request line, had Authorization)
        self._record_lock = threading.Lock()

    def _client_watcher(self) -> Callable[[bytes], None]:
        buffer = b""

        def watch(data: bytes) -> None:
            nonlocal buffer
            buffer += data
            while b"\r\n\r\n" in buffer:
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                authorized = any(x.lower().startswith("authorization:") for x in lines[1:])
                with self._record_lock:
                    self.request_lines.append((lines[0], authorized))

        return watch
