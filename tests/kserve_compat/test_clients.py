"""Clients nobody here wrote against the runtime: KServe's own Python SDK (``InferenceRESTClient`` v1 and v2,
``InferenceGRPCClient``) and NVIDIA's ``tritonclient`` (HTTP and gRPC), from their own virtual environment
(clients/). Each must see the server live and ready, read metadata, and get for 200 held-out FP32
``[N, 1, 28, 28]`` digits (and their PNGs) the classes the in-process model gives.

What the runtime does not serve yet is a strict xfail naming the missing feature: it turns into a failure,
to be unmarked, the day the feature lands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from clients_harness import ISVC, run_client

BATCH = 50  # digits per request

IN_PROCESS = object()  # stands for the in-process model's classes of the 200 digits


def plan(digits: dict[str, Path], calls: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
    """A client script's plan (clients/plan.py): the isvc's model name, the digit files, the calls."""
    return {
        "model": ISVC,
        "batch": BATCH,
        "calls": calls,
        **{k: str(v) for k, v in digits.items()},
        **options,
    }


@pytest.fixture(scope="module")
def kserve_rest_v1(compat_runtime: Any, digit_files: dict[str, Path], clients_py: Path) -> dict[str, Any]:
    calls = [{"id": c, "call": c} for c in ("live", "model_ready", "infer_fp32", "infer_png")]
    options = {"url": compat_runtime.url, "protocol": "v1"}
    return run_client(clients_py, "kserve_rest.py", plan(digit_files, calls, **options))


@pytest.fixture(scope="module")
def kserve_rest_v2(compat_runtime: Any, digit_files: dict[str, Path], clients_py: Path) -> dict[str, Any]:
    calls = [{"id": c, "call": c} for c in ("live", "ready", "model_ready", "infer_fp32")]
    calls += [
        {"id": "infer_fp32_binary", "call": "infer_fp32", "binary": True},
        {"id": "infer_png_binary", "call": "infer_png", "binary": True},
    ]
    options = {"url": compat_runtime.url, "protocol": "v2"}
    return run_client(clients_py, "kserve_rest.py", plan(digit_files, calls, **options))


@pytest.fixture(scope="module")
def triton_http(compat_runtime: Any, digit_files: dict[str, Path], clients_py: Path) -> dict[str, Any]:
    calls = [
        {"id": c, "call": c}
        for c in ("live", "ready", "model_ready", "server_metadata", "model_metadata", "infer_fp32")
    ]
    calls += [
        {"id": "infer_fp32_binary", "call": "infer_fp32", "binary": True},
        {"id": "infer_png_binary", "call": "infer_png", "binary": True},
    ]
    url = compat_runtime.url.removeprefix("http://")
    return run_client(clients_py, "triton.py", plan(digit_files, calls, url=url, transport="http"))


@pytest.fixture(scope="module")
def kserve_grpc(
    compat_runtime: Any, digit_files: dict[str, Path], clients_py: Path, grpc_port: int
) -> dict[str, Any]:
    calls = [{"id": c, "call": c} for c in ("live", "ready", "model_ready", "infer_fp32", "infer_png")]
    return run_client(clients_py, "kserve_grpc.py", plan(digit_files, calls, url=f"127.0.0.1:{grpc_port}"))


@pytest.fixture(scope="module")
def triton_grpc(
    compat_runtime: Any, digit_files: dict[str, Path], clients_py: Path, grpc_port: int
) -> dict[str, Any]:
    calls = [
        {"id": c, "call": c}
        for c in (
            "live",
            "ready",
            "model_ready",
            "server_metadata",
            "model_metadata",
            "infer_fp32",
            "infer_png",
        )
    ]
    options = {"url": f"127.0.0.1:{grpc_port}", "transport": "grpc"}
    return run_client(clients_py, "triton.py", plan(digit_files, calls, **options))


def server_metadata(value: dict[str, Any]) -> bool:
    return bool(value.get("name"))


def model_metadata(value: dict[str, Any]) -> bool:
    return value.get("name") == ISVC


def case(client: str, call: str, want: Any, xfail: str | None = None) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return pytest.param(client, call, want, marks=marks, id=f"{client}:{call}")


CASES = [
    # KServe SDK, REST v1 (JSON)
    case("kserve_rest_v1", "live", True),
    case("kserve_rest_v1", "model_ready", True),
    case("kserve_rest_v1", "infer_fp32", IN_PROCESS),
    case("kserve_rest_v1", "infer_png", IN_PROCESS),
    # KServe SDK, REST v2: JSON, then the binary extension
    case("kserve_rest_v2", "live", True),
    case("kserve_rest_v2", "ready", True),
    case("kserve_rest_v2", "model_ready", True),
    case("kserve_rest_v2", "infer_fp32", IN_PROCESS),
    case("kserve_rest_v2", "infer_fp32_binary", IN_PROCESS),
    case("kserve_rest_v2", "infer_png_binary", IN_PROCESS),
    # tritonclient, HTTP: JSON, then the binary extension
    case("triton_http", "live", True),
    case("triton_http", "ready", True),
    case("triton_http", "model_ready", True),
    case("triton_http", "server_metadata", server_metadata),
    case("triton_http", "model_metadata", model_metadata),
    case("triton_http", "infer_fp32", IN_PROCESS),
    case("triton_http", "infer_fp32_binary", IN_PROCESS),
    case("triton_http", "infer_png_binary", IN_PROCESS),
    # KServe SDK and tritonclient over gRPC
    *[case("kserve_grpc", call, want) for call, want in [("live", True), ("ready", True)]],
    case("kserve_grpc", "model_ready", True),
    case("kserve_grpc", "infer_fp32", IN_PROCESS),
    case("kserve_grpc", "infer_png", IN_PROCESS),
    *[case("triton_grpc", call, True) for call in ("live", "ready", "model_ready")],
    case("triton_grpc", "server_metadata", server_metadata),
    case("triton_grpc", "model_metadata", model_metadata),
    case("triton_grpc", "infer_fp32", IN_PROCESS),
    case("triton_grpc", "infer_png", IN_PROCESS),
]


@pytest.mark.slow
@pytest.mark.parametrize(("client", "call", "want"), CASES)
def test_client_gets_the_protocols_answer(
    request: pytest.FixtureRequest, client: str, call: str, want: Any, in_process_classes: list[int]
) -> None:
    result = request.getfixturevalue(client)[call]
    assert result["ok"], result["error"]
    if want is IN_PROCESS:
        assert len(result["value"]) == len(in_process_classes)
        assert result["value"] == in_process_classes
    elif callable(want):
        assert want(result["value"]), result["value"]
    else:
        assert result["value"] == want
