"""The ``context`` handed to handlers, with the attributes and methods TorchServe's handlers use.

A handler gets one :class:`Context` per batch (fresh request processors, shared model facts), so
concurrent batches never see each other's headers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from .handler_metrics import HandlerMetrics


class RequestProcessor:
    """Headers of one request row, and the status/headers the handler may set for its answer."""

    __slots__ = ("_headers", "_response_headers", "status_code", "status_phrase")

    def __init__(self, headers: Mapping[str, str]) -> None:
        self._headers = headers
        self._response_headers: dict[str, str] = {}
        self.status_code = 200
        self.status_phrase: str | None = None

    def get_request_property(self, key: str) -> str | None:
        value = self._headers.get(key)
        if value is None:
            value = self._headers.get(key.lower())
        return value

    def get_request_properties(self) -> Mapping[str, str]:
        return self._headers

    def report_status(self, code: int, reason_phrase: str | None = None) -> None:
        self.status_code = code
        self.status_phrase = reason_phrase

    def get_response_status_code(self) -> int:
        return self.status_code

    def get_response_status_phrase(self) -> str | None:
        return self.status_phrase

    def add_response_property(self, key: str, value: str) -> None:
        self._response_headers[key] = value

    def get_response_headers(self) -> dict[str, str]:
        return self._response_headers

    def get_response_header(self, key: str) -> str | None:
        return self._response_headers.get(key)


class Context:
    """Model facts (name, manifest, system properties) plus the current batch's request processors."""

    def __init__(
        self,
        model_name: str,
        model_dir: str,
        manifest: dict[str, Any],
        batch_size: int,
        gpu_id: int | None,
        metrics: HandlerMetrics,
        model_yaml_config: dict[str, Any] | None = None,
        limit_max_image_pixels: bool = True,
        server_version: str = "0.1.0",
    ) -> None:
        self.model_name = model_name
        self.manifest = manifest
        self._system_properties = {
            "model_dir": model_dir,
            "gpu_id": gpu_id,
            "batch_size": batch_size,
            "server_name": "torch-isvc",
            "server_version": server_version,
            "limit_max_image_pixels": limit_max_image_pixels,
        }
        self.metrics = metrics
        self.model_yaml_config = model_yaml_config if model_yaml_config is not None else {}
        self.request_ids: dict[int, str] | None = None
        self.request_processor: list[RequestProcessor] = []
        self.stopping_criteria = None
        self.header_key_sequence_id = "ts_request_sequence_id"
        self.header_key_sequence_start = "ts_request_sequence_start"
        self.header_key_sequence_end = "ts_request_sequence_end"
        self.created = time.time()

    @property
    def system_properties(self) -> dict[str, Any]:
        return self._system_properties

    def for_batch(self, headers: Sequence[Mapping[str, str]], request_ids: Sequence[str]) -> Context:
        """A copy sharing the model facts, with one request processor per row of the batch."""
        batch = object.__new__(Context)
        batch.__dict__.update(self.__dict__)
        batch.request_processor = [RequestProcessor(h) for h in headers]
        batch.request_ids = dict(enumerate(request_ids))
        return batch

    def get_request_id(self, idx: int = 0) -> str | None:
        return None if self.request_ids is None else self.request_ids.get(idx)

    def get_request_header(self, idx: int, key: str) -> str | None:
        if idx >= len(self.request_processor):
            return None
        return self.request_processor[idx].get_request_property(key)

    def get_all_request_header(self, idx: int) -> Mapping[str, str]:
        return self.request_processor[idx].get_request_properties()

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.set_response_header(idx, "content-type", value)

    def get_response_content_type(self, idx: int) -> str | None:
        return self.get_response_headers(idx).get("content-type")

    def get_response_status(self, idx: int) -> tuple[int, str | None]:
        processor = self.request_processor[idx]
        return processor.status_code, processor.status_phrase

    def set_response_status(self, code: int = 200, phrase: str = "", idx: int = 0) -> None:
        if idx < len(self.request_processor):
            self.request_processor[idx].report_status(code, phrase)

    def set_all_response_status(self, code: int = 200, phrase: str = "") -> None:
        for processor in self.request_processor:
            processor.report_status(code, phrase)

    def get_response_headers(self, idx: int) -> dict[str, str]:
        return self.request_processor[idx].get_response_headers()

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.request_processor[idx].add_response_property(key, value)

    def get_sequence_id(self, idx: int) -> str | None:
        return self.get_request_header(idx, self.header_key_sequence_id)
