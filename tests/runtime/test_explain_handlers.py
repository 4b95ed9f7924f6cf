"""Who explains: the handler's own explain_handle / get_insights, TorchServe's own handlers, Captum's
LayerIntegratedGradients for token ids (layer named by the archive's config file), and per-model
explain settings from config.properties — all archived by the real torch-model-archiver, served by
one real server."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients
from runtime_support import (
    ASSETS,
    EXAMPLE_DIR,
    MNIST_NET_FILES,
    MNIST_REQUEST,
    REPO_ROOT,
    RuntimeProcess,
    build_archive,
)

TS_HANDLER = REPO_ROOT / "tests" / "examples" / "handlers" / "ts_mnist_handler.py"

CONFIG = """\
load_models=all
models={"tight": {"1.0": {"explain": {"n_steps": 40, "max_n_steps": 50, "method": "riemann_trapezoid"}}}}
"""


def _token_net() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("token_net", ASSETS / "token_net.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(3)
    return module.TokenNet().eval()


@pytest.fixture(scope="module")
def token_net() -> torch.nn.Module:
    return _token_net()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, token_net: torch.nn.Module) -> Iterator[RuntimeProcess]:
    root = tmp_path_factory.mktemp("explain-handlers")
    store = root / "model-store"
    build_archive(store, "own", handler=ASSETS / "explain_own_handler.py", **MNIST_NET_FILES)
    build_archive(store, "insights", handler=ASSETS / "explain_insights_handler.py", **MNIST_NET_FILES)
    build_archive(store, "ts", handler=TS_HANDLER, **MNIST_NET_FILES)
    build_archive(store, "tight", handler=EXAMPLE_DIR / "mnist_handler.py", **MNIST_NET_FILES)
    build_archive(store, "upper", handler=ASSETS / "function_handler.py")
    weights = root / "token_net.pt"
    torch.save(token_net.state_dict(), weights)
    build_archive(
        store,
        "tokens",
        handler=ASSETS / "token_handler.py",
        model_file=ASSETS / "token_net.py",
        serialized_file=weights,
        config_file=ASSETS / "token_config.yaml",
    )
    named = root / "named" / "token_layer_handler.py"  # the handler names the layer, no config file
    named.parent.mkdir()
    named.write_text(
        (ASSETS / "token_handler.py")
        .read_text()
        .replace(
            "class TokenClassifier(BaseHandler):\n",
            'class TokenClassifier(BaseHandler):\n    explain_layer = "embedding"\n',
        )
    )
    build_archive(
        store, "tokens_named", handler=named, model_file=ASSETS / "token_net.py", serialized_file=weights
    )
    (root / "config").mkdir()
    (root / "config" / "config.properties").write_text(CONFIG)
    with RuntimeProcess(root, root / "runtime.log") as runtime:
        runtime.wait_ready()
        yield runtime


def post(server: RuntimeProcess, path: str, body: Any) -> Any:
    response = server.client.post(path, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def digit_png() -> str:
    return json.loads(MNIST_REQUEST.read_bytes())["instances"][0]["data"]


def test_a_handlers_own_explain_handle_answers_as_it_is(server: RuntimeProcess) -> None:
    body = {"instances": [{"data": digit_png(), "target": 4}, {"data": digit_png()}]}
    answer = post(server, "/v1/models/own:explain", body)
    assert answer == {
        "explanations": [
            {"explained_by": "handler", "shape": [2, 1, 28, 28], "target": 4},
            {"explained_by": "handler", "shape": [2, 1, 28, 28], "target": None},
        ]
    }


def test_get_insights_is_called_once_per_instance_with_its_own_target(server: RuntimeProcess) -> None:
    body = {"instances": [{"data": digit_png(), "target": 3}, {"data": digit_png(), "target": 8}]}
    answer = post(server, "/v1/models/insights:explain", body)
    assert answer == {
        "explanations": [
            {"target": 3, "rows": 1, "has_data": True},
            {"target": 8, "rows": 1, "has_data": True},
        ]
    }
    # without a target: the predicted class (the seed digit is a 2)
    answer = post(server, "/v1/models/insights:explain", {"instances": [{"data": digit_png()}]})
    assert answer["explanations"][0]["target"] == 2


def test_a_torchserve_handler_explains_the_torchserve_way(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    """TorchServe's VisionHandler: 15 steps, the first row's target for every row. Theirs wins."""
    body = {"instances": [{"data": digit_png(), "target": 3}, {"data": digit_png(), "target": 7}]}
    ours = np.asarray(post(server, "/v1/models/ts:explain", body)["explanations"], dtype=np.float32)
    x = mnist.to_tensor(np.stack([mnist.decode_png_b64(digit_png())] * 2))
    expected = IntegratedGradients(net).attribute(x, target=[3, 3], n_steps=15).detach().numpy()
    assert ours.shape == (2, 1, 28, 28)
    assert np.abs(ours - expected).max() < 1e-5


def test_config_properties_sets_the_models_default_and_bound(
    server: RuntimeProcess, mnist: ModuleType, net: torch.nn.Module
) -> None:
    body = {"instances": [{"data": digit_png(), "target": 2}]}
    ours = np.asarray(post(server, "/v1/models/tight:explain", body)["explanations"], dtype=np.float32)
    x = mnist.to_tensor(mnist.decode_png_b64(digit_png())[None])
    expected = IntegratedGradients(net).attribute(x, target=2, n_steps=40, method="riemann_trapezoid")
    assert np.abs(ours - expected.detach().numpy()).max() < 1e-5
    response = server.client.post("/v1/models/tight:explain", json={**body, "parameters": {"n_steps": 51}})
    assert response.status_code == 400
    assert "from 1 to 50" in response.json()["error"]


def test_token_ids_are_attributed_through_the_layer_the_config_or_handler_names(
    server: RuntimeProcess, token_net: torch.nn.Module
) -> None:
    tokens = [[1, 2, 3, 4], [5, 6, 7, 0], [9, 9, 2, 1]]
    body = {"instances": [{"data": t} for t in tokens], "parameters": {"target": [0, 2, 1]}}
    ours = np.asarray(post(server, "/v1/models/tokens:explain", body)["explanations"], dtype=np.float32)
    assert ours.shape == (3, 4)  # one attribution per token, like the input
    ids = torch.tensor(tokens)
    with torch.no_grad():
        f_x, f_baseline = token_net(ids), token_net(torch.zeros_like(ids))
    for i, target in enumerate([0, 2, 1]):
        difference = (f_x[i, target] - f_baseline[i, target]).item()
        assert abs(ours[i].sum() - difference) <= 0.01 * abs(difference) + 1e-6
    direct = LayerIntegratedGradients(token_net, token_net.embedding).attribute(
        ids, baselines=torch.zeros_like(ids), target=[0, 2, 1], n_steps=20
    )
    assert np.abs(ours - direct.sum(dim=-1).detach().numpy()).max() < 1e-5
    named = post(server, "/v1/models/tokens_named:explain", body)["explanations"]
    direct = LayerIntegratedGradients(token_net, token_net.embedding).attribute(
        ids, baselines=torch.zeros_like(ids), target=[0, 2, 1], n_steps=15
    )
    assert np.abs(np.asarray(named, dtype=np.float32) - direct.sum(dim=-1).detach().numpy()).max() < 1e-5
    response = server.client.post(
        "/v2/models/tokens/explain",
        json={"inputs": [{"name": "ids", "shape": [1, 4], "datatype": "INT64", "data": tokens[0]}]},
    )
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["shape"] == [1, 4] and output["datatype"] == "FP32"


def test_a_model_that_cannot_explain_says_so(server: RuntimeProcess) -> None:
    response = server.client.post("/v1/models/upper:explain", json={"instances": ["abc"]})
    assert response.status_code == 400
    assert "does not support explanations" in response.json()["error"]
    assert (
        post(server, "/v1/models/upper:predict", {"instances": ["abc"]})["predictions"][0]["upper"] == "ABC"
    )


def test_malformed_explain_settings_stop_startup_naming_the_key(tmp_path: Path) -> None:
    store = tmp_path / "model-store"
    build_archive(store, "mnist", handler=EXAMPLE_DIR / "mnist_handler.py", **MNIST_NET_FILES)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.properties").write_text(
        'models={"mnist": {"1.0": {"explain": {"n_steps": "many"}}}}\n'
    )
    runtime = RuntimeProcess(tmp_path, tmp_path / "runtime.log")
    try:
        assert runtime.process.wait(60) == 2
    finally:
        runtime.stop()
    assert "model 'mnist': explain: n_steps" in runtime.log()
