"""The payload logger's settings: ``--logger-url``, ``--logger-mode``, ``--logger-ca-bundle`` (the
operator's pod.logger_args) and the isvc it speaks for (``ISVC_NAME``, ``ISVC_NAMESPACE``; ``K_SERVICE``,
which Knative sets, as the events' source)."""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError

MODES = ("all", "request", "response")
COMPONENT = "predictor"
ENDPOINT = "default"  # KFServing's endpoint of the default (non-canary) predictor


@dataclass(frozen=True, slots=True)
class Identity:
    """The CloudEvents attributes that say where an event comes from."""

    source: str
    inference_service: str = ""
    namespace: str = ""
    component: str = COMPONENT
    endpoint: str = ENDPOINT


@dataclass(frozen=True, slots=True)
class LoggerSettings:
    url: str
    mode: str = "all"
    ca_bundle: Path | None = None  # PEM CA certificates for an https sink; None: the system's
    identity: Identity = Identity(source="isvc-runtime")

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    def ssl_context(self) -> ssl.SSLContext | None:
        """Verification always on: the system CAs, or only the bundle's when one is configured."""
        if self.scheme != "https":
            return None
        return ssl.create_default_context(cafile=str(self.ca_bundle) if self.ca_bundle else None)


def add_logger_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--logger-url", default=None,
                        help="send each inference request/response as a CloudEvent to this http(s) URL")
    parser.add_argument("--logger-mode", default="all", choices=MODES, help="what is logged (all)")
    parser.add_argument("--logger-ca-bundle", type=Path, default=None,
                        help="PEM CA certificates that verify an https sink (default: the system's)")


def logger_settings(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> LoggerSettings | None:
    """The settings from parsed flags (None without ``--logger-url``); ConfigError names a bad flag."""
    if not args.logger_url:
        return None
    parts = urlsplit(args.logger_url)
    if not args.logger_url.isascii() or not args.logger_url.isprintable() or " " in args.logger_url:
        raise ConfigError("--logger-url must be printable ASCII (an IDN host in its xn-- form)")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--logger-url must be an http:// or https:// URL, got {args.logger_url!r}")
    if parts.username or parts.password:
        raise ConfigError("--logger-url must not carry credentials")
    if args.logger_mode not in MODES:
        raise ConfigError(f"--logger-mode must be one of {', '.join(MODES)}")
    if args.logger_ca_bundle is not None and not args.logger_ca_bundle.is_file():
        raise ConfigError(f"--logger-ca-bundle {str(args.logger_ca_bundle)!r} is not a file")
    settings = LoggerSettings(url=args.logger_url, mode=args.logger_mode, ca_bundle=args.logger_ca_bundle,
                              identity=identity_from_env(env))
    try:
        settings.ssl_context()
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"--logger-ca-bundle: no CA certificate could be read ({exc})") from None
    return settings


def identity_from_env(env: Mapping[str, str]) -> Identity:
    """``ISVC_NAME``/``ISVC_NAMESPACE`` (the operator sets them with a logger); the source is the Knative
    Service (``K_SERVICE``), as KFServing's agent named its deployment, else ``{isvc}-predictor-default``."""
    name = env.get("ISVC_NAME", "")
    source = env.get("K_SERVICE") or (f"{name}-predictor-default" if name else "isvc-runtime")
    return Identity(source=source, inference_service=name, namespace=env.get("ISVC_NAMESPACE", ""))
