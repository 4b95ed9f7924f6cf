"""Dynamic batching across concurrent requests (see :mod:`isvc_runtime.batching.batcher`)."""

from .batcher import Batcher, Pending, take_batch

__all__ = ["Batcher", "Pending", "take_batch"]
