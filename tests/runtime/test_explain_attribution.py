"""The in-house integrated-gradients pass is Captum's IntegratedGradients, number for number.

:func:`isvc_runtime.explain.attribution.integrated_gradients` replaces Captum's call when all steps
fit one pass (the common case: it saves Captum's per-call overhead); these tests hold it to a direct
Captum call on the MNIST example's model for every integration rule, several instances each with its
own target, and check that explaining leaves the model's parameters without gradients.
"""

from __future__ import annotations

import copy

import pytest
import torch
from captum.attr import IntegratedGradients
from isvc_runtime.explain.attribution import attribute, integrated_gradients
from isvc_runtime.explain.settings import METHODS, ExplainOptions


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n_steps", [2, 15, 64])
def test_direct_pass_matches_captum_for_every_rule_and_own_targets(
    net: torch.nn.Module, method: str, n_steps: int
) -> None:
    generator = torch.Generator().manual_seed(n_steps)
    inputs = torch.rand(3, 1, 28, 28, generator=generator)
    baselines = torch.full_like(inputs, 0.25)
    targets = [7, 0, 3]
    expected = IntegratedGradients(net).attribute(
        inputs, baselines=baselines, target=targets, n_steps=n_steps, method=method
    )
    got = integrated_gradients(
        net, inputs, baselines, targets, ExplainOptions(n_steps=n_steps, method=method)
    )
    assert got.shape == inputs.shape
    torch.testing.assert_close(got, expected.detach(), rtol=0, atol=1e-5)
    # different targets give different attributions: each row used its own target
    other = integrated_gradients(
        net, inputs, baselines, [1, 1, 1], ExplainOptions(n_steps=n_steps, method=method)
    )
    assert not torch.allclose(other[0], got[0])


def test_attribute_uses_captum_numbers_whether_one_pass_or_internal_batches(net: torch.nn.Module) -> None:
    inputs = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    expected = IntegratedGradients(net).attribute(
        inputs, baselines=torch.zeros_like(inputs), target=[2, 5], n_steps=40
    )
    one_pass = attribute(net, inputs, [2, 5], ExplainOptions(n_steps=40))
    internal = attribute(net, inputs, [2, 5], ExplainOptions(n_steps=40, internal_batch_size=16))
    torch.testing.assert_close(one_pass, expected.detach(), rtol=0, atol=1e-5)
    torch.testing.assert_close(internal, expected.detach(), rtol=0, atol=1e-5)


def test_explaining_computes_no_parameter_gradients(net: torch.nn.Module) -> None:
    net.zero_grad(set_to_none=True)
    inputs = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(4))
    attributions = attribute(net, inputs, [4], ExplainOptions())
    assert torch.isfinite(attributions).all()
    assert all(parameter.grad is None for parameter in net.parameters())
    assert not attributions.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_direct_pass_is_captum_bit_for_bit_in_the_models_precision(
    net: torch.nn.Module, dtype: torch.dtype
) -> None:
    model = copy.deepcopy(net).to(dtype)
    inputs = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(5)).to(dtype)
    baselines = torch.zeros_like(inputs)
    expected = IntegratedGradients(model).attribute(inputs, baselines=baselines, target=[2, 9], n_steps=15)
    got = integrated_gradients(model, inputs, baselines, [2, 9], ExplainOptions(n_steps=15))
    assert got.dtype == dtype
    assert torch.equal(got, expected.detach())
