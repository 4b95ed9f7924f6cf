"""KnativeStandin: Knative Serving's controllers, for status only: revisions numbered per template change,
traffic resolved as Knative resolves it, the Knative Service's status written. No pods: the e2e tests of the
operator use it as is; :class:`~e2e.standin.serving.ServingStandin` adds pods. See README.md."""

from __future__ import annotations

import datetime as dt
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


def stamped(conditions: list[dict[str, Any]], previous: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """``conditions`` with the ``lastTransitionTime`` Knative's controllers give every condition
    (knative.dev/pkg apis.ConditionManager): kept while a condition's status holds, now when it changes.
    Knative's webhook also defaults status writes, and the real CRD refuses a condition without one."""
    before = {condition["type"]: condition for condition in previous or []}
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    result = []
    for condition in conditions:
        old = before.get(condition["type"]) or {}
        kept = old.get("lastTransitionTime") if old.get("status") == condition["status"] else None
        result.append({**condition, "lastTransitionTime": kept or now})
    return result


class KnativeStandin:
    """Watches every Knative Service and writes the status Knative would, for revisions it invents.

    `revision_ready(ksvc, revision)` decides whether a new revision can become ready at all (a False
    revision stays not ready, like one whose pods crash); `readiness_delay` is how long a new revision
    takes to become ready (0: at once). Like Knative, `latestRevision` targets resolve to the latest
    *ready* revision, and a traffic block that names a revision which is not ready is not routed: the
    previous routing stays and RoutesReady is False. Every routing written is kept in `routings`
    ("namespace/name", traffic, the revisions ready then) so tests can check every state traffic went through.
    """

    def __init__(self, kubeconfig: Path, domain: str = "example.com",
                 revision_ready: RevisionReady = _always_ready, readiness_delay: float = 0.0) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(str(kubeconfig), client_configuration=configuration)
        self.api = kubernetes.client.CustomObjectsApi(kubernetes.client.ApiClient(configuration))
        self.domain = domain
        self.revision_ready = revision_ready
        self.readiness_delay = readiness_delay
        self.revisions: dict[str, list[tuple[str, str]]] = {}  # ksvc uid -> [(revision, template json)]
        self.ready_revisions: dict[str, set[str]] = {}
        self.routings: list[tuple[str, list[dict[str, Any]], frozenset[str]]] = []
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._timers: list[threading.Timer] = []
        self._thread = threading.Thread(target=self._run, name="knative-standin", daemon=True)

    def start(self) -> KnativeStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
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

    def observe(self, ksvc: dict[str, Any], force: bool = False) -> None:
        """Knative's reaction to a ksvc: a revision per template change, readiness, routing, status."""
        with self._lock:
            self._observe(ksvc, force)

    def _observe(self, ksvc: dict[str, Any], force: bool) -> None:
        metadata = ksvc["metadata"]
        status = ksvc.get("status") or {}
        if status.get("observedGeneration") == metadata.get("generation") and not force:
            return
        name, namespace, uid = metadata["name"], metadata["namespace"], metadata["uid"]
        template = json.dumps(ksvc.get("spec", {}).get("template", {}), sort_keys=True)
        history = self.revisions.setdefault(uid, self._known_revisions(status))
        known_ready = {status["latestReadyRevisionName"]} if status.get("latestReadyRevisionName") else set()
        ready = self.ready_revisions.setdefault(uid, known_ready)
        created = not history or history[-1][1] != template
        if created:
            history.append((f"{name}-{len(history) + 1:05d}", template))
        latest = history[-1][0]
        if latest not in ready:
            if self.readiness_delay <= 0:
                if self.revision_ready(ksvc, latest):
                    ready.add(latest)
            elif created:
                self._ready_later(namespace, name, uid, latest)
        latest_ready = next((rev for rev, _ in reversed(history) if rev in ready), None)
        configuration_ready = latest in ready
        traffic, routes_ready = self._route(ksvc, latest_ready, ready, status.get("traffic"))

        def condition(ok: bool, reason: str, message: str) -> dict[str, str]:
            return {"status": "True"} if ok else {"status": "Unknown", "reason": reason, "message": message}

        waiting = f"Configuration {name!r} is waiting for a Revision to become ready."
        not_routed = "A traffic target names a Revision that is not ready."
        conditions = {
            "ConfigurationsReady": condition(configuration_ready, "RevisionMissing", waiting),
            "RoutesReady": condition(routes_ready, "RevisionMissing", not_routed),
        }
        ready_condition = conditions["ConfigurationsReady"] if not configuration_ready else \
            conditions["RoutesReady"]
        conditions["Ready"] = ready_condition
        new_status: dict[str, Any] = {
            "observedGeneration": metadata.get("generation"),
            "conditions": stamped([{"type": kind, **conditions[kind]}
                                   for kind in ("ConfigurationsReady", "Ready", "RoutesReady")],
                                  status.get("conditions")),
            "latestCreatedRevisionName": latest,
            "url": f"http://{name}.{namespace}.{self.domain}",
            "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
        }
        if latest_ready:
            new_status["latestReadyRevisionName"] = latest_ready
        if traffic:
            new_status["traffic"] = traffic
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": new_status}, _content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return
        if traffic and traffic != status.get("traffic"):
            self.routings.append((f"{namespace}/{name}", traffic, frozenset(ready)))

    def _ready_later(self, namespace: str, name: str, uid: str, revision: str) -> None:
        def become_ready() -> None:
            if self._stop.is_set():
                return
            with self._lock:
                try:
                    current = self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
                except ApiException:
                    return
                if current["metadata"]["uid"] != uid or not self.revision_ready(current, revision):
                    return
                self.ready_revisions.setdefault(uid, set()).add(revision)
                self._observe(current, force=True)

        timer = threading.Timer(self.readiness_delay, become_ready)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def mark_revision_failed(self, ksvc: dict[str, Any], revision: str, message: str) -> None:
        """Knative marks the ksvc not ready (False, RevisionFailed) when its latest revision fails
        (knative.dev/serving pkg/apis/serving/v1/service_lifecycle.go, PropagateConfigurationStatus)."""
        metadata = ksvc["metadata"]
        failed = {"status": "False", "reason": "RevisionFailed",
                  "message": f"Revision {revision!r} failed with message: {message}"}
        routes = {"status": "True"} if self.ready_revisions.get(metadata["uid"]) else {
            "status": "Unknown", "reason": "RevisionMissing"}
        previous = (ksvc.get("status") or {}).get("conditions")
        conditions = stamped([{"type": "ConfigurationsReady", **failed}, {"type": "Ready", **failed},
                              {"type": "RoutesReady", **routes}], previous)
        try:
            self.api.patch_namespaced_custom_object_status(
                GROUP, VERSION, metadata["namespace"], PLURAL, metadata["name"],
                {"status": {"conditions": conditions}}, _content_type=MERGE_PATCH)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def latest_revision(self, ksvc: dict[str, Any]) -> str | None:
        """The latest revision this stand-in made for ``ksvc`` (None: none yet)."""
        history = self.revisions.get(ksvc["metadata"]["uid"]) or []
        return history[-1][0] if history else None

    @staticmethod
    def _known_revisions(status: dict[str, Any]) -> list[tuple[str, str]]:
        latest = status.get("latestCreatedRevisionName")
        if not latest:
            return []
        count = int(latest.rsplit("-", 1)[-1])
        return [(f"{latest.rsplit('-', 1)[0]}-{n:05d}", "") for n in range(1, count + 1)]

    @staticmethod
    def _traffic(ksvc: dict[str, Any], latest_ready: str) -> list[dict[str, Any]]:
        """spec.traffic resolved: `latestRevision` targets to the latest ready revision (a subclass hook)."""
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

    def _route(self, ksvc: dict[str, Any], latest_ready: str | None, ready: set[str],
               routed: list[dict[str, Any]] | None) -> tuple[list[dict[str, Any]], bool]:
        """The routing of spec.traffic, or the previous one while a named revision is not ready."""
        if latest_ready is None:
            return [], False
        resolved = self._traffic(ksvc, latest_ready)
        if any(entry["revisionName"] not in ready for entry in resolved):
            return list(routed or []), False
        return resolved, True
