"""KServe's own Python SDK over REST (``kserve.InferenceRESTClient``, protocol v1 or v2) against a runtime.

Plan options: ``url`` (``http://HOST:PORT``), ``model``, ``protocol`` (``v1``/``v2``); calls ``live``,
``ready``, ``model_ready``, ``infer_fp32`` and ``infer_png`` (``binary``: the binary tensor extension).
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from plan import classes, fp32_batches, load_plan, png_batches, run


def main() -> None:
    plan = load_plan()
    url, model, protocol = plan["url"], plan["model"], plan["protocol"]
    client = InferenceRESTClient(RESTConfig(protocol=protocol, timeout=120, retries=0))
    loop = asyncio.new_event_loop()

    def v2_infer(tensor: InferInput, binary: bool) -> list[int]:
        request = InferRequest(model_name=model, infer_inputs=[tensor])
        if binary:
            request.parameters = {"binary_data_output": True}
        response = loop.run_until_complete(client.infer(url, request, model_name=model))
        return classes(response.outputs[0].as_numpy())

    def infer_fp32(call: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in fp32_batches(plan):
            if protocol == "v1":
                body = {"instances": batch.tolist()}
                answers += classes(
                    loop.run_until_complete(client.infer(url, body, model_name=model))["predictions"]
                )
            else:
                tensor = InferInput("input-0", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch, binary_data=call.get("binary", False))
                answers += v2_infer(tensor, call.get("binary", False))
        return answers

    def infer_png(call: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in png_batches(plan):
            if protocol == "v1":
                body = {"instances": [{"data": base64.b64encode(png).decode()} for png in batch]}
                answers += classes(
                    loop.run_until_complete(client.infer(url, body, model_name=model))["predictions"]
                )
            else:
                tensor = InferInput("input-0", [len(batch)], "BYTES")
                tensor.set_data_from_numpy(
                    np.array(batch, dtype=np.object_), binary_data=call.get("binary", True)
                )
                answers += v2_infer(tensor, call.get("binary", True))
        return answers

    run(
        plan,
        {
            "live": lambda _: loop.run_until_complete(client.is_server_live(url)),
            "ready": lambda _: loop.run_until_complete(client.is_server_ready(url)),
            "model_ready": lambda _: loop.run_until_complete(client.is_model_ready(url, model)),
            "infer_fp32": infer_fp32,
            "infer_png": infer_png,
        },
    )
    loop.run_until_complete(client.close())


if __name__ == "__main__":
    main()
