"""Several requests in one handler call for a model configured with ``batchSize`` 1, where no code of the
model's own handler can tell.

TorchServe hands a ``batchSize`` 1 handler one request per call, and a custom handler may rely on it. But
the steps of this runtime's built-in handlers (:mod:`isvc_runtime.handlers`) take lists of rows: when a
handler's own code, the part written for the archive, is at most ``initialize`` and ``postprocess``, the
built-in ``preprocess`` and ``inference`` can run once over the rows of every request waiting, and the
handler's ``postprocess`` is called once per request, with that request's rows of the model's output and
a context holding that request alone: exactly what it receives when each request runs on its own. A
handler without code of its own (``image_classifier``, ``tensor_handler``, ...) takes the whole merged
batch in one ``postprocess``.

The model itself then sees a batch, as TorchServe's built-in handlers hand it one whenever ``batchSize``
is above 1. A model that cannot take one fails the merged call; the runner then answers each request on
its own and stops merging for that model (:class:`isvc_runtime.runner.ModelRunner`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..context import Context
from .base import BaseHandler

OWN_PACKAGE = __name__.rpartition(".")[0] + "."
# What an archive's subclass of a built-in handler may define and still be merged (its attributes,
# such as ``image_processing`` or ``topk``, are applied per row by the built-in steps).
OWN_CODE_ALLOWED = frozenset({"__init__", "initialize", "postprocess"})


@dataclass(frozen=True, slots=True)
class MergePlan:
    """How a merged call runs: ``per_request_postprocess`` when ``postprocess`` is the archive's code."""

    per_request_postprocess: bool


def _is_code(value: Any) -> bool:
    return inspect.isfunction(value) or isinstance(value, staticmethod | classmethod | property)


def merge_plan(handler: Any) -> MergePlan | None:
    """The plan for ``handler`` (an instance), or None when its own code could tell several requests
    from one: not a built-in handler, or a subclass defining more than ``initialize``/``postprocess``."""
    if not isinstance(handler, BaseHandler):
        return None
    own_postprocess = False
    for klass in type(handler).__mro__:
        if klass is object or klass.__module__.startswith(OWN_PACKAGE):
            continue
        code = {name for name, value in vars(klass).items() if _is_code(value)}
        if not code <= OWN_CODE_ALLOWED:
            return None
        own_postprocess = own_postprocess or "postprocess" in code
    return MergePlan(per_request_postprocess=own_postprocess)


def request_contexts(
    context: Context, headers: Sequence[Mapping[str, str]], request_ids: Sequence[str], sizes: Sequence[int]
) -> tuple[Context, list[Context]]:
    """A context per request (its rows' headers and ids) and one for the merged call whose request
    processors are theirs, so a status reported in any step lands on the request it belongs to."""
    contexts = []
    start = 0
    for size in sizes:
        contexts.append(context.for_batch(headers[start : start + size], request_ids[start : start + size]))
        start += size
    merged = context.for_batch((), request_ids)
    merged.request_processor = [p for c in contexts for p in c.request_processor]
    return merged, contexts


class NotSplittable(Exception):
    """The model's output cannot be cut into the requests' parts for a per-request ``postprocess``."""


def run_merged(
    handler: BaseHandler,
    plan: MergePlan,
    merged: Context,
    contexts: Sequence[Context],
    rows: list[Any],
    sizes: Sequence[int],
) -> list[Any]:
    """One answer per row: the built-in steps over all ``rows``, ``postprocess`` as ``plan`` says."""
    handler.context = merged
    output = handler.inference(handler.preprocess(rows))
    if not plan.per_request_postprocess:
        return handler.postprocess(output)
    if not isinstance(output, torch.Tensor) or output.ndim == 0 or output.shape[0] != len(rows):
        raise NotSplittable(f"the model's output is not one row per input ({type(output).__name__})")
    answers: list[Any] = []
    start = 0
    for size, context in zip(sizes, contexts, strict=True):
        handler.context = context
        answers.extend(handler.postprocess(output[start : start + size]))
        start += size
    return answers
