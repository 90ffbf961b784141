"""A TcpProxy in front of PostgreSQL that counts the round trips its clients make.

A client waits for the server after each simple Query ('Q') and after each Sync ('S') that ends an
extended-protocol batch (Parse/Bind/Execute), so counting those messages counts round trips.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from tests.support.tcp_proxy import TcpProxy

# Requests a client may send before its startup packet (SSL, GSSAPI encryption); the server answers
# each with one byte, and the startup packet follows.
_PRE_STARTUP_CODES = {80877103, 80877104}


class PgRoundTrips(TcpProxy):
    """Forwards to PostgreSQL; `round_trips` counts Query and Sync messages, `statements` keeps
    the SQL of each Query and Parse message (what went over the wire, in order)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        super().__init__(target_host, target_port)
        self.round_trips = 0
        self.statements: list[str] = []
        self._count_lock = threading.Lock()

    def reset(self) -> None:
        with self._count_lock:
            self.round_trips = 0
            self.statements.clear()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        if source.getpeername()[1] == self.target[1]:
            super()._pipe(source, sink)  # the server's answers: not counted
            return
        buffer, started = b"", False
        try:
            while data := source.recv(65536):
                buffer += data
                while True:
                    if not started:  # length-prefixed startup messages, without a type byte
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!II", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        started = code not in _PRE_STARTUP_CODES
                        continue
                    if len(buffer) < 5:
                        break
                    kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
                    if len(buffer) < 1 + length:
                        break
                    body, buffer = buffer[5 : 1 + length], buffer[1 + length :]
                    self._seen(kind, body)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def _seen(self, kind: bytes, body: bytes) -> None:
        with self._count_lock:
            if kind == b"Q":
                self.round_trips += 1
                self.statements.append(body.rstrip(b"\0").decode(errors="replace"))
            elif kind == b"P":  # Parse: statement name, then the SQL
                self.statements.append(body.split(b"\0")[1].decode(errors="replace"))
            elif kind == b"S":
                self.round_trips += 1

    def __enter__(self) -> PgRoundTrips:
        self.start()
        return self
