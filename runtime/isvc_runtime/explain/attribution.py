"""Integrated gradients with Captum over a model's preprocessed input.

``f`` is the model's forward output for the target class, exactly what Captum attributes: for the
MNIST example (``log_softmax``) the attributions of one instance sum to
``log_softmax(model(x))[target] - log_softmax(model(baseline))[target]`` (the completeness property,
up to the integration error that more ``n_steps`` shrinks).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from captum.attr._utils.approximation_methods import approximation_parameters

from ..errors import InputError
from .settings import ExplainOptions, passes


def forward_scores(model: Any, inputs: torch.Tensor) -> torch.Tensor:
    """The model's ``[N, classes]`` output, without gradients; a 400 for input the model rejects."""
    try:
        with torch.no_grad():
            output = model(inputs)
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise InputError(
            f"the model rejected an input of shape {list(inputs.shape)}: {_first_line(exc)}"
        ) from None
    if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != inputs.shape[0]:
        shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"explanations need a model output of shape [instances, classes]; this model returned {shape}"
        )
    return output


def resolve_layer(model: Any, name: str) -> torch.nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise InputError(f"the model has no layer {name!r} to attribute to") from None


def attribute(
    model: Any,
    inputs: torch.Tensor,
    targets: Sequence[int],
    options: ExplainOptions,
    *,
    baseline: float = 0.0,
    layer: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Attributions shaped like ``inputs``, one instance per row, each for its own target.

    Work is split into passes of bounded size (:func:`passes`); every pass computes Captum's numbers on
    a slice of the instances: :func:`integrated_gradients` when the pass holds all steps at once,
    Captum itself for internal batches and layer attribution. With a ``layer`` (token-id models),
    attributions of the layer's output are summed over its last dimension when that gives the input's
    shape (an embedding's ``[N, tokens, dim]`` → ``[N, tokens]``)."""
    if layer is None:
        if not inputs.is_floating_point():
            raise InputError(
                f"the model's input is {inputs.dtype} (token ids?): integrated gradients need a float input, "
                "or a layer to attribute to (explain.layer in the model's settings)"
            )
        method: Any = IntegratedGradients(model)
    else:
        method = LayerIntegratedGradients(model, layer)
    baselines = torch.full_like(inputs, baseline)
    count = inputs.shape[0]
    per_call, internal_batch_size = passes(options, count, inputs[0].numel())
    direct = layer is None and internal_batch_size is None
    parts = []
    for start in range(0, count, per_call):
        end = min(count, start + per_call)
        try:
            if direct:
                part = integrated_gradients(
                    model, inputs[start:end], baselines[start:end], targets[start:end], options
                )
            else:
                part = method.attribute(
                    inputs[start:end],
                    baselines=baselines[start:end],
                    target=list(targets[start:end]),
                    n_steps=options.n_steps,
                    method=options.method,
                    internal_batch_size=internal_batch_size,
                )
        except (torch.OutOfMemoryError, InputError):
            raise  # OutOfMemoryError: the server's trouble, not the input's: a 500
        except (RuntimeError, ValueError, IndexError, TypeError) as exc:
            # The model loaded and answered before: a failure here comes from the input's shape or type.
            raise InputError(
                f"the model rejected an input of shape {list(inputs.shape)}: {_first_line(exc)}"
            ) from None
        if isinstance(part, tuple):
            part = part[0]
        parts.append(part.detach())
    result = torch.cat(parts) if len(parts) > 1 else parts[0]
    if layer is not None and result.ndim == inputs.ndim + 1 and result.shape[: inputs.ndim] == inputs.shape:
        result = result.sum(dim=-1)
    return result


@functools.lru_cache(maxsize=64)
def step_coefficients(method: str, n_steps: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Captum's integration rule for ``method``: the FP32 step sizes (as Captum multiplies them) and
    the alphas, computed by Captum's own functions once per (method, n_steps) rather than per call
    (Gauss-Legendre nodes come from an eigenvalue problem, ~0.3 ms each time)."""
    step_sizes_func, alphas_func = approximation_parameters(method)
    step_sizes = torch.tensor(step_sizes_func(n_steps)).float()
    return step_sizes, tuple(alphas_func(n_steps))


def integrated_gradients(
    model: Any, inputs: torch.Tensor, baselines: torch.Tensor, targets: Sequence[int], options: ExplainOptions
) -> torch.Tensor:
    """Captum's ``IntegratedGradients(model).attribute(inputs, baselines, target=targets, n_steps,
    method)`` in one pass (no internal_batch_size), computed the same way without its per-call
    overhead (input formatting and validation, the integration rule recomputed, a hook-free forward
    wrapper): the same scaled inputs (step-major: all instances at alpha 0, then at alpha 1, ...),
    the same per-step targets, the same FP32 step weights and the same reduction order, so the result
    is Captum's (tests compare the two). Gradients are taken with respect to the scaled inputs only:
    ``torch.autograd.grad`` prunes the graph, so no parameter gradient is computed or accumulated."""
    n_steps = options.n_steps
    step_sizes, alphas = step_coefficients(options.method, n_steps)
    difference = inputs - baselines
    # One broadcast op, step-major ([n_steps, N, ...] -> [n_steps * N, ...]), each element Captum's
    # ``baseline + alpha * (input - baseline)``: a Python-float alpha multiplies in FP32 (FP64 for
    # FP64 inputs) and the product is rounded to the input's type, so are these.
    wide = torch.float64 if inputs.dtype == torch.float64 else torch.float32
    alpha = torch.tensor(alphas, dtype=wide, device=inputs.device).view(-1, *[1] * inputs.ndim)
    products = (alpha * difference).to(inputs.dtype)
    scaled = (baselines + products).reshape(-1, *inputs.shape[1:]).requires_grad_()
    index = torch.tensor(list(targets) * n_steps, device=inputs.device).view(-1, 1)
    with torch.enable_grad():
        output = model(scaled)
        if not isinstance(output, torch.Tensor) or output.ndim != 2 or output.shape[0] != scaled.shape[0]:
            shape = list(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise InputError(
                f"explanations need a model output of shape [instances, classes]; this model returned {shape}"
            )
        selected = output.gather(1, index)
        (grads,) = torch.autograd.grad(selected.sum(), scaled)
    weighted = grads.contiguous().view(n_steps, -1) * step_sizes.to(grads.device).view(n_steps, 1)
    total = weighted.reshape((n_steps, inputs.shape[0], *inputs.shape[1:])).sum(dim=0)
    return total * difference


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
