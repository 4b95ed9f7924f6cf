"""Integrated gradients with Captum over a model's preprocessed input.

``f`` is the model's forward output for the target class, exactly what Captum attributes: for the
MNIST example (``log_softmax``) the attributions of one instance sum to
``log_softmax(model(x))[target] - log_softmax(model(baseline))[target]`` (the completeness property,
up to the integration error that more ``n_steps`` shrinks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

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

    Work is split into passes of bounded size (:func:`passes`); every pass runs Captum on a slice of
    the instances, so the numbers are Captum's. With a ``layer`` (token-id models), attributions of the
    layer's output are summed over its last dimension when that gives the input's shape (an embedding's
    ``[N, tokens, dim]`` → ``[N, tokens]``)."""
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
    parts = []
    for start in range(0, count, per_call):
        end = min(count, start + per_call)
        try:
            part = method.attribute(
                inputs[start:end],
                baselines=baselines[start:end],
                target=list(targets[start:end]),
                n_steps=options.n_steps,
                method=options.method,
                internal_batch_size=internal_batch_size,
            )
        except torch.OutOfMemoryError:
            raise  # the server's trouble, not the input's: a 500
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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
