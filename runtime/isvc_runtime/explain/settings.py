"""Explanation settings: per-model defaults and bounds (config), per-request choices (parameters).

Pure functions over dicts. A model's ``explain`` object may come from the archive's config file
(``explain:`` in model-config.yaml) and from config.properties' ``models`` JSON; the second wins key by
key. Requests choose within the model's bounds, so no request can ask for unbounded work or memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..errors import ConfigError, InputError

# Captum's integration rules (``captum.attr._utils.approximation_methods``).
METHODS = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")
DEFAULT_N_STEPS = 15  # TorchServe's VisionHandler uses 15: same answers, same cost as the seed
DEFAULT_MAX_N_STEPS = 1000
DEFAULT_MAX_INTERNAL_BATCH_SIZE = 1024
DEFAULT_MAX_TOTAL_STEPS = 100_000  # instances x n_steps of one request
# Without an internal_batch_size, the scaled copies of one forward pass hold at most this many input
# elements: about 2 MB of input, ~0.3 GB of activations and gradients for a typical CNN.
INPUT_ELEMENTS_PER_PASS = 1 << 19


@dataclass(frozen=True, slots=True)
class ExplainOptions:
    """How one explanation is computed."""

    n_steps: int = DEFAULT_N_STEPS
    method: str = "gausslegendre"
    internal_batch_size: int | None = None  # None: derived from the input size (see passes)


@dataclass(frozen=True, slots=True)
class ExplainSettings:
    """A model's defaults, its bounds, and what it attributes to."""

    defaults: ExplainOptions = ExplainOptions()
    max_n_steps: int = DEFAULT_MAX_N_STEPS
    max_internal_batch_size: int = DEFAULT_MAX_INTERNAL_BATCH_SIZE
    max_total_steps: int = DEFAULT_MAX_TOTAL_STEPS
    baseline: float = 0.0  # the baseline's value everywhere (a token id for layer attribution)
    layer: str | None = None  # a submodule of the model (e.g. "embedding"): LayerIntegratedGradients
    # Intra-op threads of one explanation; None: every CPU while the model is otherwise idle (see
    # service.explain_threads). A number fixes it (1 keeps explanations to one core on busy nodes).
    threads: int | None = None


_CONFIG_KEYS = {
    "n_steps",
    "method",
    "internal_batch_size",
    "max_n_steps",
    "max_internal_batch_size",
    "max_total_steps",
    "baseline",
    "layer",
    "threads",
}
REQUEST_KEYS = ("n_steps", "method", "internal_batch_size")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(where: str, key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def explain_settings(model: str, archive: Any = None, configured: Any = None) -> ExplainSettings:
    """The ``explain`` objects of the archive's config file and of config.properties, merged and
    checked; a malformed one stops startup with a message naming the model and the key."""
    merged: dict[str, Any] = {}
    for source, value in (("the archive's config file", archive), ("config.properties models", configured)):
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(f"model {model!r}: 'explain' in {source} must be an object, got {value!r}")
        merged.update(value)
    where = f"model {model!r}: explain"
    unknown = sorted(set(merged) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown} (known: {sorted(_CONFIG_KEYS)})")
    settings = ExplainSettings()
    bounds = {
        key: _positive_int(where, key, merged[key])
        for key in ("max_n_steps", "max_internal_batch_size", "max_total_steps", "threads")
        if key in merged
    }
    settings = replace(settings, **bounds)
    if "baseline" in merged:
        baseline = merged["baseline"]
        if not isinstance(baseline, int | float) or isinstance(baseline, bool):
            raise ConfigError(f"{where}: baseline must be a number, got {baseline!r}")
        settings = replace(settings, baseline=float(baseline))
    if "layer" in merged:
        layer = merged["layer"]
        if not isinstance(layer, str) or not layer:
            raise ConfigError(f"{where}: layer must be a submodule name like 'embedding', got {layer!r}")
        settings = replace(settings, layer=layer)
    try:
        defaults = choose(settings, {k: merged[k] for k in REQUEST_KEYS if k in merged}, ExplainOptions())
    except InputError as exc:
        raise ConfigError(f"{where}: {exc.message.removeprefix('parameter ')}") from None
    return replace(settings, defaults=defaults)


def choose(settings: ExplainSettings, parameters: Any, base: ExplainOptions | None = None) -> ExplainOptions:
    """The options of one request: its ``parameters`` (n_steps, method, internal_batch_size) over
    the model's defaults, each within the model's bounds; a 400 names the parameter otherwise.
    Other keys of ``parameters`` are left to other readers (``target``)."""
    options = settings.defaults if base is None else base
    if parameters is None:
        return options
    if not isinstance(parameters, Mapping):
        raise InputError(f'"parameters" must be an object, not {type(parameters).__name__}')
    if "n_steps" in parameters:
        n_steps = parameters["n_steps"]
        if not _is_int(n_steps) or not 1 <= n_steps <= settings.max_n_steps:
            raise InputError(
                f"parameter n_steps must be an integer from 1 to {settings.max_n_steps}, got {n_steps!r}"
            )
        options = replace(options, n_steps=n_steps)
    if "method" in parameters:
        method = parameters["method"]
        if method not in METHODS:
            raise InputError(f"parameter method must be one of {', '.join(METHODS)}, got {method!r}")
        options = replace(options, method=method)
    if "internal_batch_size" in parameters:
        size = parameters["internal_batch_size"]
        if size is not None and (not _is_int(size) or not 1 <= size <= settings.max_internal_batch_size):
            raise InputError(
                "parameter internal_batch_size must be an integer from 1 to "
                f"{settings.max_internal_batch_size}, got {size!r}"
            )
        options = replace(options, internal_batch_size=size)
    if options.method.startswith("riemann") and options.n_steps < 2:
        raise InputError(f"parameter n_steps must be at least 2 with method {options.method!r}")
    return options


def check_work(settings: ExplainSettings, options: ExplainOptions, instances: int) -> None:
    """A request's total integration steps stay within ``max_total_steps``."""
    total = options.n_steps * instances
    if total > settings.max_total_steps:
        raise InputError(
            f"{instances} instances x n_steps {options.n_steps} = {total} integration steps, over this "
            f"model's limit of {settings.max_total_steps}; send fewer instances or steps"
        )


def target_of(value: Any, where: str) -> int | None:
    """A target as sent (an integer class index, or absent/null); a 400 for anything else."""
    if value is None:
        return None
    if not _is_int(value) or value < 0:
        raise InputError(f"{where}: target must be a non-negative integer class index, got {value!r}")
    return value


def request_targets(rows: list[Any], parameters: Any) -> list[int | None]:
    """One target per row: the row's own ``"target"`` (v1 instances), else ``parameters.target``
    (an integer for every row, or a list with one per row), else None (the predicted class)."""
    shared: Any = None
    if isinstance(parameters, Mapping) and parameters.get("target") is not None:
        shared = parameters["target"]
        if isinstance(shared, list):
            if len(shared) != len(rows):
                raise InputError(f"parameter target has {len(shared)} entries for {len(rows)} instances")
        else:
            shared = [shared] * len(rows)
    targets: list[int | None] = []
    for index, row in enumerate(rows):
        own = row.get("target") if isinstance(row, dict) else None
        if own is not None:
            targets.append(target_of(own, f"instance {index}"))
        elif shared is not None:
            targets.append(target_of(shared[index], f"instance {index}"))
        else:
            targets.append(None)
    return targets


def passes(options: ExplainOptions, instances: int, input_elements: int) -> tuple[int, int | None]:
    """How to split the work so each forward pass holds a bounded number of scaled inputs:
    ``(instances per Captum call, Captum's internal_batch_size or None for one pass per call)``."""
    rows_per_pass = options.internal_batch_size
    if rows_per_pass is None:
        rows_per_pass = max(1, INPUT_ELEMENTS_PER_PASS // max(1, input_elements))
    if options.n_steps <= rows_per_pass:
        return max(1, min(instances, rows_per_pass // options.n_steps)), None
    return 1, rows_per_pass
