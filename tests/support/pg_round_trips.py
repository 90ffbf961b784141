"""A TcpProxy in front of PostgreSQL that counts the round trips its clients make.

A client waits for the server after each simple Query ('Q') and after each Sync ('S') that ends an
extended-protocol batch (Parse/Bind/Execute), so counting those messages counts round trips.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable

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

    def _client_watcher(self) -> Callable[[bytes], None]:
        buffer, started = b"", False

        def watch(data: bytes) -> None:
            nonlocal buffer, started
            buffer += data
            while True:
                if not started:  # length-prefixed startup messages, without a type byte
                    if len(buffer) < 8:
                        return
                    length, code = struct.unpack("!II", buffer[:8])
                    if len(buffer) < length:
                        return
                    buffer = buffer[length:]
                    started = code not in _PRE_STARTUP_CODES
                    continue
                if len(buffer) < 5:
                    return
                kind, length = buffer[:1], struct.unpack("!I", buffer[1:5])[0]
                if len(buffer) < 1 + length:
                    return
                body, buffer = buffer[5 : 1 + length], buffer[1 + length :]
                self._seen(kind, body)

        return watch

    def _seen(self, kind: bytes, body: bytes) -> None:
        with self._count_lock:
            if kind == b"Q":
                self.round_trips += 1
                self.statements.append(body.rstrip(b"\0").decode(errors="replace"))
            elif kind == b"P":  # Parse: statement name, then the SQL
                self.statements.append(body.split(b"\0")[1].decode(errors="replace"))
            elif kind == b"S":
                self.round_trips += 1
