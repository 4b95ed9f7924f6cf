"""The served models: names and aliases → runners, preparation of archives, background loading."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archive import ArchiveError
from .config import RuntimeConfig, model_settings
from .errors import ConfigError, ModelNotFound
from .loader import load, prepare
from .model_store import ModelSource, archive_stem
from .observe import get_observer
from .runner import ModelRunner

log = logging.getLogger("isvc_runtime.registry")


@dataclass(slots=True)
class Prepared:
    """An archive unpacked and read (or failed to), waiting for its handler to load."""

    runner: ModelRunner
    model_dir: Path | None
    manifest: dict[str, Any] | None
    model_yaml: dict[str, Any]
    gpu_id: int | None


class ModelRegistry:
    def __init__(self) -> None:
        self.runners: list[ModelRunner] = []
        self._by_name: dict[str, ModelRunner] = {}
        self.aliases: dict[str, str] = {}  # alias → primary name
        # The server's other processes (--processes): the names of those still loading.
        self.peers_loading: Callable[[], list[str]] = list

    def add(self, runner: ModelRunner) -> None:
        if runner.name in self._by_name:
            raise ConfigError(f"two archives are served under the name {runner.name!r}")
        self.runners.append(runner)
        self._by_name[runner.name] = runner

    def add_alias(self, alias: str, runner: ModelRunner) -> None:
        if alias in self._by_name:
            return
        self._by_name[alias] = runner
        self.aliases[alias] = runner.name

    def get(self, name: str) -> ModelRunner:
        runner = self._by_name.get(name)
        if runner is None:
            raise ModelNotFound(f"model {name!r} is not served here (models: {', '.join(self.names())})")
        return runner

    def names(self) -> list[str]:
        return list(self._by_name)

    @property
    def ready(self) -> bool:
        """Every model loaded, here and in the server's other processes."""
        return bool(self.runners) and all(r.ready for r in self.runners) and not self.peers_loading()

    def not_ready_reasons(self) -> list[str]:
        own = [f"{r.name}: {r.error or 'still loading'}" for r in self.runners if not r.ready]
        return own + [f"{peer}: still loading" for peer in self.peers_loading()]

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.stop()


def unique_names(candidates: list[tuple[str | None, str | None, str]]) -> list[str]:
    """Served names from ``(configured name, manifest modelName, file stem)`` per archive: the configured
    name, else the modelName, except that archives sharing a modelName (copies under ``load_models=all``)
    are told apart by their file names."""
    wanted = [configured or manifest or stem for configured, manifest, stem in candidates]
    names = []
    for (configured, _, stem), name in zip(candidates, wanted, strict=True):
        if not configured and wanted.count(name) > 1 and stem != name:
            log.warning("several archives are named %s; serving the one in %s as %s", name, stem, stem)
            name = stem
        names.append(name)
    return names


def prepare_models(
    sources: list[ModelSource],
    config: RuntimeConfig,
    *,
    work_dir: Path,
    batch_size: int | None = None,
    max_batch_delay_ms: float | None = None,
    workers: int | None = None,
    response_timeout_s: float | None = None,
    alias: str | None = None,
    gpu_count: int = 0,
) -> tuple[ModelRegistry, list[Prepared]]:
    """Unpack every archive and read its manifest (fast, before the server listens), so every model's
    name is known from the start; the handlers load later (:func:`load_prepared`)."""
    registry = ModelRegistry()
    prepared: list[Prepared] = []
    unpacked = []
    for source in sources:
        try:
            unpacked.append(
                (source, *prepare(source.path, Path(tempfile.mkdtemp(dir=work_dir)) / "model"), None)
            )
        except ArchiveError as exc:
            unpacked.append((source, None, None, {}, str(exc)))
    names = unique_names(
        [
            (source.name, (manifest or {}).get("model", {}).get("modelName"), archive_stem(source.path))
            for source, _, manifest, _, _ in unpacked
        ]
    )
    for index, ((source, model_dir, manifest, model_yaml, error), name) in enumerate(
        zip(unpacked, names, strict=True)
    ):
        try:
            settings = model_settings(
                name,
                config,
                archive_defaults=model_yaml,
                batch_size=batch_size,
                max_batch_delay_ms=max_batch_delay_ms,
                workers=workers,
                response_timeout_s=response_timeout_s,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model {name}: malformed batch/worker settings: {exc}") from None
        runner = ModelRunner(
            name, settings, version=str((manifest or {}).get("model", {}).get("modelVersion") or "1.0")
        )
        if error is not None:
            runner.set_failed(error)
            log.error("model %s (%s) cannot load: %s", name, source.path.name, error)
        registry.add(runner)
        gpu_id = index % gpu_count if gpu_count > 0 else None
        prepared.append(Prepared(runner, model_dir, manifest, model_yaml, gpu_id))
    for item in prepared:
        manifest_name = (item.manifest or {}).get("model", {}).get("modelName")
        if manifest_name and manifest_name != item.runner.name and manifest_name not in registry.names():
            registry.add_alias(manifest_name, item.runner)
    if alias and alias not in registry.names():
        if len(registry.runners) > 1:
            log.warning(
                "--model-name %s names the first of %d models (%s)",
                alias,
                len(registry.runners),
                registry.runners[0].name,
            )
        registry.add_alias(alias, registry.runners[0])
    return registry, prepared


def load_prepared(prepared: list[Prepared], *, limit_max_image_pixels: bool = True) -> None:
    """Load every prepared model's handler (runs on a background thread at startup)."""
    for item in prepared:
        runner = item.runner
        if item.model_dir is None or item.manifest is None:
            get_observer().model_loaded(model=runner.name, seconds=0.0, ok=False)
            continue
        started = time.perf_counter()
        try:
            model = load(
                item.model_dir,
                item.manifest,
                item.model_yaml,
                served_name=runner.name,
                batch_size=runner.settings.batch_size,
                gpu_id=item.gpu_id,
                limit_max_image_pixels=limit_max_image_pixels,
            )
        except Exception as exc:  # any failure of the archive's code marks this model failed, not the server
            message = f"{type(exc).__name__}: {exc}"
            runner.set_failed(message)
            log.error("model %s failed to load: %s", runner.name, message, exc_info=exc)
            get_observer().model_loaded(model=runner.name, seconds=time.perf_counter() - started, ok=False)
            continue
        runner.set_loaded(model)
        seconds = time.perf_counter() - started
        get_observer().model_loaded(model=runner.name, seconds=seconds, ok=True)
        log.info(
            "model %s %s loaded in %.2f s (batch size %d, delay %g ms, workers %d)",
            runner.name,
            runner.version,
            seconds,
            runner.settings.batch_size,
            runner.settings.max_batch_delay_ms,
            runner.settings.workers,
        )
