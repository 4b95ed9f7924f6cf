"""The ingress stand-in as an HTTP proxy (no cluster): real loopback servers behind it, a route table
set by hand. Routing by Host, relaying, the activator's wait, and its JSON errors."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from e2e.processes import free_port
from e2e.standin.ingress import REVISION_HEADER, Ingress
from e2e.standin.routing import Backend, RouteTable

HOST = "torchserve.kfserving-test.example.com"
V1 = Backend("kfserving-test", "torchserve-predictor-default-00001")
V2 = Backend("kfserving-test", "torchserve-predictor-default-00002")


class Echo(BaseHTTPRequestHandler):
    """Answers with what it received; ``/status/N`` answers status N."""

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status = int(self.path.split("/status/")[1].split("?")[0]) if "/status/" in self.path else 200
        data = json.dumps({"server": self.server.server_port, "method": self.command, "path": self.path,
                           "host": self.headers.get("Host"), "body": body.decode()}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


class Pods:
    """Endpoints by revision; a revision may become ready at a given time."""

    def __init__(self) -> None:
        self.urls: dict[str, str] = {}
        self.ready_at: dict[str, float] = {}

    def endpoint(self, namespace: str, revision: str) -> str | None:
        if time.monotonic() < self.ready_at.get(revision, 0.0):
            return None
        return self.urls.get(revision)


@pytest.fixture
def backends() -> Iterator[list[str]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Echo) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [f"http://127.0.0.1:{s.server_port}" for s in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def pods(backends: list[str]) -> Pods:
    pods = Pods()
    pods.urls = {V1.revision: backends[0], V2.revision: backends[1]}
    return pods


@pytest.fixture
def ingress(pods: Pods) -> Iterator[Ingress]:
    proxy = Ingress(None, pods, activation_timeout=0.5).start()
    proxy.table = RouteTable(knative={HOST: ((V1, 100.0),), f"prev-{HOST}": ((V2, 100.0),)})
    try:
        yield proxy
    finally:
        proxy.stop()


def test_request_is_relayed_to_the_hosts_revision_named_in_a_header(
    ingress: Ingress, backends: list[str]
) -> None:
    response = httpx.post(f"{ingress.url}/v1/models/mnist:predict?x=1", content=b'{"instances": []}',
                          headers={"Host": f"{HOST}:80"})
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["server"] == int(backends[0].rsplit(":", 1)[1])
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("POST", "/v1/models/mnist:predict?x=1",
                                                                  '{"instances": []}')
    assert echoed["host"] == f"{HOST}:80"
    assert response.headers[REVISION_HEADER] == V1.revision
    tagged = httpx.get(f"{ingress.url}/", headers={"Host": f"prev-{HOST}"})
    assert tagged.headers[REVISION_HEADER] == V2.revision


def test_upstream_status_is_relayed(ingress: Ingress) -> None:
    response = httpx.post(f"{ingress.url}/status/400", content=b"x", headers={"Host": HOST})
    assert response.status_code == 400 and response.json()["path"] == "/status/400"


def test_unknown_host_is_a_json_404(ingress: Ingress) -> None:
    response = httpx.get(f"{ingress.url}/", headers={"Host": "other.example.com"})
    assert response.status_code == 404
    assert "other.example.com" in response.json()["error"]


def test_requests_wait_for_a_revision_that_becomes_ready(ingress: Ingress, pods: Pods) -> None:
    pods.ready_at[V1.revision] = time.monotonic() + 0.3
    started = time.monotonic()
    response = httpx.get(f"{ingress.url}/", headers={"Host": HOST})
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.25


def test_revision_never_ready_is_a_json_503(ingress: Ingress, pods: Pods) -> None:
    pods.ready_at[V1.revision] = time.monotonic() + 60
    response = httpx.get(f"{ingress.url}/", headers={"Host": HOST})
    assert response.status_code == 503
    assert V1.revision in response.json()["error"]


def test_pod_not_answering_is_a_json_502(ingress: Ingress, pods: Pods) -> None:
    pods.urls[V1.revision] = f"http://127.0.0.1:{free_port()}"
    response = httpx.get(f"{ingress.url}/", headers={"Host": HOST})
    assert response.status_code == 502
    assert response.headers[REVISION_HEADER] == V1.revision and "error" in response.json()
