"""The CRD and the install manifest, read as data: KFServing's API surface and least privilege."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def crd() -> dict[str, Any]:
    [definition] = documents(ROOT / "crds" / "serving.kubeflow.org_inferenceservices.yaml")
    return definition


def test_crd_is_kfservings_v1beta1_inferenceservice_with_short_name_and_status() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "serving.kubeflow.org" and spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == "InferenceService" and spec["names"]["plural"] == "inferenceservices"
    assert spec["names"]["shortNames"] == ["isvc"]
    [version] = spec["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns_are_exactly_kfservings() -> None:
    [version] = crd()["spec"]["versions"]
    columns = [(c["name"], c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]]
    assert columns == [
        ("URL", "string", ".status.url"),
        ("Ready", "string", ".status.conditions[?(@.type=='Ready')].status"),
        ("Prev", "integer", ".status.components.predictor.traffic[?(@.tag=='prev')].percent"),
        ("Latest", "integer", ".status.components.predictor.traffic[?(@.latestRevision==true)].percent"),
        ("PrevRolledoutRevision", "string",
         ".status.components.predictor.traffic[?(@.tag=='prev')].revisionName"),
        ("LatestReadyRevision", "string",
         ".status.components.predictor.traffic[?(@.latestRevision==true)].revisionName"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]


def _rules(schema: Any, path: str = "") -> list[tuple[str, str]]:
    found = []
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            found.append((path, rule["message"]))
        for key, value in schema.get("properties", {}).items():
            found += _rules(value, f"{path}.{key}".lstrip("."))
    return found


def test_every_cel_rule_message_names_its_field() -> None:
    [version] = crd()["spec"]["versions"]
    rules = _rules(version["schema"]["openAPIV3Schema"])
    assert len(rules) >= 7
    for path, message in rules:
        named = message.split(" ", 1)[0].rstrip(":")
        assert named.startswith(("metadata.", "spec.")), message
        assert path.startswith(named) or named.startswith(path) or path == "", (path, message)


DELETABLE = [(["networking.istio.io"], ["virtualservices"]), (["serving.knative.dev"], ["services"]),
             (["apps"], ["deployments"]), ([""], ["services"]),
             (["autoscaling"], ["horizontalpodautoscalers"])]


def test_cluster_role_has_no_wildcards_reads_secrets_by_name_only_and_deletes_only_what_it_creates() -> None:
    manifests = documents(ROOT / "deploy" / "operator.yaml")
    rules = [rule for doc in manifests if doc["kind"] in ("ClusterRole", "Role") for rule in doc["rules"]]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
        if "secrets" in rule["resources"]:
            assert rule["resources"] == ["secrets"] and rule["verbs"] == ["get"], rule
        assert "deletecollection" not in rule["verbs"], rule
        if "delete" in rule["verbs"]:
            assert "create" in rule["verbs"] and (rule["apiGroups"], rule["resources"]) in DELETABLE, rule
        if rule["resources"] == ["pods"]:
            assert rule["verbs"] == ["get", "list", "watch"], rule


def test_leader_election_may_only_read_and_update_its_own_lease_in_the_operators_namespace() -> None:
    manifests = documents(ROOT / "deploy" / "operator.yaml")
    lease_rules = [(doc["kind"], doc["metadata"].get("namespace"), rule) for doc in manifests
                   if doc["kind"] in ("ClusterRole", "Role") for rule in doc["rules"]
                   if "leases" in rule["resources"]]
    assert lease_rules == [
        ("Role", "torch-isvc-system", {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                       "resourceNames": ["torch-isvc-operator"], "verbs": ["get", "update"]}),
        ("Role", "torch-isvc-system", {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                                       "verbs": ["create"]}),
    ]


def test_operator_deployment_runs_two_non_root_read_only_replicas_with_kopf_probes() -> None:
    [deployment] = [d for d in documents(ROOT / "deploy" / "operator.yaml") if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2  # one acts, the other stands by (leader election)
    pod = deployment["spec"]["template"]["spec"]
    [main] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert main["securityContext"]["readOnlyRootFilesystem"] is True
    assert main["securityContext"]["allowPrivilegeEscalation"] is False
    assert main["resources"]["limits"] and main["resources"]["requests"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert main["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    env = {item["name"]: item.get("value") for item in main["env"]}
    assert env["ISVC_LIVENESS_ENDPOINT"].endswith(":8080/healthz")
    assert pod["serviceAccountName"] == "torch-isvc-operator"


def _preserved(schema: Any, path: str = "") -> list[str]:
    """Paths of the schema's objects that keep unknown fields (items as `[]`)."""
    if not isinstance(schema, dict):
        return []
    found = [path] if schema.get("x-kubernetes-preserve-unknown-fields") else []
    for key, value in schema.get("properties", {}).items():
        found += _preserved(value, f"{path}.{key}".lstrip("."))
    return found + _preserved(schema.get("items"), f"{path}[]")


def test_the_spec_keeps_unknown_fields_only_where_refused_or_kubernetes_validates_them() -> None:
    [version] = crd()["spec"]["versions"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    refused = [f"predictor.{name}" for name in
               ("tensorflow", "sklearn", "xgboost", "onnx", "triton", "pmml", "lightgbm")]
    affinity = [f"predictor.affinity.{part}" for part in ("nodeAffinity", "podAffinity", "podAntiAffinity")]
    assert sorted(_preserved(spec)) == sorted(refused + affinity)
    predictor = spec["properties"]["predictor"]
    rules = " ".join(rule["rule"] for rule in predictor["x-kubernetes-validations"])
    assert all(f"has(self.{name.split('.')[1]})" in rules for name in refused)


def test_logger_and_batcher_are_kfservings_fields_bounded_as_the_configmaps_defaults() -> None:
    from isvc_operator.config import BATCHER_BOUNDS

    [version] = crd()["spec"]["versions"]
    predictor = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["predictor"]
    batcher, logger = predictor["properties"]["batcher"], predictor["properties"]["logger"]
    bounds = {name: (field["minimum"], field["maximum"]) for name, field in batcher["properties"].items()}
    assert bounds == BATCHER_BOUNDS == {
        "maxBatchSize": (1, 1024), "maxLatency": (1, 60000), "timeout": (1, 3600)}
    assert set(logger["properties"]) == {"url", "mode"}
    assert logger["properties"]["mode"]["enum"] == ["all", "request", "response"]
