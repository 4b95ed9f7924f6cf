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
from starlette.requests import Request
from starlette.responses import Response

from ..codecs import v1, v2
from ..codecs.jsonio import loads_object
from ..inference import InferenceResponse, Tensor, answers_to_outputs, to_rows
from ..rest.app import JSONResponse
from ..rest.endpoints import Endpoints
from ..rest.middleware import request_id_of
from ..runner import ModelRunner
from .service import ExplainRow, explainer_for
from .settings import check_work, choose, request_targets


class ExplainEndpoints:
    """The explanation endpoints beside ``endpoints`` (same data plane, same body limit)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints

    def _model(self, request: Request) -> ModelRunner:
        params = request.path_params
        return self.endpoints.dataplane.ready_model(params["model"], params.get("version"))

    async def v1_explain(self, request: Request) -> Response:
        runner = self._model(request)
        payload = loads_object(await self.endpoints.body(request))
        rows = v1.decode_request(payload)
        explanations = await _explain(request, runner, rows, payload.get("parameters"))
        return JSONResponse({"explanations": explanations})

    async def v2_explain(self, request: Request) -> Response:
        runner = self._model(request)
        payload = loads_object(await self.endpoints.body(request))
        inference = v2.decode_request(payload)
        explanations = await _explain(request, runner, to_rows(inference), payload.get("parameters"))
        answer = InferenceResponse(
            model_name=request.path_params["model"],
            model_version=runner.version,
            id=inference.id or request_id_of(request.scope),
            outputs=explanation_outputs(explanations),
        )
        return JSONResponse(v2.encode_response(answer))


async def _explain(request: Request, runner: ModelRunner, rows: list[Any], parameters: Any) -> list[Any]:
    explainer = explainer_for(runner)
    options = choose(explainer.settings, parameters)
    check_work(explainer.settings, options, len(rows))
    targets = request_targets(rows, parameters)
    items = [ExplainRow(row, target, options) for row, target in zip(rows, targets, strict=True)]
    return await explainer.explain(items, request.headers, request_id_of(request.scope))


def explanation_outputs(explanations: list[Any]) -> list[Tensor]:
    """The ``explanation`` output tensor: FP32 when the explanations are numbers of one shape."""
    try:
        array = np.asarray(explanations, dtype=np.float32)
    except (ValueError, TypeError):
        return answers_to_outputs(explanations, name="explanation")
    return [Tensor("explanation", "FP32", list(array.shape), array)]
