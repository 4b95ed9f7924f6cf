"""Errors of the storage initializer, and the scrubbing that keeps secrets out of every message."""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit, urlunsplit

# Environment variables whose values must never appear in output, whatever the message says.
SECRET_ENV = (
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "STORAGE_HTTP_HEADERS",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
)


class StorageError(Exception):
    """A failure that retrying will not fix: 4xx, missing object, empty prefix, bad credentials."""


class TransientError(StorageError):
    """A failure worth retrying: connection refused or reset, timeouts, HTTP 5xx and 429."""


def redact_uri(uri: str) -> str:
    """``uri`` without user info and with the query (signed-URL tokens) replaced by ``REDACTED``."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable uri>"
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = "REDACTED" if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def scrub(message: str) -> str:
    """One line, with the values of secret environment variables and URL credentials masked."""
    for name in SECRET_ENV:
        value = os.environ.get(name, "")
        if len(value) >= 4:
            message = message.replace(value, "***")
    if headers := os.environ.get("STORAGE_HTTP_HEADERS"):
        for value in re.findall(r'"\s*:\s*"([^"]{4,})"', headers):
            message = message.replace(value, "***")
    message = re.sub(r"(https?://)[^/@\s]+@", r"\1", message)
    message = re.sub(r"(https?://[^\s?]+)\?\S+", r"\1?REDACTED", message)
    return " ".join(message.split())
