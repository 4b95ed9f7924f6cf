"""ServingStandin: Knative Serving + kubelet for the demo, built on :class:`KnativeStandin`.

KnativeStandin (:mod:`.knative`) already plays Knative's controllers for status: it numbers
revisions ``{ksvc}-00001, -00002, ...`` (a new one whenever ``spec.template`` changes), resolves
``spec.traffic`` and writes the ksvc status. This subclass decides readiness the way the kubelet and
Knative would: every revision gets a pod of local processes (:class:`RevisionPod`), and a revision is
ready when its readiness probe passes. A pod that becomes ready or fails makes the status be written
again. Revisions that are neither the latest nor named in the traffic are scaled to zero (their
processes stopped); one named again is started again. Deleting the ksvc stops its pods.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from e2e.polling import repeating
from e2e.processes import Spawner, free_ports

from .knative import GROUP, PLURAL, VERSION, KnativeStandin
from .pods import PodSpecError, decode_secret_value, plan_pod, pod_ports
from .revisions import FAILED, READY, RevisionPod

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, revision name)


class ServingStandin(KnativeStandin):
    def __init__(self, kubeconfig: Path, workdir: Path, *, cluster_env: Mapping[str, str] | None = None,
                 domain: str = "example.com", python: str = sys.executable,
                 host_env: Mapping[str, str] | None = None, reap_interval: float = 1.0) -> None:
        super().__init__(kubeconfig, domain=domain, revision_ready=self._revision_ready)
        self.core = kubernetes.client.CoreV1Api(self.api.api_client)
        self.workdir = workdir
        self.cluster_env = dict(cluster_env or {})
        self.python = python
        self.host_env = dict(host_env) if host_env is not None else None
        self.pods: dict[Key, RevisionPod] = {}
        self.failures: dict[Key, str] = {}  # revisions that could not even be planned
        self._owner: dict[Key, tuple[str, str, str]] = {}  # revision -> (namespace, ksvc name, ksvc uid)
        self._lock = threading.RLock()  # the same lock for KnativeStandin's bookkeeping and the pods
        self._spawner = Spawner("standin-spawner")
        self._reaper = repeating(self.reap, reap_interval, self._stop, "knative stand-in reaper")

    # -- lifecycle --

    def start(self) -> ServingStandin:
        super().start()
        self._reaper.start()
        return self

    def stop(self) -> None:
        super().stop()
        self._reaper.join(timeout=15)
        with self._lock:
            pods = list(self.pods.values())
            self.pods.clear()
        for pod in pods:
            pod.stop()
        self._spawner.close()

    # -- what the ingress and tests use --

    def pod(self, namespace: str, revision: str) -> RevisionPod | None:
        with self._lock:
            return self.pods.get((namespace, revision))

    def endpoint(self, namespace: str, revision: str) -> str | None:
        """The revision's serving URL on loopback when its pod is ready, else None."""
        pod = self.pod(namespace, revision)
        return pod.url if pod is not None and pod.state == READY else None

    def all_pids(self) -> list[int]:
        with self._lock:
            return [pid for pod in self.pods.values() for pid in pod.pids]

    # -- KnativeStandin hooks --

    def observe(self, ksvc: dict[str, Any], force: bool = False) -> None:
        with self._lock:
            super().observe(ksvc, force)
            self._report_failure(ksvc)

    def _revision_ready(self, ksvc: dict[str, Any], revision: str) -> bool:
        pod = self._ensure_pod(ksvc["metadata"], revision, ksvc.get("spec", {}).get("template") or {})
        return pod is not None and pod.state == READY

    def _traffic(self, ksvc: dict[str, Any], latest_ready: str) -> list[dict[str, Any]]:
        """As KnativeStandin's, plus each tagged target's URL (``http://{tag}-{name}.{ns}.{domain}``)."""
        resolved = super()._traffic(ksvc, latest_ready)
        name, namespace = ksvc["metadata"]["name"], ksvc["metadata"]["namespace"]
        for entry in resolved:
            if entry.get("tag"):
                entry["url"] = f"http://{entry['tag']}-{name}.{namespace}.{self.domain}"
        return resolved

    # -- pods --

    def _ensure_pod(self, metadata: Mapping[str, Any], revision: str, template: Mapping[str, Any]
                    ) -> RevisionPod | None:
        namespace = metadata["namespace"]
        key = (namespace, revision)
        with self._lock:
            if key in self.pods:
                return self.pods[key]
            if key in self.failures:
                return None
            self._owner[key] = (namespace, metadata["name"], metadata["uid"])
            root = self.workdir / namespace / revision
            annotations = (template.get("metadata") or {}).get("annotations") or {}
            container_ports = pod_ports(template.get("spec") or {}, annotations)
            ports = dict(zip(container_ports, free_ports(len(container_ports)), strict=True))
            try:
                plan = plan_pod(template, namespace=namespace, service=metadata["name"], revision=revision,
                                root=root, ports=ports, python=self.python, lookup=self._lookup,
                                cluster_env=self.cluster_env, host_env=self.host_env or os.environ)
            except (PodSpecError, ApiException) as exc:
                self.failures[key] = str(exc)
                log.warning("revision %s/%s cannot run: %s", namespace, revision, exc)
                return None
            pod = RevisionPod(namespace, revision, plan, root, self._spawner, self._pod_changed)
            self.pods[key] = pod
        return pod.start()

    def _lookup(self, kind: str, namespace: str, name: str, key: str) -> str | None:
        try:
            if kind == "secret":
                return decode_secret_value(self.core.read_namespaced_secret(name, namespace).data, key)
            data = self.core.read_namespaced_config_map(name, namespace).data or {}
            return data.get(key)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _pod_changed(self, pod: RevisionPod) -> None:
        owner = self._owner.get((pod.namespace, pod.revision))
        if owner is None:
            return
        namespace, name, _ = owner
        try:
            ksvc = self.api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        self.observe(ksvc, force=True)

    def _report_failure(self, ksvc: dict[str, Any]) -> None:
        """Knative marks the ksvc not ready (False, RevisionFailed) when its latest revision fails."""
        latest = self.latest_revision(ksvc)
        if latest is None:
            return
        key = (ksvc["metadata"]["namespace"], latest)
        pod = self.pods.get(key)
        message = self.failures.get(key) or (pod.message if pod is not None and pod.state == FAILED else None)
        if message is not None:
            self.mark_revision_failed(ksvc, latest, message)

    # -- scale to zero / from zero, deletion --

    def reap(self) -> None:
        """Stop pods of deleted ksvcs and of revisions neither latest nor in the traffic; start pods of
        revisions the traffic names that have none."""
        listing = self.api.list_cluster_custom_object(GROUP, VERSION, PLURAL)
        wanted: dict[Key, tuple[dict[str, Any], str]] = {}  # revision -> (ksvc metadata, template json)
        with self._lock:
            for ksvc in listing["items"]:
                metadata = ksvc["metadata"]
                history = self.revisions.get(metadata["uid"]) or []
                templates = dict(history)
                names = {t.get("revisionName") for t in (ksvc.get("status") or {}).get("traffic") or []}
                if history:
                    names.add(history[-1][0])
                for revision in names:
                    if revision and templates.get(revision):
                        wanted[(metadata["namespace"], revision)] = (metadata, templates[revision])
            doomed = [self.pods.pop(key) for key in list(self.pods) if key not in wanted]
            for key in [k for k in self.failures if k not in wanted]:
                del self.failures[key]
            missing = [(key, value) for key, value in wanted.items() if key not in self.pods
                       and key not in self.failures]
        for pod in doomed:
            log.info("scaling %s/%s to zero", pod.namespace, pod.revision)
            pod.stop()
        for (_, revision), (metadata, template) in missing:
            self._ensure_pod(metadata, revision, json.loads(template))

