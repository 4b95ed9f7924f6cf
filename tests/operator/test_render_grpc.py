"""protocolVersion grpc-v2: the one routed port is the runtime's gRPC port, named h2c, probed with gRPC
health, and routed as HTTP/2 in both deployment modes."""

from __future__ import annotations

from typing import Any

import pytest
from isvc_operator.config import default_config
from isvc_operator.errors import RenderError
from isvc_operator.ingress import render_virtual_service
from isvc_operator.pod import GRPC_LIVENESS_SERVICE
from isvc_operator.raw import render_raw
from isvc_operator.render import render_knative_service
from isvc_operator.spec import PROTOCOLS
from isvc_runtime.grpc.service import LIVENESS_SERVICE
from isvc_runtime.protocol import PROTOCOLS as RUNTIME_PROTOCOLS

RAW = {"serving.kubeflow.org/deploymentMode": "RawDeployment"}
PREDICTOR_URL = "http://torchserve-predictor-default.kfserving-test.svc.cluster.local"
KSVC_STATUS = {"status": {"address": {"url": PREDICTOR_URL}}}


def runtime_container(ksvc: dict[str, Any]) -> dict[str, Any]:
    [container] = ksvc["spec"]["template"]["spec"]["containers"]
    return container


@pytest.fixture
def grpc_isvc(isvc_factory):
    def make(**pytorch: Any) -> dict[str, Any]:
        return isvc_factory(pytorch={"protocolVersion": "grpc-v2", **pytorch})

    return make


def test_grpc_v2_routes_knatives_h2c_port_8081_to_the_runtimes_grpc_server(grpc_isvc) -> None:
    main = runtime_container(render_knative_service(grpc_isvc(), default_config()))
    assert main["ports"] == [{"containerPort": 8081, "name": "h2c", "protocol": "TCP"}]
    assert main["args"] == ["--model-store", "/mnt/models", "--model-name", "torchserve",
                            "--http-port", "8080", "--grpc-port", "8081"]
    assert main["env"] == [{"name": "PROTOCOL_VERSION", "value": "grpc-v2"}]


def test_grpc_v2_is_probed_with_grpc_health_readiness_and_liveness(grpc_isvc) -> None:
    main = runtime_container(render_knative_service(grpc_isvc(), default_config()))
    assert main["readinessProbe"] == {"grpc": {"port": 8081, "service": ""}}
    assert main["livenessProbe"] == {"grpc": {"port": 8081, "service": "liveness"},
                                     "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3}
    startup = main["startupProbe"]
    assert startup["grpc"] == {"port": 8081, "service": "liveness"}
    assert startup["periodSeconds"] * startup["failureThreshold"] == 600


def test_the_liveness_service_and_the_protocols_are_the_runtimes() -> None:
    assert GRPC_LIVENESS_SERVICE == LIVENESS_SERVICE
    assert PROTOCOLS == RUNTIME_PROTOCOLS


def test_a_declared_grpc_port_moves_the_grpc_server_and_its_probes_and_is_named_h2c(grpc_isvc) -> None:
    main = runtime_container(render_knative_service(grpc_isvc(ports=[{"containerPort": 9000}]),
                                                    default_config()))
    assert main["ports"] == [{"containerPort": 9000, "name": "h2c"}]
    assert main["args"][-4:] == ["--http-port", "8080", "--grpc-port", "9000"]
    probes = ("readinessProbe", "livenessProbe", "startupProbe")
    assert {main[probe]["grpc"]["port"] for probe in probes} == {9000}


@pytest.mark.parametrize(("pytorch", "field"), [
    ({"protocolVersion": "grpc-v2", "ports": [{"containerPort": 9000, "name": "http1"}]},
     r"spec\.predictor\.pytorch\.ports\[0\]\.name"),
    ({"protocolVersion": "v2", "ports": [{"containerPort": 9000, "name": "h2c"}]},
     r"spec\.predictor\.pytorch\.ports\[0\]\.name"),
    ({"protocolVersion": "grpc-v2", "ports": [{"containerPort": 8080}]},
     r"spec\.predictor\.pytorch\.ports\[0\]\.containerPort: 8080 is the runtime's HTTP port"),
])
def test_a_port_that_does_not_fit_the_protocol_is_named(isvc_factory, pytorch: dict, field: str) -> None:
    with pytest.raises(RenderError, match=field):
        render_knative_service(isvc_factory(pytorch=pytorch), default_config())


def test_raw_mode_service_marks_the_grpc_port_as_http2_cleartext(grpc_isvc) -> None:
    isvc = grpc_isvc()
    isvc["metadata"]["annotations"] = RAW
    rendered = render_raw(isvc, default_config())
    assert rendered["service"]["spec"]["ports"] == [{"name": "grpc", "protocol": "TCP",
                                                    "appProtocol": "kubernetes.io/h2c", "port": 80,
                                                    "targetPort": 8081}]
    [main] = rendered["deployment"]["spec"]["template"]["spec"]["containers"]
    assert main["readinessProbe"] == {"grpc": {"port": 8081, "service": ""}}


def test_the_virtualservice_carries_grpc_like_any_http_route(torchserve, grpc_isvc) -> None:
    """No URI match and the same destination: Istio speaks HTTP/2 onwards because the local gateway's
    Service port is HTTP/2 and Knative's h2c revision is (as KServe's VirtualService does, one route for
    every protocol: kserve/kserve pkg/controller/v1beta1/inferenceservice/reconcilers/ingress/
    ingress_reconciler.go, createHTTPRouteDestination)."""
    grpc = render_virtual_service(grpc_isvc(), default_config(), KSVC_STATUS)
    assert grpc["spec"] == render_virtual_service(torchserve, default_config(), KSVC_STATUS)["spec"]
    [route] = grpc["spec"]["http"]
    assert all("uri" not in match for match in route["match"])
