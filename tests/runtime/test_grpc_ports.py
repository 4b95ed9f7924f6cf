"""Where the runtime's gRPC server listens (isvc_runtime.grpc.ports): --grpc-port, else TorchServe's keys in
config.properties (7070 when only the address is named), else KServe's 8081."""

from __future__ import annotations

import pytest
from isvc_runtime.config import apply_env_overrides, parse_properties
from isvc_runtime.errors import ConfigError
from isvc_runtime.grpc.ports import GrpcEndpoint, grpc_endpoint


def test_without_flag_or_keys_the_port_is_kserves_8081_on_the_http_host() -> None:
    assert grpc_endpoint({}, http_host="10.0.0.5") == GrpcEndpoint("10.0.0.5", 8081, "KServe's default")


def test_grpc_inference_port_from_config_properties() -> None:
    props = parse_properties("inference_address=http://0.0.0.0:8085\ngrpc_inference_port=7075\n")
    assert grpc_endpoint(props) == GrpcEndpoint("0.0.0.0", 7075, "grpc_inference_port")


def test_grpc_inference_address_alone_means_torchserves_default_port_7070() -> None:
    assert grpc_endpoint({"grpc_inference_address": "0.0.0.0"}) == GrpcEndpoint(
        "0.0.0.0", 7070, "grpc_inference_address"
    )


def test_grpc_inference_address_names_the_host_and_the_port_key_the_port() -> None:
    props = {"grpc_inference_address": "127.0.0.1", "grpc_inference_port": "9000"}
    assert grpc_endpoint(props, http_host="0.0.0.0") == GrpcEndpoint("127.0.0.1", 9000, "grpc_inference_port")


def test_grpc_inference_address_as_a_url_keeps_its_port() -> None:
    assert grpc_endpoint({"grpc_inference_address": "http://0.0.0.0:7443"}).port == 7443


def test_flag_port_wins_over_every_config_key() -> None:
    props = {"grpc_inference_address": "0.0.0.0", "grpc_inference_port": "7070"}
    assert grpc_endpoint(props, flag_port=8081) == GrpcEndpoint("0.0.0.0", 8081, "--grpc-port")


def test_flag_host_wins_over_the_configured_address() -> None:
    props = {"grpc_inference_address": "0.0.0.0"}
    assert grpc_endpoint(props, flag_host="127.0.0.1").host == "127.0.0.1"


def test_ts_grpc_inference_port_env_applies_when_envvars_config_is_enabled() -> None:
    props = parse_properties("enable_envvars_config=true\ngrpc_inference_port=7070\n")
    merged = apply_env_overrides(props, {"TS_GRPC_INFERENCE_PORT": "9001"})
    assert grpc_endpoint(merged).port == 9001
    ignored = apply_env_overrides({"grpc_inference_port": "7070"}, {"TS_GRPC_INFERENCE_PORT": "9001"})
    assert grpc_endpoint(ignored).port == 7070


def test_kserves_torchserve_sample_config_serves_grpc_at_7070_unless_the_flag_says_otherwise() -> None:
    # kserve/kserve docs/samples/v1beta1/torchserve/v1/config.properties (its gRPC lines)
    props = parse_properties(
        "inference_address=http://0.0.0.0:8085\ngrpc_inference_port=7070\ngrpc_management_port=7071\n"
    )
    assert grpc_endpoint(props).port == 7070
    assert grpc_endpoint(props, flag_port=8081).port == 8081


@pytest.mark.parametrize(
    ("props", "flag_port", "message"),
    [
        ({"grpc_inference_port": "seventy"}, None, "grpc_inference_port"),
        ({"grpc_inference_port": "-1"}, None, "grpc_inference_port"),
        ({"grpc_inference_port": "70000"}, None, "up to 65535"),
        ({"grpc_inference_address": ""}, None, "grpc_inference_address"),
        ({"grpc_inference_address": "0.0.0.0 7070"}, None, "grpc_inference_address"),
        ({"grpc_inference_address": "ftp://host:1"}, None, "grpc_inference_address"),
        ({}, 65536, "--grpc-port"),
    ],
)
def test_malformed_settings_are_config_errors_naming_the_key(
    props: dict[str, str], flag_port: int | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        grpc_endpoint(props, flag_port=flag_port)
