"""Names and labels of the objects derived from an InferenceService (KFServing's conventions)."""

from __future__ import annotations

GROUP = "serving.kubeflow.org"
VERSION = "v1beta1"
PLURAL = "inferenceservices"
KIND = "InferenceService"

KNATIVE_GROUP = "serving.knative.dev"
KNATIVE_VERSION = "v1"
KNATIVE_PLURAL = "services"

ISVC_LABEL = "serving.kubeflow.org/inferenceservice"
COMPONENT_LABEL = "component"
PREDICTOR = "predictor"

FIELD_MANAGER = "torch-isvc-operator"


def predictor_service_name(isvc_name: str) -> str:
    return f"{isvc_name}-{PREDICTOR}-default"


def predictor_labels(isvc_name: str, user_labels: dict[str, str] | None = None) -> dict[str, str]:
    """The isvc's own labels plus the two that identify the predictor (ours win)."""
    labels = dict(user_labels or {})
    labels[ISVC_LABEL] = isvc_name
    labels[COMPONENT_LABEL] = PREDICTOR
    return labels


def owner_reference(isvc_name: str, uid: str) -> dict[str, object]:
    """Makes the InferenceService the controller of an object: deleting it deletes the object."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": isvc_name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
