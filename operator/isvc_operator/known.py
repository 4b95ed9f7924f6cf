"""What the operator knows of the cluster: kopf's indexes, read through what this process wrote since.

kopf's watches keep the indexes (handlers.py): InferenceServices, their Knative Services and VirtualServices,
ServiceAccounts (the names of the Secrets they list) and the operator's ConfigMap. A write of ours reaches an
index only when its watch event arrives; until then a lookup answers with the object as the write returned
it (the newer by resourceVersion wins), so a reconcile never computes from an object older than one it
wrote. A deletion reported by the watch drops that record (`forget`).

The rest is the reconciler's memory, lost on a restart by design (a restart re-applies and writes nothing
that is already as desired): what was last applied to which generation, the Secret summaries per
ServiceAccount version, the isvcs already warned about a missing ConfigMap, the failures in a row.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import CONFIGMAP_NAME, OperatorConfig, parse_config
from .credentials import SecretSummary, service_account_name
from .naming import ISVC_LABEL, predictor_service_name

Key = tuple[str, str]
Index = Mapping[Key, Collection[Any]]  # kopf.Index: key -> the values the indexing function returned
KNATIVE_SERVICE, VIRTUAL_SERVICE, INFERENCE_SERVICE = "ksvc", "virtualservice", "isvc"
#: Raw deployment mode's objects, each named like the ksvc (`{isvc}-predictor-default`).
DEPLOYMENT, SERVICE, HPA = "deployment", "service", "hpa"
RAW_KINDS = (DEPLOYMENT, SERVICE, HPA)
PREDICTOR_KINDS = (KNATIVE_SERVICE, *RAW_KINDS)


def key_of(body: Mapping[str, Any]) -> Key:
    return body["metadata"]["namespace"], body["metadata"]["name"]


def owner_of(kind: str, namespace: str, name: str, labels: Mapping[str, str]) -> Key | None:
    """The isvc a predictor object (ksvc, Deployment, Service, HPA) or VirtualService belongs to, by its
    label and name (our naming)."""
    owner = labels.get(ISVC_LABEL)
    if owner is None:
        return None
    expected = predictor_service_name(owner) if kind in PREDICTOR_KINDS else owner
    return (namespace, owner) if name == expected else None


def _version(body: Mapping[str, Any]) -> int | None:
    try:
        return int(body["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return None


def newer(written: dict[str, Any], indexed: dict[str, Any]) -> bool:
    """Whether the object as written is newer than as indexed (resourceVersions are etcd revisions)."""
    mine, theirs = _version(written), _version(indexed)
    return mine is not None and theirs is not None and mine > theirs


def _one(index: Index, key: Any) -> Any:
    values = index.get(key)
    return next(iter(values), None) if values else None


@dataclass(frozen=True)
class Indexes:
    """kopf's indexes (or, in tests, plain dicts of lists of the same shape)."""

    inferenceservices: Index
    knative_services: Index
    virtual_services: Index
    service_accounts: Index  # (namespace, name) -> ServiceAccountSecrets
    config_maps: Index  # (namespace, name) -> the ConfigMap's data and uid
    deployments: Index = field(default_factory=dict)
    services: Index = field(default_factory=dict)
    hpas: Index = field(default_factory=dict)
    pods: Index = field(default_factory=dict)  # (namespace, isvc name) -> its pods' PodSummary

    def of(self, kind: str) -> Index:
        return {KNATIVE_SERVICE: self.knative_services, VIRTUAL_SERVICE: self.virtual_services,
                DEPLOYMENT: self.deployments, SERVICE: self.services, HPA: self.hpas}[kind]


@dataclass(frozen=True)
class PodSummary:
    """What the operator keeps of a predictor's pod: its name and a failed container (status.pod_failure)."""

    name: str
    failure: dict[str, str] | None


@dataclass(frozen=True)
class ServiceAccountSecrets:
    """What the operator keeps of a ServiceAccount: the Secrets it lists, and its version."""

    resource_version: str | None
    secrets: tuple[str, ...]


@dataclass
class Known:
    indexes: Indexes
    namespace: str  # where the operator's ConfigMap lives
    applied: dict[tuple[str, Key], tuple[dict[str, Any], int | None]] = field(default_factory=dict)
    secret_summaries: dict[Key, tuple[str | None, tuple[SecretSummary, ...]]] = field(default_factory=dict)
    warned_config: dict[str, tuple[str, ...]] = field(default_factory=dict)
    failures: dict[Key, int] = field(default_factory=dict)
    _written: dict[tuple[str, Key], dict[str, Any]] = field(default_factory=dict)
    _locks: dict[Key, threading.Lock] = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _config: tuple[Any, OperatorConfig] | None = None

    # --- lookups ------------------------------------------------------------------------------

    def _newest(self, kind: str, index: Index, key: Key) -> dict[str, Any] | None:
        indexed = _one(index, key)
        with self._guard:
            written = self._written.get((kind, key))
            if written is None:
                return indexed
            if indexed is None or newer(written, indexed):
                return written
            del self._written[(kind, key)]  # the watch has caught up
            return indexed

    def inference_service(self, key: Key) -> dict[str, Any] | None:
        return self._newest(INFERENCE_SERVICE, self.indexes.inferenceservices, key)

    def inference_services(self) -> list[dict[str, Any]]:
        found = (self.inference_service(key) for key in list(self.indexes.inferenceservices))
        return [isvc for isvc in found if isvc is not None]

    def knative_service(self, key: Key) -> dict[str, Any] | None:
        return self._newest(KNATIVE_SERVICE, self.indexes.knative_services, key)

    def virtual_service(self, key: Key) -> dict[str, Any] | None:
        return self._newest(VIRTUAL_SERVICE, self.indexes.virtual_services, key)

    def predictor_object(self, kind: str, key: Key) -> dict[str, Any] | None:
        """A ksvc, Deployment, Service or HPA by (namespace, name)."""
        return self._newest(kind, self.indexes.of(kind), key)

    def pod_failures(self, key: Key) -> list[dict[str, str]]:
        """The failed containers of the isvc `key`'s pods, by pod name."""
        pods = sorted(self.indexes.pods.get(key) or (), key=lambda pod: pod.name)
        return [pod.failure for pod in pods if pod.failure is not None]

    def service_account(self, key: Key) -> ServiceAccountSecrets | None:
        return _one(self.indexes.service_accounts, key)

    def config_map(self) -> dict[str, Any] | None:
        """The operator's ConfigMap as indexed ({"data", "uid"}), None when it does not exist."""
        return _one(self.indexes.config_maps, (self.namespace, CONFIGMAP_NAME))

    @property
    def config(self) -> OperatorConfig:
        config_map = self.config_map()
        data = None if config_map is None else config_map["data"]
        cached = self._config
        if cached is None or cached[0] != data:
            cached = self._config = (data, parse_config(data))
        return cached[1]

    # --- what this process wrote --------------------------------------------------------------

    def wrote(self, kind: str, body: dict[str, Any]) -> None:
        with self._guard:
            self._written[(kind, key_of(body))] = body

    def forget(self, kind: str, key: Key) -> None:
        """The watch reported the object deleted: forget it and what was applied to it."""
        with self._guard:
            self._written.pop((kind, key), None)
            self.applied.pop((kind, key), None)
            if kind == INFERENCE_SERVICE:
                self.failures.pop(key, None)
                self.applied.pop((VIRTUAL_SERVICE, key), None)

    def lock(self, key: Key) -> threading.Lock:
        """Reconciles of one isvc run one at a time: kopf serializes each object's own handlers, but a
        Knative Service's or ServiceAccount's handler reconciles its isvc from another worker."""
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def users_of(self, account: Key) -> Iterator[Key]:
        """The isvcs whose predictor runs as the ServiceAccount `account`."""
        for isvc in self.inference_services():
            key = key_of(isvc)
            if key[0] == account[0] and service_account_name(isvc) == account[1]:
                yield key
