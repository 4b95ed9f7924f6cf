"""The demo's stand-ins as pure functions (no cluster): how a rendered pod template becomes processes,
and how the ingress routes a Host. The Knative Service used is the operator's golden rendering."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from dockerfile_parse import DockerfileParser

from e2e import REPO_ROOT
from e2e.demo import own_sample_request, shape
from e2e.standin.pods import (
    IMAGE_ENTRYPOINTS,
    PodSpecError,
    container_argv,
    image_target,
    map_path,
    plan_pod,
    pod_ports,
    resolve_env,
)
from e2e.standin.routing import Backend, build_routes, normalise_host, pick

GOLDEN = REPO_ROOT / "tests" / "operator" / "golden"
PY = "/venv/bin/python"


def golden(name: str) -> dict[str, Any]:
    return yaml.safe_load((GOLDEN / f"{name}.ksvc.yaml").read_text())


def no_secrets(kind: str, namespace: str, name: str, key: str) -> str | None:
    return None


def plan_for(ksvc: dict[str, Any], tmp_path: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    template = ksvc["spec"]["template"]
    ports = pod_ports(template["spec"], template["metadata"].get("annotations") or {})
    mapping = {port: 40000 + i for i, port in enumerate(ports)}
    options = {"namespace": "kfserving-test", "service": ksvc["metadata"]["name"],
               "revision": f"{ksvc['metadata']['name']}-00001", "root": tmp_path, "ports": mapping,
               "python": PY, "lookup": no_secrets,
               "cluster_env": {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9023"},
               "host_env": {"PATH": "/usr/bin", "HOME": "/home/u", "KUBECONFIG": "/admin", "AWS_SECRET": "x"}}
    options.update(kwargs)
    return plan_pod(template, **options), mapping


# --- containers as processes ---------------------------------------------------------------------------


@pytest.mark.parametrize(("image", "target"), [
    ("torch-isvc/runtime:0.1.0", "runtime"),
    ("torch-isvc/runtime:0.1.0-gpu", "runtime-gpu"),
    ("registry.example.com:5000/team/storage-initializer:1.2", "storage-initializer"),
    ("torch-isvc/runtime@sha256:abc", "runtime"),
    ("kfserving/storage-initializer:v0.4.0", "storage-initializer"),
])
def test_image_repository_selects_the_dockerfile_target(image: str, target: str) -> None:
    assert image_target(image) == target


def test_image_entrypoints_are_the_dockerfiles() -> None:
    parser = DockerfileParser(path=str(REPO_ROOT / "Dockerfile"))
    stages: dict[str, dict[str, list[str]]] = {}
    current = None
    for item in parser.structure:
        if item["instruction"] == "FROM":
            current = stages.setdefault(item["value"].split()[-1], {})
        elif current is not None and item["instruction"] in ("ENTRYPOINT", "CMD"):
            current[item["instruction"]] = json.loads(item["value"])
    for target, (entrypoint, cmd) in IMAGE_ENTRYPOINTS.items():
        assert stages[target]["ENTRYPOINT"] == list(entrypoint), target
        assert stages[target].get("CMD", []) == list(cmd), target


def test_command_replaces_the_entrypoint_and_args_the_cmd() -> None:
    image = "torch-isvc/runtime:0.1.0"
    assert container_argv({"image": image}, PY) == [PY, "-m", "isvc_runtime", "--model-store", "/mnt/models"]
    assert container_argv({"image": image, "args": ["--x"]}, PY) == [PY, "-m", "isvc_runtime", "--x"]
    assert container_argv({"image": image, "command": ["python3", "-c", "1"]}, PY) == [PY, "-c", "1"]


def test_unknown_image_is_refused_with_its_name() -> None:
    with pytest.raises(PodSpecError, match=r"pytorch/torchserve:0\.4"):
        container_argv({"name": "kfserving-container", "image": "pytorch/torchserve:0.4"}, PY)


def test_mount_paths_are_rewritten_alone_as_prefix_and_after_a_flag() -> None:
    mounts = [("/mnt/models/sub", Path("/r/b")), ("/mnt/models", Path("/r/a"))]
    assert map_path("/mnt/models", mounts) == "/r/a"
    assert map_path("/mnt/models/config/x", mounts) == "/r/a/config/x"
    assert map_path("/mnt/models/sub/y", mounts) == "/r/b/y"
    assert map_path("--model-store=/mnt/models", mounts) == "--model-store=/r/a"
    assert map_path("/mnt/modelsX", mounts) == "/mnt/modelsX"
    assert map_path("gs://bucket/mnt/models", mounts) == "gs://bucket/mnt/models"


def test_torchserve_pod_runs_the_initializer_then_the_runtime_with_args_as_rendered(tmp_path: Path) -> None:
    ksvc = golden("metrics")
    plan, ports = plan_for(ksvc, tmp_path)
    models = tmp_path / "volumes" / "kfserving-provision-location"
    [init] = plan.init
    assert init.argv == [PY, "-m", "isvc_runtime.storage",
                         "gs://kfserving-examples/models/torchserve/image_classifier", str(models)]
    assert init.env["STORAGE_EMULATOR_HOST"] == "http://127.0.0.1:9023"
    [runtime] = plan.containers
    assert runtime.argv == [PY, "-m", "isvc_runtime", "--model-store", str(models), "--model-name",
                            "torchserve", "--http-port", str(ports[8080]), "--grpc-port", str(ports[8081])]
    assert runtime.env["PROTOCOL_VERSION"] == "v1"
    assert "STORAGE_EMULATOR_HOST" not in runtime.env
    assert runtime.env["TS_METRICS_ADDRESS"] == f"http://127.0.0.1:{ports[8082]}"
    assert runtime.env["K_REVISION"] == "torchserve-predictor-default-00001"
    assert runtime.env["PORT"] == str(ports[8080])
    for spec in (init, runtime):
        assert spec.env["PATH"] == "/usr/bin"
        assert "KUBECONFIG" not in spec.env and "AWS_SECRET" not in spec.env
    assert (plan.probe_path, plan.probe_port, plan.serving_port) == ("/v2/health/ready", 8080, 8080)
    assert plan.volume_dirs == {"kfserving-provision-location": models}


def test_every_pod_port_gets_its_own_loopback_port(tmp_path: Path) -> None:
    ksvc = golden("metrics")
    spec = ksvc["spec"]["template"]["spec"]
    spec["containers"][0]["args"] += ["--metrics-port=9091"]
    ports = pod_ports(spec, {"prometheus.io/port": "8082"})
    assert ports == [8080, 8081, 8082, 9091]
    plan, mapping = plan_for(ksvc, tmp_path)
    assert f"--metrics-port={mapping[9091]}" in plan.containers[0].argv


def test_a_grpc_pod_serves_grpc_on_its_declared_port_probed_with_grpc_health(tmp_path: Path) -> None:
    plan, ports = plan_for(golden("grpc"), tmp_path)
    [runtime] = plan.containers
    assert runtime.argv[-4:] == ["--http-port", str(ports[8080]), "--grpc-port", str(ports[8081])]
    assert runtime.env["PROTOCOL_VERSION"] == "grpc-v2"
    assert (plan.probe_grpc_service, plan.probe_port, plan.serving_port) == ("", 8081, 8080)


def test_secret_and_field_env_are_resolved_like_the_kubelet(tmp_path: Path) -> None:
    container = {"name": "c", "env": [
        {"name": "A", "value": "plain"},
        {"name": "B", "value": "$(A)-x"},
        {"name": "KEY", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "nope", "optional": True}}},
    ]}

    def lookup(kind: str, namespace: str, name: str, key: str) -> str | None:
        return {("secret", "ns1", "s3", "AWS_ACCESS_KEY_ID"): "AKIA"}.get((kind, namespace, name, key))

    assert resolve_env(container, "ns1", "pod", lookup) == {"A": "plain", "B": "plain-x", "KEY": "AKIA",
                                                             "NS": "ns1"}
    container["env"].append({"name": "BAD", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "nope"}}})
    with pytest.raises(PodSpecError, match="BAD"):
        resolve_env(container, "ns1", "pod", lookup)


def test_secret_volumes_become_files_and_other_volumes_are_refused(tmp_path: Path) -> None:
    ksvc = golden("torchserve")
    spec = ksvc["spec"]["template"]["spec"]
    spec["volumes"].append({"name": "gcs", "secret": {"secretName": "gcp", "items": [
        {"key": "gcloud-application-credentials.json", "path": "creds.json"}]}})

    def lookup(kind: str, namespace: str, name: str, key: str) -> str | None:
        return "{}" if (kind, name) == ("secret", "gcp") else None

    plan, _ = plan_for(ksvc, tmp_path, lookup=lookup)
    assert plan.files == {tmp_path / "volumes" / "gcs" / "creds.json": b"{}"}
    spec["volumes"].append({"name": "claim", "persistentVolumeClaim": {"claimName": "c"}})
    with pytest.raises(PodSpecError, match="claim"):
        plan_for(ksvc, tmp_path, lookup=lookup)


# --- routing -------------------------------------------------------------------------------------------


def ksvc_with(traffic: list[dict[str, Any]], name: str = "torchserve-predictor-default",
              namespace: str = "kfserving-test") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "status": {"url": f"http://{name}.{namespace}.example.com",
                       "address": {"url": f"http://{name}.{namespace}.svc.cluster.local"},
                       "traffic": traffic}}


CANARY = [{"latestRevision": True, "revisionName": "torchserve-predictor-default-00002", "percent": 20},
          {"latestRevision": False, "revisionName": "torchserve-predictor-default-00001", "percent": 80,
           "tag": "prev", "url": "http://prev-torchserve-predictor-default.kfserving-test.example.com"}]
V1 = Backend("kfserving-test", "torchserve-predictor-default-00001")
V2 = Backend("kfserving-test", "torchserve-predictor-default-00002")


def kserve_virtualservice() -> dict[str, Any]:
    """The shape KServe's ingress reconciler gives the top-level VirtualService."""
    return {"metadata": {"name": "torchserve", "namespace": "kfserving-test"}, "spec": {
        "hosts": ["torchserve.kfserving-test.svc.cluster.local", "torchserve.kfserving-test.example.com"],
        "gateways": ["knative-serving/knative-local-gateway", "knative-serving/knative-ingress-gateway"],
        "http": [{
            "match": [{"authority": {"regex": r"^torchserve\.kfserving-test\.example\.com(?::\d{1,5})?$"},
                       "gateways": ["knative-serving/knative-ingress-gateway"]},
                      {"authority": {"regex": r"^torchserve\.kfserving-test(\.svc(\.cluster\.local)?)?"
                                              r"(?::\d{1,5})?$"},
                       "gateways": ["knative-serving/knative-local-gateway"]}],
            "route": [{"destination": {"host": "knative-local-gateway.istio-system.svc.cluster.local",
                                       "port": {"number": 80}}, "weight": 100}],
            "headers": {"request": {"set": {
                "Host": "torchserve-predictor-default.kfserving-test.svc.cluster.local"}}},
        }]}}


def test_knative_hosts_split_by_traffic_percent_and_tags_reach_their_revision() -> None:
    table = build_routes([ksvc_with(CANARY)], [], [])
    expected = ((V2, 20.0), (V1, 80.0))
    for host in ("torchserve-predictor-default.kfserving-test.example.com",
                 "torchserve-predictor-default.kfserving-test.svc.cluster.local",
                 "TorchServe-Predictor-Default.kfserving-test.example.com:80"):
        assert table.resolve(host) == expected, host
    assert table.resolve("prev-torchserve-predictor-default.kfserving-test.example.com") == ((V1, 100.0),)
    assert table.resolve("torchserve.kfserving-test.example.com") is None
    assert table.resolve("other.example.com") is None


def test_virtualservice_host_follows_the_host_rewrite_to_the_predictor() -> None:
    table = build_routes([ksvc_with(CANARY)], [kserve_virtualservice()], [])
    split = table.resolve("torchserve.kfserving-test.example.com", "/v1/models/mnist:predict")
    assert split is not None
    assert {b: round(w, 6) for b, w in split} == {V2: 0.2, V1: 0.8}
    assert table.resolve("torchserve.kfserving-test.svc.cluster.local") is not None


def test_virtualservice_that_matches_no_route_serves_nothing() -> None:
    vs = kserve_virtualservice()
    vs["spec"]["hosts"].append("elsewhere.example.com")
    table = build_routes([ksvc_with(CANARY)], [vs], [])
    assert table.resolve("elsewhere.example.com") is None


def test_isvc_url_is_routed_to_its_predictor_only_until_a_virtualservice_exists() -> None:
    isvc = {"metadata": {"name": "torchserve", "namespace": "kfserving-test"},
            "status": {"url": "http://torchserve.kfserving-test.example.com", "components": {"predictor": {
                "url": "http://torchserve-predictor-default.kfserving-test.example.com"}}}}
    without = build_routes([ksvc_with(CANARY)], [], [isvc])
    assert without.resolve("torchserve.kfserving-test.example.com") == ((V2, 20.0), (V1, 80.0))
    broken = kserve_virtualservice()
    broken["spec"]["http"][0]["headers"]["request"]["set"]["Host"] = "nowhere.svc.cluster.local"
    with_vs = build_routes([ksvc_with(CANARY)], [broken], [isvc])
    assert with_vs.resolve("torchserve.kfserving-test.example.com") is None


def test_revisions_without_traffic_get_no_requests() -> None:
    traffic = copy.deepcopy(CANARY)
    traffic[0]["percent"], traffic[1]["percent"] = 0, 100
    table = build_routes([ksvc_with(traffic)], [], [])
    assert table.resolve("torchserve-predictor-default.kfserving-test.example.com") == ((V1, 100.0),)


def test_pick_follows_the_weights() -> None:
    rng = random.Random(7)
    counts = Counter(pick(((V2, 20.0), (V1, 80.0)), rng) for _ in range(20_000))
    assert abs(counts[V2] / 20_000 - 0.2) < 0.01


def test_host_header_port_and_case_are_ignored() -> None:
    assert normalise_host("TorchServe.NS.example.com:8080") == "torchserve.ns.example.com"
    assert normalise_host("[::1]:80") == "[::1]"


# --- the demo's helpers ------------------------------------------------------------------------------


def test_shape_reads_nested_lists() -> None:
    assert shape([[[[0.0] * 28] * 28]]) == [1, 1, 28, 28]
    assert shape([]) == [0]
    assert shape(None) == []


def test_own_sample_request_is_a_v1_base64_png() -> None:
    import base64
    import io

    from PIL import Image

    request = own_sample_request()
    [instance] = request["instances"]
    image = Image.open(io.BytesIO(base64.b64decode(instance["data"])))
    assert image.size == (28, 28) and image.mode == "L"
