"""NodeServingStandin: Knative Serving's controllers whose revisions run as real pods on a real kubelet.

The third strength of the stand-in (see README.md): :class:`KnativeStandin` still numbers the revisions,
resolves the traffic and writes the Knative Service's status; what a revision *is* follows what Knative's
revision reconciler creates (knative.dev/serving v0.42.2, read in the Go module cache):

- a Deployment ``{revision}-deployment`` (``pkg/reconciler/revision/resources/names/names.go``,
  ``Deployment``) of the revision's pod template, labelled ``serving.knative.dev/service``,
  ``/configuration``, ``/revision`` (and ``app: {revision}`` when the template has no ``app`` label;
  ``resources/meta.go``, ``makeLabels``), selecting on its revision label, rolled out with
  ``maxUnavailable: 0`` (``resources/deploy.go``, ``MakeDeployment``);
- its serving container (the one with ports, or the only one) as ``makeServingContainer`` leaves it: its one
  port renamed ``user-port`` (the ksvc's first port, default 8080), ``PORT``, ``K_REVISION``,
  ``K_CONFIGURATION`` and ``K_SERVICE`` added to its env (``resources/env_var.go``); the container keeps the
  name the ksvc gave it;
- a Service ``{revision}-private`` selecting the revision's pods, port 80 → ``user-port``: Knative's
  serverless service's private Service (``pkg/reconciler/serverlessservice/resources/services.go``,
  ``MakePrivateService``), which the ingress reaches through kube-proxy at its ClusterIP.

Collapsed or left out, and why:

- Knative's chain of owners is ksvc → Configuration → Revision → Deployment; no Configuration or Revision
  objects exist here, so the Deployment and the Service are owned (controller reference) by the ksvc itself:
  deleting the ksvc still garbage-collects them (kube-controller-manager's garbage collector).
- **No queue-proxy.** Knative adds the queue-proxy sidecar and moves the user container's readiness probe
  into it. Here the user container keeps its own readinessProbe (``httpGet`` or ``grpc``, run by the
  kubelet; a TCP probe of ``user-port`` when it has none, Knative's default), and a revision is ready when
  one of its pods is Ready as the kubelet reports it. A probe without ``periodSeconds`` is one the
  queue-proxy polls every 50 ms until it succeeds (``IsAggressive`` in knative.dev/serving
  ``pkg/queue/readiness/probe.go``); the kubelet's shortest period, 1 s, stands in for that.
- **No autoscaler.** Each routed revision runs one replica. Revisions that are neither the latest created,
  the latest ready nor named in ``status.traffic`` are scaled to 0 replicas (Knative's autoscaler scales an
  unrouted revision to zero) and back to 1 when named again.

A failing container (a bad storageUri fails the storage-initializer init container) makes the ksvc
``Ready: False`` with reason ``RevisionFailed`` and ``Container failed with: <termination message>``, as
Knative's revision reconciler words it (``pkg/reconciler/revision/reconcile_resources.go`` with
``pkg/apis/serving/v1/revision_lifecycle.go``, ``RevisionContainerExitingMessage``).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from e2e.polling import repeating

from .knative import GROUP, PLURAL, VERSION, KnativeStandin

log = logging.getLogger(__name__)

SERVICE_LABEL = "serving.knative.dev/service"
CONFIGURATION_LABEL = "serving.knative.dev/configuration"
REVISION_LABEL = "serving.knative.dev/revision"
APP_LABEL = "app"
USER_PORT_NAME = "user-port"
DEFAULT_USER_PORT = 8080
SERVICE_PORT = 80
DEPLOYMENT_SUFFIX = "-deployment"
PRIVATE_SUFFIX = "-private"
AGGRESSIVE_PROBE_PERIOD = 1  # seconds: the kubelet's shortest, for the queue-proxy's 50 ms polling
PENDING, READY, FAILED = "Pending", "Ready", "Failed"

Key = tuple[str, str]  # (namespace, revision name)
Manifest = dict[str, Any]


def deployment_name(revision: str) -> str:
    return f"{revision}{DEPLOYMENT_SUFFIX}"


def service_name(revision: str) -> str:
    return f"{revision}{PRIVATE_SUFFIX}"


def serving_container_index(spec: Mapping[str, Any]) -> int:
    """The container Knative serves: the one with ports, else the first (``BuildUserContainers``)."""
    containers = spec.get("containers") or []
    return next((i for i, c in enumerate(containers) if c.get("ports")), 0)


def user_port(spec: Mapping[str, Any]) -> tuple[int, str]:
    """The serving container's first port and its name (``getUserPort``; 8080 when it declares none)."""
    containers = spec.get("containers") or [{}]
    ports = containers[serving_container_index(spec)].get("ports") or []
    if ports and ports[0].get("containerPort"):
        return int(ports[0]["containerPort"]), str(ports[0].get("name") or "")
    return DEFAULT_USER_PORT, ""


def owner_reference(ksvc: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Service", "name": ksvc["metadata"]["name"],
            "uid": ksvc["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def revision_labels(ksvc_name: str, revision: str, template: Mapping[str, Any]) -> dict[str, str]:
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update({SERVICE_LABEL: ksvc_name, CONFIGURATION_LABEL: ksvc_name, REVISION_LABEL: revision})
    labels.setdefault(APP_LABEL, revision)
    return labels


def serving_container(container: Mapping[str, Any], ksvc_name: str, revision: str, port: int
                      ) -> dict[str, Any]:
    """``makeServingContainer`` without the queue-proxy: one port ``user-port``, Knative's env, and the
    container's own readiness probe (a TCP one on the user port when it has none)."""
    serving = copy.deepcopy(dict(container))
    serving["ports"] = [{"name": USER_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
    serving["env"] = [*(serving.get("env") or []), {"name": "PORT", "value": str(port)},
                      {"name": "K_REVISION", "value": revision},
                      {"name": "K_CONFIGURATION", "value": ksvc_name},
                      {"name": "K_SERVICE", "value": ksvc_name}]
    if not serving.get("readinessProbe"):
        serving["readinessProbe"] = {"tcpSocket": {"port": port}}
    if not serving["readinessProbe"].get("periodSeconds"):
        serving["readinessProbe"]["periodSeconds"] = AGGRESSIVE_PROBE_PERIOD
    return serving


def revision_deployment(ksvc: Mapping[str, Any], revision: str, template: Mapping[str, Any],
                        replicas: int = 1) -> Manifest:
    """The Deployment Knative's revision reconciler would make for ``revision`` of ``ksvc``."""
    name, namespace = ksvc["metadata"]["name"], ksvc["metadata"]["namespace"]
    spec = copy.deepcopy(dict(template.get("spec") or {}))
    port, _ = user_port(spec)
    index = serving_container_index(spec)
    containers = list(spec.get("containers") or [])
    if not containers:
        raise ValueError(f"revision {revision}: the template has no containers")
    containers[index] = serving_container(containers[index], name, revision, port)
    spec["containers"] = containers
    for knative_only in ("containerConcurrency", "timeoutSeconds", "responseStartTimeoutSeconds",
                         "idleTimeoutSeconds"):
        spec.pop(knative_only, None)
    if (template.get("spec") or {}).get("timeoutSeconds") is not None:
        spec["terminationGracePeriodSeconds"] = template["spec"]["timeoutSeconds"]  # BuildPodSpec
    labels = revision_labels(name, revision, template)
    annotations = dict((template.get("metadata") or {}).get("annotations") or {})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": deployment_name(revision), "namespace": namespace, "labels": labels,
                     "annotations": annotations, "ownerReferences": [owner_reference(ksvc)]},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {REVISION_LABEL: revision}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec},
        },
    }


def revision_service(ksvc: Mapping[str, Any], revision: str, template: Mapping[str, Any]) -> Manifest:
    """The revision's private Service: port 80 to the pods' ``user-port`` (``http2``/h2c for gRPC)."""
    name, namespace = ksvc["metadata"]["name"], ksvc["metadata"]["namespace"]
    _, port_name = user_port(template.get("spec") or {})
    h2c = port_name == "h2c"
    port: dict[str, Any] = {"name": "http2" if h2c else "http", "protocol": "TCP", "port": SERVICE_PORT,
                            "targetPort": USER_PORT_NAME}
    if h2c:
        port["appProtocol"] = "kubernetes.io/h2c"
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": service_name(revision), "namespace": namespace,
                     "labels": revision_labels(name, revision, template),
                     "ownerReferences": [owner_reference(ksvc)]},
        "spec": {"selector": {REVISION_LABEL: revision}, "ports": [port]},
    }


def _live(pods: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def container_failure(pods: Iterable[Mapping[str, Any]]) -> str | None:
    """The termination message of a container (init or not) of ``pods`` that exited with an error, now or
    before its last restart; None when none did. Knative reads ``LastTerminationState.Terminated``."""
    for pod in _live(pods):
        status = pod.get("status") or {}
        statuses = [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
        for container in statuses:
            for state in (container.get("state") or {}, container.get("lastState") or {}):
                terminated = state.get("terminated")
                if terminated and terminated.get("exitCode", 0) != 0:
                    message = (terminated.get("message") or terminated.get("reason") or "").strip()
                    return (f"Container failed with: container {container['name']} exited with "
                            f"{terminated['exitCode']}: {message}")
    return None


def pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def revision_state(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """(Ready | Failed | Pending, message) of a revision from its pods as the kubelet reports them."""
    live = _live(pods)
    if any(pod_ready(p) for p in live):
        return READY, ""
    failure = container_failure(live)
    return (FAILED, failure) if failure else (PENDING, "")


def wanted_revisions(ksvc: Mapping[str, Any], latest: str | None) -> set[str]:
    """Revisions that keep a replica: the latest created, the latest ready and those in status.traffic."""
    status = ksvc.get("status") or {}
    names = {latest, status.get("latestReadyRevisionName"),
             *(t.get("revisionName") for t in status.get("traffic") or [])}
    return {n for n in names if n}


class NodeServingStandin(KnativeStandin):
    """Knative's controllers for status, with every revision a Deployment and a Service on the cluster of
    ``kubeconfig`` whose pods a real kubelet runs. ``endpoint`` gives the ingress the revision's Service
    (``http://{clusterIP}:80``) once a pod is Ready; the caller makes ClusterIPs reachable from here."""

    def __init__(self, kubeconfig: Path, domain: str = "example.com", sync_interval: float = 0.5) -> None:
        super().__init__(kubeconfig, domain=domain, revision_ready=self._revision_ready)
        self.apps = kubernetes.client.AppsV1Api(self.api.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api.api_client)
        self.states: dict[Key, tuple[str, str]] = {}
        self.addresses: dict[Key, str] = {}  # revision -> its Service's ClusterIP
        self.scaled: list[tuple[str, int]] = []  # ("namespace/revision", replicas) in the order applied
        self._made: set[Key] = set()
        self._sync = repeating(self.sync, sync_interval, self._stop, "knative node stand-in")

    def start(self) -> NodeServingStandin:
        super().start()
        self._sync.start()
        return self

    def stop(self) -> None:
        super().stop()
        self._sync.join(timeout=15)

    # -- what the ingress uses --

    def endpoint(self, namespace: str, revision: str) -> str | None:
        key = (namespace, revision)
        with self._lock:
            ready = self.states.get(key, (PENDING, ""))[0] == READY
            address = self.addresses.get(key)
        return f"http://{address}:{SERVICE_PORT}" if ready and address else None

    # -- KnativeStandin hooks --

    def observe(self, ksvc: dict[str, Any], force: bool = False) -> None:
        with self._lock:
            super().observe(ksvc, force)
            latest = self.latest_revision(ksvc)
            if latest is None:
                return
            state, message = self.states.get((ksvc["metadata"]["namespace"], latest), (PENDING, ""))
            if state == FAILED:
                self.mark_revision_failed(ksvc, latest, message)

    def _revision_ready(self, ksvc: dict[str, Any], revision: str) -> bool:
        key = (ksvc["metadata"]["namespace"], revision)
        if key not in self._made:
            history = dict(self.revisions.get(ksvc["metadata"]["uid"]) or [])
            template = json.loads(history.get(revision) or "{}")
            self._make(ksvc, revision, template)
        return self.states.get(key, (PENDING, ""))[0] == READY

    def _make(self, ksvc: dict[str, Any], revision: str, template: dict[str, Any]) -> None:
        namespace = ksvc["metadata"]["namespace"]
        try:
            deployment = revision_deployment(ksvc, revision, template)
        except ValueError as exc:
            self.states[(namespace, revision)] = (FAILED, str(exc))
            return
        service = revision_service(ksvc, revision, template)
        for create, manifest in ((self.apps.create_namespaced_deployment, deployment),
                                 (self.core.create_namespaced_service, service)):
            try:
                create(namespace, manifest)
            except ApiException as exc:
                if exc.status != 409:  # already made (a restarted stand-in)
                    raise
        made = self.core.read_namespaced_service(service_name(revision), namespace)
        self.addresses[(namespace, revision)] = made.spec.cluster_ip
        self._made.add((namespace, revision))
        log.info("revision %s/%s: Deployment %s and Service %s made", namespace, revision,
                 deployment_name(revision), service_name(revision))

    # -- the revisions' pods, and scale to zero / from zero --

    def sync(self) -> None:
        """Read every revision's pods: a revision that became ready or failed has its ksvc observed again;
        then scale each ksvc's revisions to what its traffic needs."""
        by_revision: dict[Key, list[dict[str, Any]]] = {}
        for pod in _listed(self.core.list_pod_for_all_namespaces):
            key = (pod["metadata"]["namespace"], pod["metadata"]["labels"][REVISION_LABEL])
            by_revision.setdefault(key, []).append(pod)
        ksvcs = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)["items"]
        deployments = _listed(self.apps.list_deployment_for_all_namespaces)
        changed: set[str] = set()
        with self._lock:
            for key in self._made | set(by_revision):
                state = revision_state(by_revision.get(key, []))
                if state != self.states.get(key, (PENDING, "")) and not (
                        state[0] == PENDING and key not in by_revision):
                    log.info("revision %s/%s: %s %s", *key, *state)
                    self.states[key] = state
                    changed.add(key[0] + "/" + key[1].rsplit("-", 1)[0])
        for ksvc in ksvcs:
            metadata = ksvc["metadata"]
            if f"{metadata['namespace']}/{metadata['name']}" in changed:
                self.observe(ksvc, force=True)
        self._scale(ksvcs, deployments)

    def _scale(self, ksvcs: list[dict[str, Any]], deployments: list[dict[str, Any]]) -> None:
        wanted: dict[str, set[str]] = {}  # ksvc uid -> revisions that keep a replica
        for ksvc in ksvcs:
            with self._lock:
                wanted[ksvc["metadata"]["uid"]] = wanted_revisions(ksvc, self.latest_revision(ksvc))
        for deployment in deployments:
            metadata = deployment["metadata"]
            owner = next((o["uid"] for o in metadata.get("ownerReferences") or [] if o["kind"] == "Service"),
                         None)
            if owner not in wanted or metadata.get("deletionTimestamp"):
                continue
            namespace, revision = metadata["namespace"], metadata["labels"][REVISION_LABEL]
            replicas = 1 if revision in wanted[owner] else 0
            if deployment["spec"].get("replicas") != replicas:
                self.apps.patch_namespaced_deployment_scale(
                    metadata["name"], namespace, {"spec": {"replicas": replicas}})
                with self._lock:
                    self.scaled.append((f"{namespace}/{revision}", replicas))
                    if replicas == 0:
                        self.states[(namespace, revision)] = (PENDING, "")
                log.info("revision %s/%s scaled to %d", namespace, revision, replicas)


def _listed(list_call: Any) -> list[dict[str, Any]]:
    """The items of a list call for every object with a revision label, as the API's JSON (camelCase)."""
    answer = list_call(label_selector=REVISION_LABEL, _preload_content=False)
    return json.loads(answer.data)["items"]
