"""The one error the operator shows a user about their InferenceService."""

from __future__ import annotations


class RenderError(ValueError):
    """The isvc cannot be turned into the objects that serve it; the message names the field and is shown
    to the user (a Warning event and the Ready condition)."""
