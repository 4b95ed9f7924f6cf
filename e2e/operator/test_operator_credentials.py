"""Storage credentials from the predictor's ServiceAccount, on the local control plane.

An isvc whose ServiceAccount lists an S3 Secret and a GCS Secret renders the documented env and volume
in the storage-initializer only; changing the ServiceAccount re-renders; no secret value (nor its base64
form) appears in any status, event or operator log line.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from e2e.inference_services import ksvc_of, ready_isvc
from e2e.installation import OperatorProcess
from e2e.localkube import Kubectl
from e2e.operator.conftest import wait_for
from e2e.standin.knative import KnativeStandin

ACCESS_KEY = "AKIAVALUEMUSTNOTLEAK7"
SECRET_KEY = "wJalrXUtnFEMI-secret-value-must-not-leak"
GCS_JSON = json.dumps({"type": "service_account", "client_email": "loader@example.iam.gserviceaccount.com",
                       "private_key": "-----BEGIN PRIVATE KEY-----\nGCSKEYMUSTNOTLEAK\n-----END"})
VALUES = [ACCESS_KEY, SECRET_KEY, "GCSKEYMUSTNOTLEAK"]


def secret(name: str, data: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "annotations": annotations or {}}, "type": "Opaque",
            "data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                   "items": list(objects)}))


def init_and_main(kubectl: Kubectl, namespace: str) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
    pod = ksvc_of(kubectl, namespace)["spec"]["template"]["spec"]
    return pod["initContainers"][0], pod["containers"][0], pod["volumes"]


def test_service_account_secrets_render_into_the_storage_initializer_only_and_never_leak(
    operator: OperatorProcess, knative: KnativeStandin, kubectl: Kubectl, namespace: str
) -> None:
    log_offset = len(operator.log())
    apply(kubectl, namespace,
          secret("s3creds", {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}, {
              "serving.kubeflow.org/s3-endpoint": "minio.storage:9000",
              "serving.kubeflow.org/s3-usehttps": "0",
              "serving.kubeflow.org/s3-region": "eu-west-1",
              "serving.kubeflow.org/s3-verifyssl": "0"}),
          secret("gcscreds", {"gcloud-application-credentials.json": GCS_JSON}),
          secret("unrelated", {"token": "UNRELATEDMUSTNOTLEAK"}),
          {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "models"},
           "secrets": [{"name": n} for n in ("unrelated", "s3creds", "gcscreds", "missing")]},
          {"apiVersion": "serving.kubeflow.org/v1beta1", "kind": "InferenceService",
           "metadata": {"name": "torchserve"},
           "spec": {"predictor": {"serviceAccountName": "models",
                                  "pytorch": {"storageUri": "s3://models/mnist"}}}})
    wait_for(lambda: ready_isvc(kubectl, namespace), timeout=60, what="READY True")

    init, main, volumes = init_and_main(kubectl, namespace)
    assert init["env"] == [
        {"name": "AWS_ACCESS_KEY_ID",
         "valueFrom": {"secretKeyRef": {"name": "s3creds", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY",
         "valueFrom": {"secretKeyRef": {"name": "s3creds", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "S3_ENDPOINT", "value": "minio.storage:9000"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio.storage:9000"},
        {"name": "S3_USE_HTTPS", "value": "0"},
        {"name": "AWS_REGION", "value": "eu-west-1"},
        {"name": "S3_VERIFY_SSL", "value": "0"},
        {"name": "GOOGLE_APPLICATION_CREDENTIALS",
         "value": "/var/secrets/gcloud-application-credentials.json"},
    ]
    assert {"name": "user-gcp-sa", "mountPath": "/var/secrets/", "readOnly": True} in init["volumeMounts"]
    assert {"name": "user-gcp-sa", "secret": {"secretName": "gcscreds"}} in volumes
    assert [m["name"] for m in main["volumeMounts"]] == ["kfserving-provision-location"]
    assert not any(e["name"].startswith(("AWS_", "S3_", "GOOGLE_")) for e in main.get("env", []))
    assert "secretKeyRef" not in json.dumps(main)

    # The ServiceAccount is watched: dropping the GCS secret re-renders the init container.
    apply(kubectl, namespace, {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "models"},
                               "secrets": [{"name": "s3creds"}]})

    def without_gcs() -> bool:
        init, _, volumes = init_and_main(kubectl, namespace)
        return all(e["name"] != "GOOGLE_APPLICATION_CREDENTIALS" for e in init["env"]) and \
            all(v["name"] != "user-gcp-sa" for v in volumes)

    wait_for(without_gcs, what="the re-render without the GCS secret")
    wait_for(lambda: ready_isvc(kubectl, namespace), timeout=60, what="READY True again")

    status = json.dumps(kubectl.get("-n", namespace, "isvc", "torchserve")["status"])
    events = json.dumps(kubectl.get("-n", namespace, "events"))
    ksvc_status = json.dumps(ksvc_of(kubectl, namespace).get("status"))
    log = operator.log()[log_offset:]
    assert "reconciled" in log  # the captured log covers this test's reconciles
    gcs_file = base64.b64encode(GCS_JSON.encode()).decode()
    for value in [*VALUES, "UNRELATEDMUSTNOTLEAK"]:
        for form in (value, base64.b64encode(value.encode()).decode(), gcs_file[:40]):
            for where, text in (("status", status), ("events", events), ("ksvc status", ksvc_status),
                                ("operator log", log)):
                assert form not in text, f"a secret value leaked into the {where}"
