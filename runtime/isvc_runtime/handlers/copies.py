"""A handler's copy for each stream, so that several calls of one model can run at once.

TorchServe runs a handler instance one call at a time: a worker is a process that reads a request batch,
calls ``service.predict`` and answers before it reads the next (ts/model_service_worker.py,
``handle_connection``); several workers are several processes, each with its own instance. A handler may
therefore keep per-call state on ``self`` (the built-in ``handle`` sets ``self.context``, and the merged
calls of handlers/merging.py set it per request), and code written for an archive may hold objects that
are not safe to share between threads (a tokenizer, a cache).

So several calls at once (batching/streams.py) are allowed only where no code of the archive runs in a
call: a built-in handler, or a subclass defining at most ``__init__``/``initialize`` (the merge plan says
so, without an own ``postprocess``). Each further stream gets a shallow copy: its own ``context`` and other
attributes a call sets, the same model and weights (an ``nn.Module`` in eval mode under
``torch.inference_mode`` is read-only in its forward), so a stream costs no second copy of the weights,
unlike a TorchServe worker.
"""

from __future__ import annotations

import copy
from typing import Any

from .base import BaseHandler
from .merging import MergePlan


def runs_concurrently(handler: Any, plan: MergePlan | None) -> bool:
    """Whether ``handler`` (an instance) may run on several streams, one copy each."""
    return isinstance(handler, BaseHandler) and plan is not None and not plan.per_request_postprocess


def stream_copy(handler: BaseHandler) -> BaseHandler:
    """Another instance for another stream: attributes of its own, the model and weights shared."""
    return copy.copy(handler)
