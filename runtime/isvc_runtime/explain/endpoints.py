"""``POST /v1/models/{m}:explain`` and ``POST /v2/models/{m}/explain``.

v1: ``{"instances": [...], "parameters": {...}}`` → ``{"explanations": [...]}``, one attribution
array per instance, shaped like that instance's preprocessed input (``[1][28][28]`` for an MNIST
digit). v2: the same attributions as the output tensor ``explanation`` (FP32, ``[N, ...]``).

Parameters (all optional): ``n_steps``, ``method``, ``internal_batch_size`` (within the model's
bounds) and ``target`` (an integer for every instance, or a list with one per instance); a v1
instance's own ``"target"`` wins over ``parameters.target``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..codecs import v1, v2
from ..codecs.jsonio import loads_object
from ..errors import ApiError
from ..rest.app import Request, Response, json_response
from .service import ExplainRow, explainer_for
from .settings import check_work, choose, request_targets


def _runner(request: Request):
    runner = request.registry.get(request.params["model"])
    version = request.params.get("version")
    if version is not None and version != runner.version:
        raise ApiError(
            f"model {request.params['model']} has no version {version!r} (it is {runner.version})", 404
        )
    runner.check_ready()
    return runner


async def _explain(request: Request, runner: Any, rows: list[Any], parameters: Any) -> list[Any]:
    explainer = explainer_for(runner)
    options = choose(explainer.settings, parameters)
    check_work(explainer.settings, options, len(rows))
    targets = request_targets(rows, parameters)
    items = [ExplainRow(row, target, options) for row, target in zip(rows, targets, strict=True)]
    return await explainer.explain(items, request.headers, request.request_id)


async def v1_explain(request: Request) -> Response:
    runner = _runner(request)
    payload = loads_object(await request.body())
    rows = v1.decode_request(payload)
    explanations = await _explain(request, runner, rows, payload.get("parameters"))
    return json_response({"explanations": explanations})


def explanation_outputs(explanations: list[Any]) -> list[dict[str, Any]]:
    """The ``explanation`` output tensor: FP32 when the explanations are numbers of one shape."""
    try:
        array = np.asarray(explanations, dtype=np.float32)
    except (ValueError, TypeError):
        return v2.encode_outputs(explanations, name="explanation")
    return [{"name": "explanation", "shape": list(array.shape), "datatype": "FP32", "data": array.ravel()}]


async def v2_explain(request: Request) -> Response:
    runner = _runner(request)
    payload = loads_object(await request.body())
    rows, _ = v2.decode_request(payload)
    explanations = await _explain(request, runner, rows, payload.get("parameters"))
    body: dict[str, Any] = {
        "model_name": request.params["model"],
        "model_version": runner.version,
        "id": payload.get("id") or request.request_id,
        "outputs": explanation_outputs(explanations),
    }
    return json_response(body)
