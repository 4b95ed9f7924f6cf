"""Explanations: Captum integrated gradients on ``:explain`` (v1) and ``/explain`` (v2).

``settings`` is pure and cheap to import (the configuration reads it); the endpoints, which pull in
the REST layer, are imported on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["v1_explain", "v2_explain"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import endpoints

        return getattr(endpoints, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
