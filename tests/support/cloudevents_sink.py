"""A real CloudEvents receiver on loopback for the payload logger's tests and bench: every POST is parsed
by the `cloudevents` SDK (HTTP binary mode) and kept with the raw header names it came with.

`answer` decides each reply: a status code (200 by default), or None to read the request and never
answer (a sink that accepts connections and hangs)."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings.http import HTTPMessage, from_binary_event


@dataclass
class Received:
    event: BaseCloudEvent
    header_names: frozenset[str]
    body: bytes


@dataclass
class CloudEventsSink:
    url: str
    received: list[Received] = field(default_factory=list)
    requests: int = 0
    answer: Callable[[int], int | None] = lambda _number: 200
    lock: threading.Lock = field(default_factory=threading.Lock)

    def events(self, event_type: str | None = None) -> list[BaseCloudEvent]:
        with self.lock:
            return [r.event for r in self.received if event_type in (None, r.event.get_type())]


@contextlib.contextmanager
def cloudevents_sink(ssl_context: ssl.SSLContext | None = None) -> Iterator[CloudEventsSink]:
    release = threading.Event()
    sink: CloudEventsSink

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            with sink.lock:
                sink.requests += 1
                number = sink.requests
            status = sink.answer(number)
            if status is None:
                release.wait()
                return
            if status < 300:
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = from_binary_event(HTTPMessage(headers=headers, body=body))
                with sink.lock:
                    sink.received.append(Received(event, frozenset(headers), body))
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    scheme = "http"
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    sink = CloudEventsSink(url=f"{scheme}://127.0.0.1:{server.server_address[1]}/events")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        release.set()
        server.shutdown()
        server.server_close()
