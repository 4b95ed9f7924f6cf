"""FakeCluster: an in-memory fake of the `Kube` protocol and of kopf's watches, for unit tests only.

It is not a Kubernetes: it stores InferenceServices, Knative Services, VirtualServices, raw mode's
Deployments, Services, HPAs and Pods, ServiceAccounts, Secrets and the operator's ConfigMap as plain
dicts with resourceVersions (one counter, like etcd's revision) and generations (bumped when `spec`
changes), applies the operator's writes the way server-side
apply does for the fields the operator owns (a write that changes nothing keeps the resourceVersion), and
records every change as a watch event. Watch events reach the indexes only when a test delivers them
(`deliver`), through the operator's own indexing functions (handlers.py), so a test chooses when the
operator learns of a change. `fail` makes the next calls of a method answer with an API error;
`during` runs a callback inside a call (a change that happens while a reconcile is running).
"""

from __future__ import annotations

import itertools
import pickle
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from isvc_operator import handlers
from isvc_operator.config import CONFIGMAP_NAME, DEFAULT_NAMESPACE
from isvc_operator.credentials import SecretSummary, summarize_secret
from isvc_operator.known import (
    DEPLOYMENT,
    HPA,
    INFERENCE_SERVICE,
    KNATIVE_SERVICE,
    PREDICTOR_KINDS,
    RAW_KINDS,
    SERVICE,
    VIRTUAL_SERVICE,
    Indexes,
    Key,
    Known,
    key_of,
    owner_of,
)
from isvc_operator.naming import ISVC_LABEL
from kubernetes.client.exceptions import ApiException


def copy_of(body: Any) -> Any:
    """A deep copy of JSON-like data (pickle's is several times faster than copy.deepcopy)."""
    return pickle.loads(pickle.dumps(body, pickle.HIGHEST_PROTOCOL))


SERVICE_ACCOUNT, SECRET, CONFIG_MAP, POD = "serviceaccount", "secret", "configmap", "pod"
INDEXERS: dict[str, Callable[..., dict[Key, Any]]] = {
    INFERENCE_SERVICE: handlers.inferenceservices,
    KNATIVE_SERVICE: handlers.predictor_services,
    VIRTUAL_SERVICE: handlers.virtual_services,
    DEPLOYMENT: handlers.predictor_deployments,
    SERVICE: handlers.predictor_k8s_services,
    HPA: handlers.predictor_hpas,
    POD: handlers.predictor_pods,
    SERVICE_ACCOUNT: handlers.service_accounts,
    CONFIG_MAP: handlers.operator_config_maps,
}


@dataclass
class WatchEvent:
    kind: str
    type: str  # ADDED, MODIFIED, DELETED
    body: dict[str, Any]


@dataclass
class FakeCluster:
    objects: dict[str, dict[Key, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    pending: list[WatchEvent] = field(default_factory=list)
    events: list[tuple[str, str, str, str]] = field(default_factory=list)  # (object name, type, reason, msg)
    calls: list[str] = field(default_factory=list)  # the Kube methods called, in order
    failures: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    hooks: dict[str, list[Callable[[], None]]] = field(default_factory=lambda: defaultdict(list))
    indexes: dict[str, dict[Key, list[Any]]] = field(default_factory=lambda: defaultdict(dict))
    _versions: itertools.count = field(default_factory=lambda: itertools.count(1))
    _uids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # --- the cluster side: what users, Knative and the apiserver do ------------------------------

    def put(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create or replace an object (a user's `kubectl apply`, Knative's status update)."""
        body = copy_of(body)
        key = key_of(body)
        old = self.objects[kind].get(key)
        metadata = body["metadata"]
        if old is not None:
            for kept in ("uid", "generation", "creationTimestamp"):
                if kept in old["metadata"]:
                    metadata.setdefault(kept, old["metadata"][kept])
            comparable = {**old, "metadata": {**old["metadata"], "resourceVersion": None}}
            if {**body, "metadata": {**metadata, "resourceVersion": None}} == comparable:
                return copy_of(old)
            if body.get("spec") != old.get("spec"):
                metadata["generation"] = old["metadata"].get("generation", 1) + 1
        else:
            metadata.setdefault("uid", f"uid-{next(self._uids)}")
            metadata.setdefault("generation", 1)
        metadata["resourceVersion"] = str(next(self._versions))
        self.objects[kind][key] = body
        self.pending.append(WatchEvent(kind, "MODIFIED" if old else "ADDED", copy_of(body)))
        return copy_of(body)

    def remove(self, kind: str, key: Key) -> None:
        body = self.objects[kind].pop(key, None)
        if body is not None:
            self.pending.append(WatchEvent(kind, "DELETED", copy_of(body)))

    def get(self, kind: str, key: Key) -> dict[str, Any] | None:
        body = self.objects[kind].get(key)
        return copy_of(body) if body is not None else None

    def deliver(self, count: int | None = None, *, known: Known) -> list[Key]:
        """Deliver the oldest `count` pending watch events (all by default) to the indexes, as kopf's
        watches do, and do what the operator's handlers do with them (a deletion is forgotten); the isvcs
        the handlers would reconcile, in order."""
        due, self.pending = self.pending[:count], self.pending[len(self.pending[:count]):]
        reconcile: list[Key] = []
        for event in due:
            self.index(event)
            reconcile += self.concerned(event, known)
        return reconcile

    def index(self, event: WatchEvent) -> None:
        key = key_of(event.body)
        if event.kind == POD:  # kopf's index of pods is by isvc: one value per pod under one key
            self._index_pod(event)
            return
        if event.type == "DELETED":
            self.indexes[event.kind].pop(key, None)
            return
        metadata = event.body["metadata"]
        indexer = INDEXERS.get(event.kind)
        if indexer is not None:
            value = indexer(namespace=key[0], name=key[1], body=event.body, meta=metadata)
            self.indexes[event.kind][key] = [value[key]]

    def _index_pod(self, event: WatchEvent) -> None:
        metadata = event.body["metadata"]
        labels = metadata.get("labels") or {}
        [(owner, summary)] = handlers.predictor_pods(namespace=metadata["namespace"], name=metadata["name"],
                                                      body=event.body, labels=labels).items()
        others = [pod for pod in self.indexes[POD].get(owner, []) if pod.name != metadata["name"]]
        self.indexes[POD][owner] = others if event.type == "DELETED" else [*others, summary]

    def concerned(self, event: WatchEvent, known: Known) -> list[Key]:
        key = key_of(event.body)
        if event.type == "DELETED" and event.kind in (INFERENCE_SERVICE, VIRTUAL_SERVICE, *PREDICTOR_KINDS):
            known.forget(event.kind, key)
        if event.kind == INFERENCE_SERVICE:
            return [] if event.type == "DELETED" else [key]
        if event.kind == POD:
            owner = (key[0], (event.body["metadata"].get("labels") or {}).get(ISVC_LABEL, ""))
            return [owner] if owner in self.indexes[INFERENCE_SERVICE] else []
        if event.kind in (VIRTUAL_SERVICE, *PREDICTOR_KINDS):
            owner = owner_of(event.kind, *key, event.body["metadata"].get("labels") or {})
            return [owner] if owner in self.indexes[INFERENCE_SERVICE] else []
        if event.kind == SERVICE_ACCOUNT:
            return list(known.users_of(key))
        if event.kind == CONFIG_MAP:
            return list(self.indexes[INFERENCE_SERVICE])
        return []

    def list_all(self) -> list[Key]:
        """A fresh watch: every index rebuilt from what exists, nothing pending; the isvcs listed."""
        self.pending.clear()
        self.indexes.clear()
        for kind, objects in self.objects.items():
            for body in objects.values():
                self.index(WatchEvent(kind, "ADDED", copy_of(body)))
        return list(self.indexes[INFERENCE_SERVICE])

    def known(self, namespace: str = DEFAULT_NAMESPACE) -> Known:
        """What a freshly started operator knows: these indexes, no memory."""
        return Known(Indexes(self.indexes[INFERENCE_SERVICE], self.indexes[KNATIVE_SERVICE],
                             self.indexes[VIRTUAL_SERVICE], self.indexes[SERVICE_ACCOUNT],
                             self.indexes[CONFIG_MAP], self.indexes[DEPLOYMENT], self.indexes[SERVICE],
                             self.indexes[HPA], self.indexes[POD]), namespace)

    def put_config(self, data: dict[str, str], namespace: str = DEFAULT_NAMESPACE) -> None:
        self.put(CONFIG_MAP, {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace}, "data": data})

    def fail(self, method: str, *statuses: int) -> None:
        """The next calls of `method` answer with these HTTP statuses, one each."""
        self.failures[method].extend(statuses)

    def during(self, method: str, action: Callable[[], None]) -> None:
        """Run `action` once, inside the next call of `method` (before it takes effect)."""
        self.hooks[method].append(action)

    def _call(self, method: str) -> None:
        self.calls.append(method)
        if self.hooks[method]:
            self.hooks[method].pop(0)()
        if self.failures[method]:
            status = self.failures[method].pop(0)
            raise ApiException(status=status, reason={409: "Conflict", 410: "Gone"}.get(status, "Error"))

    # --- the Kube protocol ----------------------------------------------------------------------

    def _apply(self, kind: str, desired: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of an object the operator owns entirely, except `status`."""
        live = self.objects[kind].get(key_of(desired))
        applied = copy_of(desired)
        if live is not None:
            applied["metadata"] = {**live["metadata"], **applied["metadata"]}
            if "status" in live:
                applied["status"] = live["status"]
        return self.put(kind, applied)

    def apply_knative_service(self, ksvc: dict[str, Any]) -> dict[str, Any]:
        self._call("apply_knative_service")
        return self._apply(KNATIVE_SERVICE, ksvc)

    def apply_virtual_service(self, virtual_service: dict[str, Any]) -> dict[str, Any]:
        self._call("apply_virtual_service")
        return self._apply(VIRTUAL_SERVICE, virtual_service)

    def delete_virtual_service(self, namespace: str, name: str) -> None:
        self._call("delete_virtual_service")
        self.remove(VIRTUAL_SERVICE, (namespace, name))

    def apply_raw_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        assert kind in RAW_KINDS, kind
        self._call(f"apply_{kind}")
        return self._apply(kind, body)

    def delete_predictor_object(self, kind: str, namespace: str, name: str) -> None:
        self._call(f"delete_{kind}")
        self.remove(kind, (namespace, name))

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self._call("apply_status")
        isvc = self.objects[INFERENCE_SERVICE].get((namespace, name))
        if isvc is None:
            raise ApiException(status=404, reason="Not Found")
        return self.put(INFERENCE_SERVICE, {**isvc, "status": status})

    def secret_summary(self, namespace: str, name: str) -> SecretSummary | None:
        self._call("secret_summary")
        secret = self.objects[SECRET].get((namespace, name))
        return None if secret is None else summarize_secret(secret)

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        self._call("post_event")
        self.events.append((involved["metadata"]["name"], type_, reason, message))

    def writes(self) -> list[str]:
        return [call for call in self.calls if call not in ("secret_summary", "post_event")]
