"""The data plane: what every protocol front end (REST v1, v2, TorchServe's native API, gRPC)
asks of the served models, in one place. Front ends decode their wire format, call these methods with
typed values, and encode what comes back; they never reach into the registry or a runner themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import ApiError
from .inference import (
    InferenceRequest,
    InferenceResponse,
    TensorMetadata,
    answers_to_outputs,
    select_outputs,
    to_rows,
)
from .registry import ModelRegistry
from .runner import ModelRunner

SERVER_NAME = "torch-isvc"


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """A model's v2 metadata. ``inputs``/``outputs`` None: the model does not declare them (unknown)."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata] | None
    outputs: list[TensorMetadata] | None
    ready: bool


class DataPlane:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    # --- server ---

    def model_names(self) -> list[str]:
        return self.registry.names()

    @property
    def ready(self) -> bool:
        return self.registry.ready

    def not_ready_reason(self) -> str:
        return "; ".join(self.registry.not_ready_reasons())

    @staticmethod
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": []}

    # --- models ---

    def model(self, name: str, version: str | None = None) -> ModelRunner:
        """The runner served as ``name``; 404 when unknown, or when ``version`` is not its version."""
        runner = self.registry.get(name)
        if version is not None and version != runner.version:
            raise ApiError(f"model {name} has no version {version!r} (it is {runner.version})", 404)
        return runner

    def ready_model(self, name: str, version: str | None = None) -> ModelRunner:
        """As :meth:`model`, and 503 unless it is loaded."""
        runner = self.model(name, version)
        runner.check_ready()
        return runner

    @staticmethod
    def not_ready_reason_of(runner: ModelRunner) -> str:
        return runner.error or f"model {runner.name} is still loading"

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        runner = self.model(name, version)
        loaded = runner.model
        return ModelMetadata(
            name=name,
            versions=[runner.version],
            platform=runner.platform,
            inputs=None if loaded is None else loaded.inputs,
            outputs=None if loaded is None else loaded.outputs,
            ready=runner.ready,
        )

    # --- inference ---

    async def predict(
        self,
        name: str,
        rows: list[Any],
        headers: Mapping[str, str],
        request_id: str,
        version: str | None = None,
    ) -> list[Any]:
        """One answer per row (v1 instances, a native request's body)."""
        return await self.ready_model(name, version).predict(rows, headers, request_id)

    async def infer(
        self,
        name: str,
        request: InferenceRequest,
        headers: Mapping[str, str],
        request_id: str,
        version: str | None = None,
    ) -> InferenceResponse:
        """A v2 inference: the request's tensors as rows, the answers as one output tensor."""
        runner = self.ready_model(name, version)
        answers = await runner.predict(to_rows(request), headers, request_id)
        return InferenceResponse(
            model_name=name,
            model_version=runner.version,
            id=request.id or request_id,
            outputs=select_outputs(answers_to_outputs(answers), request.outputs),
            parameters=request.parameters,
        )
