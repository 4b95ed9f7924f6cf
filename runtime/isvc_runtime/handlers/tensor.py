"""``tensor_handler``: rows are tensors (v2 numeric inputs or nested lists); answers are the model's
output rows as lists."""

from __future__ import annotations

from .base import BaseHandler


class TensorHandler(BaseHandler):
    """Stacks the rows, runs the model, returns one output row (as a list) per input row."""
