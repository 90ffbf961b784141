"""A loopback TCP proxy that can be cut, silenced and restored: a real database failing on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

# What the proxy does with traffic (set by the test, read by every pipe for each chunk):
# forward: everything; black-hole: accept and read everything, forward and answer nothing (a
# server that stopped answering: packets accepted, no reply); answers-lost: the client's bytes
# reach the server, the server's answers are dropped.
MODES = ("forward", "black-hole", "answers-lost")


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; stop() drops every connection, start() serves again,
    black_hole() and answers_lost() silence it (connections stay open), restore() ends that."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.mode = "forward"
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave it listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self.drop_connections()

    def drop_connections(self) -> None:
        """Close every connection made so far (the listener stays)."""
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def black_hole(self, close_existing: bool = False) -> None:
        """Accept and read everything, answer nothing; `close_existing` first drops open connections."""
        self.mode = "black-hole"
        if close_existing:
            self.drop_connections()

    def answers_lost(self) -> None:
        """Forward what clients send; drop what the server answers."""
        self.mode = "answers-lost"

    def restore(self) -> None:
        """Forward again; the connections that were silenced are closed (their streams lost bytes)."""
        self.mode = "forward"
        self.drop_connections()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.mode == "black-hole":
                with self._lock:
                    self._sockets.add(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update({client, upstream})
            for source, sink, from_server in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(
                    target=self._pipe, args=(source, sink, from_server), daemon=True
                ).start()

    def _swallow(self, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while client.recv(65536):
                pass
        with contextlib.suppress(OSError):
            client.close()

    def _client_watcher(self) -> Callable[[bytes], None]:
        """Subclasses' hook: a fresh callable per connection, handed each chunk the client sends
        before it is forwarded (so what it records is there when the answer comes back)."""
        return lambda data: None

    def _pipe(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        watch = None if from_server else self._client_watcher()
        try:
            while data := source.recv(65536):
                if watch is not None:
                    watch(data)
                if self.mode == "black-hole" or (self.mode == "answers-lost" and from_server):
                    continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
