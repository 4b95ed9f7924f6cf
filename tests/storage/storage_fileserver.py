"""A small real HTTP(S) file server for the storage tests and benchmark (run as a script).

    python tests/storage/storage_fileserver.py ROOT PORT [--cert C --key K] [--fail-first N]
        [--bytes-per-second B] [--require-header 'Name: value']

Serves files under ROOT with Content-Length. ``--fail-first N`` answers 503 to the first N GETs of each
path (to exercise retries), ``--bytes-per-second`` throttles bodies (to kill a client mid-transfer),
``--require-header`` answers 401 unless the request carries that header. Also: ``make_tls_material(DIR)``
writes a throwaway CA and a server certificate for 127.0.0.1/localhost, using `cryptography`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

CHUNK = 1024 * 1024


def make_tls_material(directory: Path) -> dict[str, Path]:
    """ca.pem (a throwaway CA), server.pem and server.key (signed by it, for 127.0.0.1 and localhost),
    made with the local cluster's certificate authority (e2e/localkube/certificates.py)."""
    from e2e.localkube.certificates import CertificateAuthority, write_file

    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority.create(datetime.timedelta(days=1), name="torch-isvc test CA")
    server = ca.issue_server("127.0.0.1", names=("localhost",), ips=("127.0.0.1",))
    cert, key = server.write(directory, "server")
    return {
        "ca": write_file(directory / "ca.pem", ca.cert_pem, 0o644),
        "cert": cert.rename(directory / "server.pem"),
        "key": key,
    }


def make_handler(
    root: Path, fail_first: int, rate: float | None, required: tuple[str, str] | None
) -> type[BaseHTTPRequestHandler]:
    failures: dict[str, int] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            sys.stderr.write(f"fileserver: {self.command} {self.path.split('?')[0]} {args[1:2]}\n")

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = unquote(urlsplit(self.path).path)
            if required and self.headers.get(required[0]) != required[1]:
                self._reply(401, b"unauthorized\n")
                return
            with lock:
                seen = failures.get(path, 0)
                failures[path] = seen + 1
            if seen < fail_first:
                self._reply(503, b"try again later\n")
                return
            target = (root / path.lstrip("/")).resolve()
            if not target.is_relative_to(root.resolve()) or not target.is_file():
                self._reply(404, b"not found\n")
                return
            size = target.stat().st_size
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            started = time.monotonic()
            sent = 0
            step = CHUNK if rate is None else max(1024, int(rate) // 10)
            with open(target, "rb") as f:
                while chunk := f.read(step):
                    self.wfile.write(chunk)
                    sent += len(chunk)
                    if rate is not None:
                        ahead = sent / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)

    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--bytes-per-second", type=float)
    parser.add_argument("--require-header")
    args = parser.parse_args()
    required = None
    if args.require_header:
        name, _, value = args.require_header.partition(":")
        required = (name.strip(), value.strip())
    handler = make_handler(args.root, args.fail_first, args.bytes_per_second, required)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"fileserver: serving {args.root} on {args.port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
