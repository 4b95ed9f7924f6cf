"""Errors that carry an HTTP status. Importing this module must stay cheap (no torch)."""

from __future__ import annotations


class ApiError(Exception):
    """An error the REST layer turns into ``{"error": message}`` with ``status``."""

    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class InputError(ApiError, ValueError):
    """The request's content cannot be turned into model input (400).

    Handlers raise it (``isvc_runtime.handlers``) for undecodable images, ill-typed tensors and inputs
    the model rejects; codecs raise it for malformed protocol bodies.
    """

    status = 400


class ModelNotFound(ApiError):
    status = 404


class NotReady(ApiError):
    status = 503


class RequestTooLarge(ApiError):
    status = 413


class ResponseTimeout(ApiError):
    status = 504


class ConfigError(Exception):
    """A startup setting is malformed; the message names the key (startup stops)."""
