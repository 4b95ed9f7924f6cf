"""``PROTOCOL_VERSION`` (what the operator and KServe set from the isvc's protocolVersion) decides what
``GET /`` answers and whether the gRPC port is required; values KServe's placeholder substitution leaves
for a missing label (``<no value>``) count as unset, for it and for TorchServe's ``TS_*`` overrides."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from isvc_runtime.config import apply_env_overrides, build_config
from isvc_runtime.errors import ConfigError
from isvc_runtime.grpc.ports import KSERVE_DEFAULT, GrpcEndpoint, port_required
from isvc_runtime.protocol import liveness_body, protocol_version

ENVVARS_ON = {"enable_envvars_config": "true"}


@pytest.mark.parametrize(("env", "protocol"), [
    ({}, "v1"),
    ({"PROTOCOL_VERSION": ""}, "v1"),
    ({"PROTOCOL_VERSION": "<no value>"}, "v1"),
    ({"PROTOCOL_VERSION": "v2"}, "v2"),
    ({"PROTOCOL_VERSION": " grpc-v2 "}, "grpc-v2"),
])
def test_the_declared_protocol_defaults_to_v1_as_kserves(env: dict[str, str], protocol: str) -> None:
    assert protocol_version(env) == protocol


def test_an_unknown_protocol_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"PROTOCOL_VERSION: 'v3' is not one of v1, v2, grpc-v2"):
        protocol_version({"PROTOCOL_VERSION": "v3"})


def test_server_liveness_answers_in_the_declared_protocol() -> None:
    assert liveness_body("v1") == {"status": "alive"}
    assert liveness_body("v2") == liveness_body("grpc-v2") == {"live": True}


@pytest.mark.parametrize(("source", "protocol", "required"), [
    (KSERVE_DEFAULT, "v1", False),
    (KSERVE_DEFAULT, "v2", False),
    (KSERVE_DEFAULT, "grpc-v2", True),
    ("--grpc-port", "v1", True),
    ("grpc_inference_port", "v2", True),
])
def test_the_grpc_port_is_required_when_asked_for_or_when_grpc_is_the_protocol(
    source: str, protocol: str, required: bool
) -> None:
    assert port_required(GrpcEndpoint("0.0.0.0", 8081, source), protocol) is required


def test_an_envelope_left_as_no_value_by_kserves_substitution_counts_as_unset() -> None:
    merged = apply_env_overrides(ENVVARS_ON, {"TS_SERVICE_ENVELOPE": "<no value>"})
    assert "service_envelope" not in merged
    build_config(merged)  # starts: no "expected kserve, kservev2, body or json"
    with pytest.raises(ConfigError, match="service_envelope"):
        build_config(apply_env_overrides(ENVVARS_ON, {"TS_SERVICE_ENVELOPE": "soap"}))
    set_envelope = apply_env_overrides(ENVVARS_ON, {"TS_SERVICE_ENVELOPE": "kservev2"})
    assert set_envelope["service_envelope"] == "kservev2"


def test_the_runtime_exits_with_status_2_for_an_unknown_protocol(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "isvc_runtime", "--model-store", str(tmp_path)],
        env={**os.environ, "PROTOCOL_VERSION": "v3"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "PROTOCOL_VERSION: 'v3'" in done.stderr
