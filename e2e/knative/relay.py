"""A TCP relay from the host end of a test network namespace's veth to a loopback service.

The local apiserver listens on 127.0.0.1 only, and a process inside a network namespace has a loopback of
its own: it reaches the host only at the host end of its veth (``NetworkNamespace.host_address``). The relay
listens there, on a free port, and copies bytes both ways to the loopback address, so Knative's webhook in
its namespace talks to the apiserver (TLS end to end: the relay never sees plaintext).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import Self


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class Relay:
    """Listens on ``listen_host`` (a free port: ``.port``) and connects each client to ``target``."""

    def __init__(self, listen_host: str, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server((listen_host, 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._connections: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name=f"relay-{self.port}", daemon=True)

    def start(self) -> Self:
        self._thread.start()
        return self

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()
        self._thread.join(timeout=5)
