"""TorchServe's ``config.properties``: parsing and validation into plain typed settings.

Pure functions over strings and dicts; the only side effect is logging each unknown key once.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .explain.settings import ExplainSettings, explain_settings

log = logging.getLogger("isvc_runtime.config")

DEFAULT_PORT = 8080
DEFAULT_MAX_REQUEST_SIZE = 6_553_500  # TorchServe's default, in bytes
DEFAULT_RESPONSE_TIMEOUT = 120  # seconds
DEFAULT_MAX_BATCH_DELAY_MS = 100  # TorchServe's default; only matters when batchSize > 1

# Keys this runtime acts on.
HONOURED_KEYS = frozenset(
    {
        "inference_address",
        "model_store",
        "load_models",
        "models",
        "model_snapshot",
        "service_envelope",
        "default_response_timeout",
        "max_request_size",
        "enable_envvars_config",
        "default_workers_per_model",
        "batch_size",
        "max_batch_delay",
        "number_of_gpu",
        "limit_max_image_pixels",
    }
)
# TorchServe keys that configure parts this runtime does not have (Java frontend, gRPC, management
# API, TLS, ...). They are accepted silently so the seed's config files start without noise.
ACCEPTED_KEYS = frozenset(
    {
        "management_address",
        "metrics_address",
        "grpc_inference_port",
        "grpc_management_port",
        "grpc_inference_address",
        "grpc_management_address",
        "enable_grpc_ssl",
        "enable_metrics_api",
        "metrics_format",
        "metrics_mode",
        "metrics_config",
        "number_of_netty_threads",
        "netty_client_threads",
        "job_queue_size",
        "install_py_dep_per_model",
        "async_logging",
        "cors_allowed_origin",
        "cors_allowed_methods",
        "cors_allowed_headers",
        "default_service_handler",
        "disable_system_metrics",
        "workflow_store",
        "keystore",
        "keystore_pass",
        "keystore_type",
        "certificate_file",
        "private_key_file",
        "plugins_path",
        "unregister_model_timeout",
        "decode_input_request",
        "initial_worker_port",
        "blacklist_env_vars",
        "allowed_urls",
        "use_native_io",
        "io_ratio",
        "enable_model_api",
        "disable_token_authorization",
        "model_server_home",
        "max_response_size",
        "preload_model",
        "vmargs",
        "workflow_max_request_size",
        "workflow_max_response_size",
        "model_load_timeout",
        "ts_config_file",
    }
)

_warned_keys: set[str] = set()

#: What a Go template (KServe's ServingRuntime placeholders, e.g. ``{{.Labels.serviceEnvelope}}``) renders
#: for a value that is not there: text/template's missing-key output. An env var holding it was not set.
NO_VALUE = "<no value>"


def template_value(value: str | None) -> str | None:
    """An environment value as set, None when unset, empty or :data:`NO_VALUE`."""
    if value is None:
        return None
    value = value.strip()
    return None if value in ("", NO_VALUE) else value


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """Per-model serving settings (TorchServe's ``models`` JSON names in brackets)."""

    batch_size: int = 1  # [batchSize] most rows handed to the handler in one call
    max_batch_delay_ms: float = DEFAULT_MAX_BATCH_DELAY_MS  # [maxBatchDelay]
    workers: int = 1  # [minWorkers] threads running batches of this model concurrently
    response_timeout_s: float = DEFAULT_RESPONSE_TIMEOUT  # [responseTimeout]
    explain: ExplainSettings = field(default_factory=ExplainSettings)  # [explain] object, see explain/


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """One model the store should load: the name it is served under and its archive file name."""

    name: str
    mar_name: str | None = None
    version: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RuntimeConfig:
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    port_configured: bool = False
    model_store: str | None = None
    load_models: tuple[str, ...] | None = None  # None: key absent; ("all",) for all
    model_entries: tuple[ModelEntry, ...] = ()  # from model_snapshot, else from models with marName
    snapshot: bool = False
    per_model: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # models JSON by name
    default_response_timeout: float = DEFAULT_RESPONSE_TIMEOUT
    max_request_size: int = DEFAULT_MAX_REQUEST_SIZE
    default_workers: int = 1
    default_batch_size: int | None = None
    default_max_batch_delay_ms: float | None = None
    number_of_gpu: int | None = None
    limit_max_image_pixels: bool = True
    # TorchServe's gRPC keys as given (grpc_inference_port / _address); grpc.ports decides the endpoint.
    grpc_keys: Mapping[str, str] = field(default_factory=dict)


def parse_properties(text: str) -> dict[str, str]:
    """Parse Java ``.properties`` text: ``key=value``/``key: value``, ``#``/``!`` comments, ``\\``
    line continuations. Later keys win."""
    result: dict[str, str] = {}
    logical: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not logical and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            logical.append(line[:-1])
            continue
        logical.append(line)
        entry = "".join(logical)
        logical = []
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", entry)
        if match is None:
            result[entry.strip()] = ""
        else:
            result[match.group(1)] = match.group(2).strip()
    if logical:
        entry = "".join(logical)
        match = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", entry)
        if match is not None:
            result[match.group(1)] = match.group(2).strip()
    return result


def apply_env_overrides(props: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
    """TorchServe's ``TS_<KEY>`` overrides, applied only when ``enable_envvars_config=true``. A variable
    whose value is :data:`NO_VALUE` overrides nothing: KServe's ClusterServingRuntimes set
    ``TS_SERVICE_ENVELOPE`` from an isvc label that may be missing (``{{.Labels.serviceEnvelope}}``)."""
    merged = dict(props)
    if _parse_bool("enable_envvars_config", props.get("enable_envvars_config", "false")):
        for name, value in env.items():
            if value.strip() == NO_VALUE:
                continue
            if name.startswith("TS_") and len(name) > 3:
                key = name[3:].lower()
                if key in HONOURED_KEYS or key in ACCEPTED_KEYS:
                    merged[key] = value
    return merged


def _parse_bool(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0", ""):
        return False
    raise ConfigError(f"config key {key!r}: expected true or false, got {value!r}")


def _parse_int(key: str, value: str, *, minimum: int = 0) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"config key {key!r}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"config key {key!r}: expected an integer >= {minimum}, got {number}")
    return number


def _parse_json_object(key: str, value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"config key {key!r}: invalid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(parsed, dict):
        raise ConfigError(f"config key {key!r}: expected a JSON object")
    return parsed


def parse_address(key: str, value: str) -> tuple[str, int]:
    """``http://0.0.0.0:8085`` → ``("0.0.0.0", 8085)``."""
    text = value.strip()
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ConfigError(
            f"config key {key!r}: expected an address like http://0.0.0.0:8080, got {value!r}"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"config key {key!r}: expected an address like http://0.0.0.0:8080, got {value!r}")
    default_port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port if port is not None else default_port


_SETTING_KEYS = {
    "batchSize": "int",
    "maxBatchDelay": "number",
    "minWorkers": "int",
    "maxWorkers": "int",
    "responseTimeout": "number",
    "marName": "str",
    "defaultVersion": "bool",
}


def _check_model_settings(key: str, name: str, version: str, settings: Any) -> dict[str, Any]:
    where = f"config key {key!r}: model {name!r} version {version!r}"
    if not isinstance(settings, dict):
        raise ConfigError(f"{where}: expected a JSON object of settings")
    for setting, kind in _SETTING_KEYS.items():
        if setting not in settings:
            continue
        value = settings[setting]
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            "number": isinstance(value, int | float) and not isinstance(value, bool) and value >= 0,
            "str": isinstance(value, str) and value != "",
            "bool": isinstance(value, bool),
        }[kind]
        if not ok:
            raise ConfigError(f"{where}: {setting} must be a non-negative {kind}, got {value!r}")
    if settings.get("batchSize") == 0:
        raise ConfigError(f"{where}: batchSize must be at least 1")
    return settings


def _models_by_name(key: str, models: Mapping[str, Any]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """``{"mnist": {"1.0": {...}}}`` → ``{"mnist": [("1.0", {...})]}``, validated."""
    result: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, versions in models.items():
        if not isinstance(versions, dict):
            raise ConfigError(f"config key {key!r}: model {name!r} must map versions to settings")
        if versions and all(isinstance(v, dict) for v in versions.values()):
            result[name] = [
                (str(ver), _check_model_settings(key, name, ver, s)) for ver, s in versions.items()
            ]
        else:  # a flat settings object without the version level
            result[name] = [("", _check_model_settings(key, name, "", versions))]
    return result


def _pick_version(entries: list[tuple[str, dict[str, Any]]]) -> tuple[str, dict[str, Any]]:
    for version, settings in entries:
        if settings.get("defaultVersion") is True:
            return version, settings
    return entries[0]


def build_config(props: Mapping[str, str]) -> RuntimeConfig:
    """Validate the (env-merged) properties into a :class:`RuntimeConfig`; raises ConfigError."""
    for key in props:
        if key not in HONOURED_KEYS and key not in ACCEPTED_KEYS and key not in _warned_keys:
            _warned_keys.add(key)
            log.warning("config.properties: unknown key %r ignored", key)
    kwargs: dict[str, Any] = {
        "grpc_keys": {k: props[k] for k in ("grpc_inference_port", "grpc_inference_address") if k in props}
    }
    if "inference_address" in props:
        host, port = parse_address("inference_address", props["inference_address"])
        kwargs.update(host=host, port=port, port_configured=True)
    if props.get("model_store"):
        kwargs["model_store"] = props["model_store"].strip()
    if "load_models" in props:
        items = tuple(part.strip() for part in props["load_models"].split(",") if part.strip())
        kwargs["load_models"] = items
    if "default_response_timeout" in props:
        kwargs["default_response_timeout"] = _parse_int(
            "default_response_timeout", props["default_response_timeout"], minimum=1
        )
    if "max_request_size" in props:
        kwargs["max_request_size"] = _parse_int("max_request_size", props["max_request_size"], minimum=1)
    if "default_workers_per_model" in props:
        kwargs["default_workers"] = _parse_int(
            "default_workers_per_model", props["default_workers_per_model"], minimum=1
        )
    if "batch_size" in props:
        kwargs["default_batch_size"] = _parse_int("batch_size", props["batch_size"], minimum=1)
    if "max_batch_delay" in props:
        kwargs["default_max_batch_delay_ms"] = _parse_int("max_batch_delay", props["max_batch_delay"])
    if "number_of_gpu" in props:
        kwargs["number_of_gpu"] = _parse_int("number_of_gpu", props["number_of_gpu"])
    if "limit_max_image_pixels" in props:
        kwargs["limit_max_image_pixels"] = _parse_bool(
            "limit_max_image_pixels", props["limit_max_image_pixels"]
        )
    if "enable_envvars_config" in props:
        _parse_bool("enable_envvars_config", props["enable_envvars_config"])
    if "service_envelope" in props and props["service_envelope"] not in (
        "",
        "kserve",
        "kservev2",
        "body",
        "json",
    ):
        raise ConfigError(
            "config key 'service_envelope': expected kserve, kservev2, body or json, "
            f"got {props['service_envelope']!r}"
        )

    per_model: dict[str, dict[str, Any]] = {}
    entries: list[ModelEntry] = []
    if props.get("models"):
        for name, versions in _models_by_name(
            "models", _parse_json_object("models", props["models"])
        ).items():
            version, settings = _pick_version(versions)
            per_model[name] = settings
            if settings.get("marName"):
                entries.append(ModelEntry(name, settings["marName"], version or None, settings))
    snapshot = False
    if props.get("model_snapshot"):
        snap = _parse_json_object("model_snapshot", props["model_snapshot"])
        models = snap.get("models", {})
        if not isinstance(models, dict):
            raise ConfigError("config key 'model_snapshot': 'models' must be a JSON object")
        snapshot = True
        entries = []
        for name, versions in _models_by_name("model_snapshot", models).items():
            version, settings = _pick_version(versions)
            merged = {**settings, **per_model.get(name, {})}
            per_model[name] = merged
            entries.append(ModelEntry(name, settings.get("marName"), version or None, merged))
    kwargs.update(per_model=per_model, model_entries=tuple(entries), snapshot=snapshot)
    return RuntimeConfig(**kwargs)


def model_settings(
    name: str,
    config: RuntimeConfig,
    *,
    archive_defaults: Mapping[str, Any] | None = None,
    batch_size: int | None = None,
    max_batch_delay_ms: float | None = None,
    workers: int | None = None,
    response_timeout_s: float | None = None,
) -> ModelSettings:
    """Settings for one model: flags > config.properties ``models`` > the archive's model-config.yaml
    > config-wide defaults."""
    merged: dict[str, Any] = dict(archive_defaults or {})
    merged.update(config.per_model.get(name, {}))
    size = batch_size or merged.get("batchSize") or config.default_batch_size or 1
    delay = max_batch_delay_ms
    if delay is None:
        delay = merged.get("maxBatchDelay", config.default_max_batch_delay_ms)
    if delay is None:
        delay = DEFAULT_MAX_BATCH_DELAY_MS
    count = workers or merged.get("minWorkers") or config.default_workers
    timeout = response_timeout_s or merged.get("responseTimeout") or config.default_response_timeout
    explain = explain_settings(
        name, (archive_defaults or {}).get("explain"), config.per_model.get(name, {}).get("explain")
    )
    return ModelSettings(
        batch_size=max(1, int(size)),
        max_batch_delay_ms=float(delay),
        workers=max(1, int(count)),
        response_timeout_s=float(timeout),
        explain=explain,
    )
