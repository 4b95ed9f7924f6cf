"""The local ingress: one HTTP port on loopback that plays Istio's gateways and Knative's activator.

It routes each request by its ``Host`` header through the route table (:mod:`.routing`), rebuilt from
the apiserver every ``refresh`` seconds, to a revision's pod, and adds ``x-standin-revision: NAME`` to
the response (a stand-in addition, so the demo and tests can see the split). A revision whose pod is
not ready yet is waited for (Knative's activator holds requests during a cold start) up to
``activation_timeout``. A host not in the table makes it re-read the routes once before answering.
Errors are JSON: 404 for an unknown host, 503 for a revision that never became
ready, 502 when the pod does not answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import kubernetes
import uvicorn
from kubernetes.client.exceptions import ApiException

from e2e.polling import repeating
from e2e.processes import free_port

from .routing import RouteTable, build_routes, pick

REVISION_HEADER = "x-standin-revision"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
              "transfer-encoding", "upgrade", "content-length", "expect"}
# httpx hands back decoded bodies: ask upstream for none, so the bytes relayed are the bytes sent.
NOT_FORWARDED = HOP_BY_HOP | {"accept-encoding"}
NOT_RETURNED = HOP_BY_HOP | {"content-encoding"}
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class Endpoints(Protocol):
    """Where a revision's pod answers (ServingStandin): its loopback URL when ready, else None."""

    def endpoint(self, namespace: str, revision: str) -> str | None: ...


class Ingress:
    def __init__(self, kubeconfig: Path | None, standin: Endpoints, *, port: int | None = None,
                 domain: str = "example.com", refresh: float = 0.3, activation_timeout: float = 120.0,
                 upstream_timeout: float = 300.0) -> None:
        """``kubeconfig`` None: no apiserver, the caller sets ``table`` (tests of the proxy itself)."""
        self.api: kubernetes.client.CustomObjectsApi | None = None
        if kubeconfig is not None:
            configuration = kubernetes.client.Configuration()
            kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
            self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        self.standin = standin
        self.port = port or free_port()
        self.domain = domain
        self.refresh = refresh
        self.activation_timeout = activation_timeout
        self.upstream_timeout = upstream_timeout
        self.table = RouteTable(domain=domain)
        self.refreshed_at = 0.0
        self._stop = threading.Event()
        self._poller = repeating(self.update_routes, refresh, self._stop, "ingress routes")
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle --

    def start(self, timeout: float = 30.0) -> Ingress:
        self.update_routes()
        self._poller.start()
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                access_log=False, lifespan="off", loop="asyncio", timeout_keep_alive=30,
                                interface="asgi3")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="ingress", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the ingress did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._poller.join(timeout=10)

    # -- routes --

    def _list(self, group: str, version: str, plural: str) -> list[dict[str, Any]]:
        assert self.api is not None
        try:
            return list(self.api.list_cluster_custom_object(group, version, plural)["items"])
        except ApiException as exc:
            if exc.status == 404:  # the CRD is not installed
                return []
            raise

    def update_routes(self) -> RouteTable:
        if self.api is None:
            return self.table
        ksvcs = self._list("serving.knative.dev", "v1", "services")
        virtualservices = self._list("networking.istio.io", "v1beta1", "virtualservices")
        isvcs = self._list("serving.kubeflow.org", "v1beta1", "inferenceservices")
        self.table = build_routes(ksvcs, virtualservices, isvcs, self.domain)
        self.refreshed_at = time.monotonic()
        return self.table

    # -- the ASGI app --

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        host = next((v for k, v in headers if k.lower() == "host"), "")
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1")
        split = self.table.resolve(host, scope["path"])
        if split is None:  # a route just programmed may not be in the table yet: look once more
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.update_routes)
            split = self.table.resolve(host, scope["path"])
        if split is None:
            await _reply(send, 404, {"error": f"no route for host {host!r}"})
            return
        backend = pick(split)
        url = await self._activate(backend.namespace, backend.revision)
        if url is None:
            await _reply(send, 503, {"error": f"revision {backend.revision} is not ready"},
                         backend.revision)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        forward = [(k, v) for k, v in headers if k.lower() not in NOT_FORWARDED]
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.upstream_timeout,
                                             limits=httpx.Limits(max_keepalive_connections=32))
        try:
            response = await self._client.request(
                scope["method"], f"{url}{path}" + (f"?{query}" if query else ""), headers=forward,
                content=bytes(body))
        except httpx.HTTPError as exc:
            await _reply(send, 502, {"error": f"revision {backend.revision}: {type(exc).__name__}"},
                         backend.revision)
            return
        out = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.multi_items()
               if k.lower() not in NOT_RETURNED]
        out.append((b"content-length", str(len(response.content)).encode()))
        out.append((REVISION_HEADER.encode(), backend.revision.encode()))
        await send({"type": "http.response.start", "status": response.status_code, "headers": out})
        await send({"type": "http.response.body", "body": response.content})

    async def _activate(self, namespace: str, revision: str) -> str | None:
        deadline = time.monotonic() + self.activation_timeout
        while (url := self.standin.endpoint(namespace, revision)) is None:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.1)
        return url


async def _reply(send: Send, status: int, body: dict[str, Any], revision: str | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if revision:
        headers.append((REVISION_HEADER.encode(), revision.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
