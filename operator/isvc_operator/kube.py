"""The few Kubernetes API calls the reconciler makes: the `Kube` protocol and `KubeApi`, its implementation
on the kubernetes client (server-side apply with the operator's field manager).

Reads of the objects the operator follows (InferenceServices, Knative Services, VirtualServices,
ServiceAccounts, its ConfigMap) are not here: kopf's watches keep them in indexes (handlers.py). Errors are
the client's `ApiException` (`.status` is the HTTP status); the reconciler decides what is worth a retry.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Protocol

import kubernetes
from kubernetes.client.exceptions import ApiException

from .credentials import SecretSummary, summarize_secret
from .ingress import ISTIO_GROUP, ISTIO_PLURAL, ISTIO_VERSION
from .known import DEPLOYMENT, HPA, KNATIVE_SERVICE, SERVICE
from .naming import (
    FIELD_MANAGER,
    GROUP,
    KIND,
    KNATIVE_GROUP,
    KNATIVE_PLURAL,
    KNATIVE_VERSION,
    PLURAL,
    VERSION,
)

APPLY = "application/apply-patch+yaml"


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_client() -> kubernetes.client.ApiClient:
    """In a pod: its ServiceAccount. Elsewhere: $KUBECONFIG (or ~/.kube/config)."""
    configuration = kubernetes.client.Configuration()
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        # Read now, not when the kubernetes package was imported (its default is fixed then).
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"),
                                           client_configuration=configuration)
    configuration.connection_pool_maxsize = 16
    return kubernetes.client.ApiClient(configuration)


class Kube(Protocol):
    """What the reconciler writes (and the Secrets it reads by name). Every call may raise `ApiException`."""

    def apply_knative_service(self, ksvc: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; the Knative Service as stored afterwards."""
        ...

    def apply_virtual_service(self, virtual_service: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; the VirtualService as stored afterwards."""
        ...

    def delete_virtual_service(self, namespace: str, name: str) -> None:
        """Delete it; gone already is fine."""
        ...

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of the InferenceService's status subresource; the isvc as stored afterwards."""
        ...

    def apply_raw_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of a raw-mode predictor object (`kind`: deployment, service, hpa)."""
        ...

    def delete_predictor_object(self, kind: str, namespace: str, name: str) -> None:
        """Delete the other mode's predictor object (`kind`: ksvc, deployment, service, hpa); gone is fine."""
        ...

    def secret_summary(self, namespace: str, name: str) -> SecretSummary | None:
        """A Secret's key names and S3 annotations, never its values; None when it does not exist."""
        ...

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about `involved`."""
        ...


class KubeApi:
    """`Kube` on the kubernetes client."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.autoscaling = kubernetes.client.AutoscalingV2Api(client)

    def apply_knative_service(self, ksvc: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; the apiserver writes nothing when our fields are already as desired."""
        metadata = ksvc["metadata"]
        applied = self.custom.patch_namespaced_custom_object(
            KNATIVE_GROUP, KNATIVE_VERSION, metadata["namespace"], KNATIVE_PLURAL, metadata["name"], ksvc,
            field_manager=FIELD_MANAGER, force=True, _content_type=APPLY,
        )
        if applied is None:  # the client maps only 200 for PATCH; an apply that created answers 201
            applied = self.get_knative_service(metadata["namespace"], metadata["name"])
        if applied is None:
            raise ApiException(status=404, reason="the Knative Service vanished right after apply")
        return applied

    def get_knative_service(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.custom.get_namespaced_custom_object(
                KNATIVE_GROUP, KNATIVE_VERSION, namespace, KNATIVE_PLURAL, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def apply_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND,
                "metadata": {"name": name, "namespace": namespace}, "status": status}
        written = self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, body,
            field_manager=FIELD_MANAGER, force=True, _content_type=APPLY,
        )
        return written or {"status": status}

    def apply_virtual_service(self, virtual_service: dict[str, Any]) -> dict[str, Any]:
        metadata = virtual_service["metadata"]
        applied = self.custom.patch_namespaced_custom_object(
            ISTIO_GROUP, ISTIO_VERSION, metadata["namespace"], ISTIO_PLURAL, metadata["name"],
            virtual_service,
            field_manager=FIELD_MANAGER, force=True, _content_type=APPLY,
        )
        if applied is None:  # 201 from an apply that created it
            applied = self.custom.get_namespaced_custom_object(
                ISTIO_GROUP, ISTIO_VERSION, metadata["namespace"], ISTIO_PLURAL, metadata["name"])
        return applied


    def delete_virtual_service(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                ISTIO_GROUP, ISTIO_VERSION, namespace, ISTIO_PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _raw_calls(self, kind: str) -> tuple[Any, Any]:
        """(patch, delete) of a raw-mode kind, each answering the raw HTTP response."""
        calls = {
            DEPLOYMENT: (self.apps.patch_namespaced_deployment, self.apps.delete_namespaced_deployment),
            SERVICE: (self.core.patch_namespaced_service, self.core.delete_namespaced_service),
            HPA: (self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                  self.autoscaling.delete_namespaced_horizontal_pod_autoscaler),
        }
        return calls[kind]

    def apply_raw_object(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply; the object as stored afterwards, as plain JSON (not the client's models)."""
        metadata = body["metadata"]
        patch = self._raw_calls(kind)[0]
        response = patch(metadata["name"], metadata["namespace"], body, field_manager=FIELD_MANAGER,
                         force=True, _content_type=APPLY, _preload_content=False)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    def delete_predictor_object(self, kind: str, namespace: str, name: str) -> None:
        try:
            if kind == KNATIVE_SERVICE:
                self.custom.delete_namespaced_custom_object(
                    KNATIVE_GROUP, KNATIVE_VERSION, namespace, KNATIVE_PLURAL, name)
            else:
                self._raw_calls(kind)[1](name, namespace, _preload_content=False).release_conn()
        except ApiException as exc:
            if exc.status != 404:
                raise

    def secret_summary(self, namespace: str, name: str) -> SecretSummary | None:
        """A Secret's key names and S3 annotations (`get` by name; the values are dropped right here)."""
        try:
            response = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        try:
            return summarize_secret(json.loads(response.data))
        finally:
            response.release_conn()

    def post_event(self, involved: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about an object (messages never carry secrets: they come from specs/status)."""
        metadata = involved["metadata"]
        stamp = now()
        self.core.create_namespaced_event(metadata["namespace"], {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "v1"), "kind": involved.get("kind", ""),
                "name": metadata["name"], "namespace": metadata["namespace"], "uid": metadata.get("uid", ""),
            },
            "type": type_, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER, "reportingInstance": os.environ.get("HOSTNAME", "local"),
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        })
