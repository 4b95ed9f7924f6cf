"""KServe's own Python SDK over gRPC (``kserve.InferenceGRPCClient``) against a runtime.

Plan options: ``url`` (``HOST:PORT``), ``model``; calls ``live``, ``ready``, ``model_ready``, ``infer_fp32``,
``infer_png`` (BYTES of PNG files).
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest
from plan import classes, fp32_batches, load_plan, png_batches, run


def main() -> None:
    plan = load_plan()
    model = plan["model"]
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # grpc.aio binds the channel to the loop current when it is made
    client = InferenceGRPCClient(plan["url"], timeout=120, retries=2)  # gRPC requires 2 attempts at least

    def infer(tensor: InferInput) -> list[int]:
        request = InferRequest(model_name=model, infer_inputs=[tensor])
        return classes(loop.run_until_complete(client.infer(request)).outputs[0].as_numpy())

    def infer_fp32(_: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in fp32_batches(plan):
            tensor = InferInput("input-0", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            answers += infer(tensor)
        return answers

    def infer_png(_: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in png_batches(plan):
            tensor = InferInput("input-0", [len(batch)], "BYTES")
            tensor.set_data_from_numpy(np.array(batch, dtype=np.object_))
            answers += infer(tensor)
        return answers

    run(
        plan,
        {
            "live": lambda _: loop.run_until_complete(client.is_server_live()),
            "ready": lambda _: loop.run_until_complete(client.is_server_ready()),
            "model_ready": lambda _: loop.run_until_complete(client.is_model_ready(model)),
            "infer_fp32": infer_fp32,
            "infer_png": infer_png,
        },
    )
    loop.run_until_complete(client.close())


if __name__ == "__main__":
    main()
