"""NVIDIA's ``tritonclient`` (``tritonclient.http`` or ``tritonclient.grpc``) against a runtime.

Plan options: ``url`` (``HOST:PORT``), ``model``, ``transport`` (``http``/``grpc``); calls ``live``,
``ready``, ``model_ready``, ``server_metadata``, ``model_metadata``, ``infer_fp32`` and ``infer_png``
(``binary``: HTTP's binary tensor extension; gRPC always sends raw contents).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from plan import classes, fp32_batches, load_plan, png_batches, run

OUTPUT = "output-0"  # the runtime's name for a handler's answers


def main() -> None:
    plan = load_plan()
    model, transport = plan["model"], plan["transport"]
    if transport == "http":
        import tritonclient.http as triton
    else:
        import tritonclient.grpc as triton
    options = {"network_timeout": 120.0} if transport == "http" else {}
    client = triton.InferenceServerClient(url=plan["url"], **options)

    def infer(tensor: Any, array: np.ndarray, binary: bool) -> list[int]:
        if transport == "http":
            tensor.set_data_from_numpy(array, binary_data=binary)
            output = triton.InferRequestedOutput(OUTPUT, binary_data=binary)
        else:
            tensor.set_data_from_numpy(array)
            output = triton.InferRequestedOutput(OUTPUT)
        result = client.infer(model, [tensor], outputs=[output])
        return classes(result.as_numpy(OUTPUT))

    def infer_fp32(call: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in fp32_batches(plan):
            answers += infer(
                triton.InferInput("input-0", list(batch.shape), "FP32"), batch, call.get("binary", False)
            )
        return answers

    def infer_png(call: dict[str, Any]) -> list[int]:
        answers: list[int] = []
        for batch in png_batches(plan):
            array = np.array(batch, dtype=np.object_)
            answers += infer(
                triton.InferInput("input-0", [len(batch)], "BYTES"), array, call.get("binary", True)
            )
        return answers

    def metadata(value: Any) -> Any:
        if transport == "http":
            return value
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(value, preserving_proto_field_name=True)

    run(
        plan,
        {
            "live": lambda _: client.is_server_live(),
            "ready": lambda _: client.is_server_ready(),
            "model_ready": lambda _: client.is_model_ready(model),
            "server_metadata": lambda _: metadata(client.get_server_metadata()),
            "model_metadata": lambda _: metadata(client.get_model_metadata(model)),
            "infer_fp32": infer_fp32,
            "infer_png": infer_png,
        },
    )
    client.close()


if __name__ == "__main__":
    main()
