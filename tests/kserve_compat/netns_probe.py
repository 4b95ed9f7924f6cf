"""Run inside a network namespace (``nsenter --net``): wait for the runtime, send the requests of a plan,
print the answers as JSON. Used by test_cluster_serving_runtime.py, whose runtime listens on the very
ports KServe gives it (8080, 8081, 8082) in a namespace of its own.

    python netns_probe.py PLAN.json

PLAN: ``{"ready_url": ..., "timeout": s, "http": [{"method", "url", "json"?}], "grpc": {"target", "model",
"digit"}?}``; the answer: ``{"http": [{"status", "body"}], "grpc": {...} | {"error": ...}}``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import httpx


def wait_ready(client: httpx.Client, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"not ready at {url} after {timeout} s")


def http_calls(client: httpx.Client, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answers = []
    for call in calls:
        response = client.request(call["method"], call["url"], json=call.get("json"))
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        answers.append({"status": response.status_code, "body": body})
    return answers


def grpc_calls(plan: dict[str, Any]) -> dict[str, Any]:
    """ServerReady and a ModelInfer of one FP32 digit over the Open Inference Protocol's gRPC service."""
    import grpc
    import numpy as np
    from isvc_runtime.grpc.stubs import GRPCInferenceServiceStub, pb

    try:
        with grpc.insecure_channel(plan["target"]) as channel:
            stub = GRPCInferenceServiceStub(channel)
            ready = stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
            digit = np.asarray(plan["digit"], dtype=np.float32)
            request = pb.ModelInferRequest(model_name=plan["model"])
            request.inputs.add(name="input-0", datatype="FP32", shape=list(digit.shape))
            request.raw_input_contents.append(digit.tobytes())
            response = stub.ModelInfer(request, timeout=30)
            output = response.outputs[0]
            raw = response.raw_output_contents[0] if response.raw_output_contents else None
            values = (
                np.frombuffer(raw, dtype=np.int64).tolist() if raw else list(output.contents.int64_contents)
            )
            return {"ready": ready, "datatype": output.datatype, "data": values}
    except grpc.RpcError as exc:
        return {"error": f"{exc.code()}: {exc.details()}"}


def main(path: str) -> int:
    with open(path) as file:
        plan = json.load(file)
    with httpx.Client(timeout=60) as client:
        wait_ready(client, plan["ready_url"], plan.get("timeout", 120))
        answer: dict[str, Any] = {"http": http_calls(client, plan.get("http", []))}
    if plan.get("grpc"):
        answer["grpc"] = grpc_calls(plan["grpc"])
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
