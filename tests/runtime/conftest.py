"""Fixtures for the runtime tests: tiny models (weights written per session), images, archives, and the
MNIST example's data module and trained network."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch
from runtime_support import ASSETS, EXAMPLE_DIR
from support.modules import load_module

if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))


@pytest.fixture(scope="module")
def mnist() -> ModuleType:
    """examples/mnist/data.py: the MNIST test set from ../shared and request builders."""
    import data

    return data


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    """The example's trained Net, in eval mode."""
    from mnist import Net

    model = Net()
    model.load_state_dict(torch.load(EXAMPLE_DIR / "mnist_cnn.pt", weights_only=True))
    return model.eval()


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """State dicts, a TorchScript file and a torch.export program of the tiny test models."""
    out = tmp_path_factory.mktemp("weights")
    quadrant = load_module(ASSETS / "quadrant_net.py").QuadrantNet().eval()
    scale_sum = load_module(ASSETS / "scale_sum.py").ScaleSum()
    with torch.no_grad():
        scale_sum.scale.fill_(2.0)
        quadrant.weight.copy_(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    paths = {
        "quadrant": out / "quadrant.pt",
        "scale_sum": out / "scale_sum.pt",
        "quadrant_script": out / "quadrant_script.pt",
        "quadrant_export": out / "quadrant.pt2",
    }
    torch.save(quadrant.state_dict(), paths["quadrant"])
    torch.save(scale_sum.state_dict(), paths["scale_sum"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, but users still ship it
        torch.jit.script(quadrant).save(str(paths["quadrant_script"]))
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(quadrant, (torch.zeros(2, 1, 8, 8),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, str(paths["quadrant_export"]))
    return paths
