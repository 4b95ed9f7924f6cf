"""KnativeStandin: a test-only stand-in for Knative Serving's controllers (status only). See README.md."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "serving.knative.dev", "v1", "services"
MERGE_PATCH = "application/merge-patch+json"
log = logging.getLogger(__name__)

RevisionReady = Callable[[dict[str, Any], str], bool]


def _always_ready(ksvc: dict[str, Any], revision: str) -> bool:
    return True


class KnativeStandin:
    """Watches every Knative Service and writes the status Knative would, for revisions it invents."""

    def __init__(self, kubeconfig: Path, domain: str = "example.com",
                 revision_ready: RevisionReady = _always_ready) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        self.domain = domain
        self.revision_ready = revision_ready
        self.revisions: dict[str, list[tuple[str, str]]] = {}  # ksvc uid -> [(revision, template json)]
        self.ready_revisions: dict[str, set[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="knative-standin", daemon=True)

    def start(self) -> KnativeStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
                for item in listing["items"]:
                    self.observe(item)
                stream = kubernetes.watch.Watch().stream(
                    self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                    resource_version=listing["metadata"]["resourceVersion"], timeout_seconds=2)
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self.observe(event["object"])
            except Exception as exc:  # keep standing in: the next listing catches up
                if not self._stop.is_set():
                    log.warning("knative stand-in: %s", exc)
                    self._stop.wait(0.5)

    def observe(self, ksvc: dict[str, Any]) -> None:
        metadata = ksvc["metadata"]
        status = ksvc.get("status") or {}
        if status.get("observedGeneration") == metadata.get("generation"):
            return
        name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
        template = json.dumps(ksvc.get("spec", {}).get("template", {}), sort_keys=True)
        history = self.revisions.setdefault(uid, self._known_revisions(status))
        known_ready = {status["latestReadyRevisionName"]} if status.get("latestReadyRevisionName") else set()
        ready = self.ready_revisions.setdefault(uid, known_ready)
        if not history or history[-1][1] != template:
            history.append((f"{name}-{len(history) + 1:05d}", template))
        latest = history[-1][0]
        if self.revision_ready(ksvc, latest):
            ready.add(latest)
        latest_ready = next((rev for rev, _ in reversed(history) if rev in ready), None)
        is_ready = latest in ready
        condition = {"status": "True"} if is_ready else {
            "status": "Unknown", "reason": "RevisionMissing",
            "message": f"Configuration {name!r} is waiting for a Revision to become ready."}
        new_status: dict[str, Any] = {
            "observedGeneration": metadata.get("generation"),
            "conditions": [{"type": kind, **condition}
                           for kind in ("ConfigurationsReady", "Ready", "RoutesReady")],
            "latestCreatedRevisionName": latest,
            "url": f"http://{name}.{namespace}.{self.domain}",
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
        }
        if latest_ready:
            new_status["latestReadyRevisionName"] = latest_ready
            new_status["traffic"] = self._traffic(ksvc, latest_ready)
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": new_status}, _content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise

    @staticmethod
    def _known_revisions(status: dict[str, Any]) -> list[tuple[str, str]]:
        latest = status.get("latestCreatedRevisionName")
        if not latest:
            return []
        count = int(latest.rsplit("-", 1)[-1])
        return [(f"{latest.rsplit('-', 1)[0]}-{n:05d}", "") for n in range(1, count + 1)]

    @staticmethod
    def _traffic(ksvc: dict[str, Any], latest_ready: str) -> list[dict[str, Any]]:
        targets = ksvc.get("spec", {}).get("traffic") or [{"latestRevision": True, "percent": 100}]
        resolved = []
        for target in targets:
            latest = bool(target.get("latestRevision"))
            entry = {"latestRevision": latest,
                     "revisionName": latest_ready if latest else target.get("revisionName"),
                     "percent": target.get("percent", 0)}
            if target.get("tag"):
                entry["tag"] = target["tag"]
            resolved.append(entry)
        return resolved
