"""Finding the config file, the model store and the archives to load in a ``--model-store`` directory.

Three layouts are understood:

- the seed's: ``DIR/config/config.properties`` + ``DIR/model-store/*.mar``;
- a directory holding archives directly (``*.mar``, ``*.tar.gz``/``*.tgz``, unpacked archive dirs);
- a single unpacked archive (``DIR/MAR-INF/MANIFEST.json``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import RuntimeConfig, apply_env_overrides, build_config, parse_properties
from .errors import ConfigError

log = logging.getLogger("isvc_runtime.model_store")

ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".zip")
MANIFEST = Path("MAR-INF") / "MANIFEST.json"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """An archive (file or unpacked directory) to load, and the name it was asked for under, if any."""

    path: Path
    name: str | None = None  # from load_models "name=file.mar", model_snapshot or models JSON


def find_config_file(store: Path, explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if env.get("TS_CONFIG_FILE"):
        return Path(env["TS_CONFIG_FILE"])
    for candidate in (store / "config" / "config.properties", store / "config.properties"):
        if candidate.is_file():
            return candidate
    return None


def load_runtime_config(path: Path | None, env: Mapping[str, str]) -> RuntimeConfig:
    if path is None:
        return build_config({})
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    return build_config(apply_env_overrides(parse_properties(text), env))


def resolve_store_dir(root: Path, config: RuntimeConfig) -> Path:
    """The directory holding the archives. A configured ``model_store`` that does not exist here (the
    KServe sample says ``/mnt/models/model-store``) falls back to ``ROOT/model-store``, then ROOT."""
    if config.model_store:
        configured = Path(config.model_store)
        if not configured.is_absolute():
            configured = root / configured
        if configured.is_dir():
            return configured
        log.info("model_store %s does not exist; looking in %s", config.model_store, root)
    if (root / "model-store").is_dir():
        return root / "model-store"
    return root


def is_archive(path: Path) -> bool:
    if path.is_dir():
        return (path / MANIFEST).is_file()
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_archives(store: Path) -> list[Path]:
    if (store / MANIFEST).is_file():
        return [store]
    return sorted(p for p in store.iterdir() if not p.name.startswith(".") and is_archive(p))


def _find(store: Path, reference: str) -> Path:
    """An archive named in load_models/marName: a file name, a stem, or a path inside the store."""
    candidate = (store / reference).resolve()
    if not candidate.is_relative_to(store.resolve()):
        raise ConfigError(f"config: archive {reference!r} lies outside the model store")
    if candidate.exists():
        return candidate
    for suffix in ARCHIVE_SUFFIXES:
        with_suffix = store / (reference + suffix)
        if with_suffix.exists():
            return with_suffix
    raise ConfigError(f"config: archive {reference!r} named by load_models/models is not in {store}")


def select_sources(store: Path, config: RuntimeConfig) -> list[ModelSource]:
    """Which archives to load: model_snapshot, else load_models, else models entries with marName,
    else every archive in the store."""
    if config.snapshot or (config.load_models is None and config.model_entries):
        sources = []
        for entry in config.model_entries:
            path = _find(store, entry.mar_name) if entry.mar_name else _find(store, entry.name)
            sources.append(ModelSource(path, entry.name))
        return sources
    wanted = config.load_models
    if wanted is None or any(item.lower() == "all" for item in wanted):
        return [ModelSource(path) for path in list_archives(store)]
    sources = []
    for item in wanted:
        if item.lower() == "standalone":
            continue
        name, sep, ref = item.partition("=")
        if sep:
            sources.append(ModelSource(_find(store, ref.strip()), name.strip()))
        else:
            sources.append(ModelSource(_find(store, item)))
    return sources


def discover(root: Path, *, config_file: Path | None = None, env: Mapping[str, str] | None = None):
    """``(RuntimeConfig, [ModelSource])`` for a ``--model-store`` directory; raises ConfigError."""
    env = os.environ if env is None else env
    if not root.is_dir():
        raise ConfigError(f"--model-store {root} is not a directory")
    config = load_runtime_config(find_config_file(root, config_file, env), env)
    store = resolve_store_dir(root, config)
    sources = select_sources(store, config)
    if not sources:
        raise ConfigError(f"no model archives (.mar, .tar.gz, unpacked) found in {store}")
    return config, sources
