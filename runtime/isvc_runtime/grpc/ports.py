"""Where the gRPC server listens: ``--grpc-port``, else config.properties, else KServe's default.

The rule (issue 16):

1. ``--grpc-port N`` (and ``--host``) win: the ClusterServingRuntime in deploy/kserve/ passes them, so the
   port KServe routes to does not depend on the model store's config.
2. Else TorchServe's own keys in config.properties (after ``TS_*`` overrides, see
   :func:`isvc_runtime.config.apply_env_overrides`): ``grpc_inference_port``, and
   ``grpc_inference_address`` (a bare IP, as TorchServe reads it). A store that names either was served
   over gRPC by TorchServe, at ``grpc_inference_port`` or TorchServe's default 7070 (pytorch/serve
   ``frontend/server/src/main/java/org/pytorch/serve/util/ConfigManager.java``, ``getGRPCPort``).
3. Else 8081, KServe's default gRPC port (kserve/kserve ``python/kserve/kserve/constants/constants.py``
   ``DEFAULT_GRPC_PORT``; TorchServe's KServe wrapper serves the protocol there too:
   pytorch/serve ``kubernetes/kserve/kserve_wrapper/__main__.py``, ``ModelServer(grpc_port=8081)``).

The host: ``--host``, else ``grpc_inference_address``, else the HTTP server's host. TorchServe's own
default (127.0.0.1) is not used: a pod's probes and traffic arrive on its pod IP, and TorchServe's KServe
wrapper also derived the gRPC address from ``inference_address``'s host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import _parse_int, parse_address
from ..errors import ConfigError
from ..protocol import GRPC_V2

KSERVE_GRPC_PORT = 8081
TORCHSERVE_GRPC_PORT = 7070
MAX_PORT = 65535
KSERVE_DEFAULT = "KServe's default"  # the source of a port nobody configured


@dataclass(frozen=True, slots=True)
class GrpcEndpoint:
    host: str
    port: int
    source: str  # what decided the port: "--grpc-port", a config key, or "KServe's default"


def _port(key: str, value: str) -> int:
    port = _parse_int(key, value)
    if port > MAX_PORT:
        raise ConfigError(f"config key {key!r}: expected a port up to {MAX_PORT}, got {port}")
    return port


def _address_host(value: str) -> tuple[str, int | None]:
    """``grpc_inference_address``: a bare IP or host name (TorchServe's form); a URL such as
    ``http://0.0.0.0:7070`` (the form of ``inference_address``) is accepted too, its port kept."""
    text = value.strip()
    if "://" in text:
        return parse_address("grpc_inference_address", text)
    if not text or "/" in text or any(c.isspace() for c in text):
        raise ConfigError(f"config key 'grpc_inference_address': expected an IP address, got {value!r}")
    return text.strip("[]"), None


def grpc_endpoint(
    props: Mapping[str, str],
    *,
    flag_port: int | None = None,
    flag_host: str | None = None,
    http_host: str = "0.0.0.0",
) -> GrpcEndpoint:
    """The gRPC server's host and port from the flags and the (env-merged) config.properties ``props``;
    raises :class:`ConfigError` for a malformed key."""
    address_host, address_port = (None, None)
    if "grpc_inference_address" in props:
        address_host, address_port = _address_host(props["grpc_inference_address"])
    host = flag_host or address_host or http_host
    if flag_port is not None:
        if not 0 <= flag_port <= MAX_PORT:
            raise ConfigError(f"--grpc-port: expected a port from 0 to {MAX_PORT}, got {flag_port}")
        return GrpcEndpoint(host, flag_port, "--grpc-port")
    if "grpc_inference_port" in props:
        port = _port("grpc_inference_port", props["grpc_inference_port"])
        return GrpcEndpoint(host, port, "grpc_inference_port")
    if address_host is not None:
        return GrpcEndpoint(host, address_port or TORCHSERVE_GRPC_PORT, "grpc_inference_address")
    return GrpcEndpoint(host, KSERVE_GRPC_PORT, KSERVE_DEFAULT)


def port_required(endpoint: GrpcEndpoint, protocol: str) -> bool:
    """Whether a gRPC port that cannot be bound stops the start-up: one somebody asked for (the flag, a config
    key), or any when gRPC is the protocol the pod is routed and probed on (``PROTOCOL_VERSION=grpc-v2``).
    Else it is logged and the runtime serves HTTP alone."""
    return endpoint.source != KSERVE_DEFAULT or protocol == GRPC_V2
