"""The MNIST example at model level: architecture, committed weights, data split, requests, model store."""

from __future__ import annotations

import json
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torch.nn.functional as F

# The parameters of TorchServe's example network (examples/image_classifier/mnist/mnist.py in pytorch/serve).
TORCHSERVE_MNIST_SHAPES = {
    "conv1.weight": (32, 1, 3, 3),
    "conv1.bias": (32,),
    "conv2.weight": (64, 32, 3, 3),
    "conv2.bias": (64,),
    "fc1.weight": (128, 9216),
    "fc1.bias": (128,),
    "fc2.weight": (10, 128),
    "fc2.bias": (10,),
}


def load_model(example_dir: Path) -> torch.nn.Module:
    from mnist import Net

    model = Net()
    model.load_state_dict(torch.load(example_dir / "mnist_cnn.pt", map_location="cpu", weights_only=True))
    return model.eval()


def test_net_has_torchserve_mnist_layer_names_and_shapes() -> None:
    from mnist import Net

    model = Net()
    assert {name: tuple(t.shape) for name, t in model.state_dict().items()} == TORCHSERVE_MNIST_SHAPES
    assert {"dropout1", "dropout2"} <= {name for name, _ in model.named_children()}


def torchserve_mnist_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """TorchServe's example network at inference, step by step, on a state_dict (dropout is the identity)."""
    x = F.relu(F.conv2d(x, state["conv1.weight"], state["conv1.bias"]))
    x = F.conv2d(x, state["conv2.weight"], state["conv2.bias"])  # no activation after conv2
    x = torch.flatten(F.max_pool2d(x, 2), 1)
    x = F.relu(F.linear(x, state["fc1.weight"], state["fc1.bias"]))
    return F.log_softmax(F.linear(x, state["fc2.weight"], state["fc2.bias"]), dim=1)


def test_net_computes_torchserves_forward_with_the_committed_weights(
    example_dir: Path, mnist_data: ModuleType, heldout: tuple
) -> None:
    model = load_model(example_dir)
    x = mnist_data.to_tensor(heldout[0][:200])
    with torch.inference_mode():
        torch.testing.assert_close(model(x), torchserve_mnist_forward(model.state_dict(), x))


def test_net_outputs_log_probabilities_for_a_batch() -> None:
    from mnist import Net

    out = Net().eval()(torch.zeros(3, 1, 28, 28))
    assert out.shape == (3, 10)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(3))


def test_committed_weights_are_a_plain_state_dict_with_torchserve_shapes(example_dir: Path) -> None:
    state = torch.load(example_dir / "mnist_cnn.pt", map_location="cpu", weights_only=True)
    assert {name: tuple(t.shape) for name, t in state.items()} == TORCHSERVE_MNIST_SHAPES


def test_committed_weights_reach_98_percent_on_the_heldout_images(
    example_dir: Path, mnist_data: ModuleType, heldout: tuple
) -> None:
    images, labels = heldout
    with torch.inference_mode():
        predicted = load_model(example_dir)(mnist_data.to_tensor(images)).argmax(1).numpy()
    assert (predicted == labels).mean() >= 0.98


def test_split_is_first_8000_for_training_and_last_2000_held_out(mnist_data: ModuleType) -> None:
    images, labels = mnist_data.load_images(), mnist_data.load_labels()
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    train_images, _ = mnist_data.train_split()
    held_images, held_labels = mnist_data.heldout_split()
    assert len(train_images) == 8000 and len(held_images) == 2000
    np.testing.assert_array_equal(train_images, images[:8000])
    np.testing.assert_array_equal(held_images, images[8000:])
    np.testing.assert_array_equal(held_labels, labels[8000:])


def test_truncated_idx_file_is_refused(mnist_data: ModuleType, tmp_path: Path) -> None:
    import gzip

    mnist = tmp_path / "data" / "mnist"
    mnist.mkdir(parents=True)
    (mnist / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(
            (2051).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0"
        )
    )
    with pytest.raises(ValueError, match="does not match shape"):
        mnist_data.load_images(tmp_path)


def test_the_mnist_request_is_a_2_that_the_model_classifies_as_2(
    example_dir: Path, mnist_data: ModuleType
) -> None:
    mnist_request = json.loads(mnist_data.mnist_request_path().read_text())
    image = mnist_data.decode_png_b64(mnist_request["instances"][0]["data"])
    assert image.shape == (28, 28)
    with torch.inference_mode():
        assert int(load_model(example_dir)(mnist_data.to_tensor(image[None])).argmax(1)) == 2


def test_requests_carry_the_images_losslessly(mnist_data: ModuleType, heldout: tuple) -> None:
    images = heldout[0][:3]
    v1 = mnist_data.v1_request(images)
    assert [set(i) for i in v1["instances"]] == [{"data", "target"}] * 3
    for instance, image in zip(v1["instances"], images, strict=True):
        np.testing.assert_array_equal(mnist_data.decode_png_b64(instance["data"]), image)

    (bytes_input,) = mnist_data.v2_bytes_request(images)["inputs"]
    assert bytes_input["datatype"] == "BYTES" and bytes_input["shape"] == [3]
    np.testing.assert_array_equal(mnist_data.decode_png_b64(bytes_input["data"][2]), images[2])

    (fp32_input,) = mnist_data.v2_fp32_request(images)["inputs"]
    assert fp32_input["datatype"] == "FP32" and fp32_input["shape"] == [3, 1, 28, 28]
    tensor = torch.tensor(fp32_input["data"]).reshape(3, 1, 28, 28)
    torch.testing.assert_close(tensor, mnist_data.to_tensor(images))
    assert tensor.min() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)


def test_model_store_has_the_torchserve_store_layout_built_by_the_real_archiver(model_store: Path) -> None:
    archive = model_store / "model-store" / "mnist.mar"
    with zipfile.ZipFile(archive) as mar:
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
        names = set(mar.namelist())
    assert manifest["archiverVersion"] == "0.12.0"
    assert manifest["model"] == {
        "modelName": "mnist",
        "modelVersion": "1.0",
        "serializedFile": "mnist_cnn.pt",
        "modelFile": "mnist.py",
        "handler": "mnist_handler.py",
    }
    assert {"mnist_cnn.pt", "mnist.py", "mnist_handler.py"} <= names


def read_properties(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def test_config_properties_has_the_kserve_sample_keys(model_store: Path) -> None:
    properties = read_properties(model_store / "config" / "config.properties")
    assert properties["inference_address"] == "http://0.0.0.0:8080"
    assert properties["metrics_address"] == "http://0.0.0.0:8082"
    assert properties["enable_envvars_config"] == "true"
    assert properties["metrics_format"] == "prometheus"
    assert properties["model_store"] == "/mnt/models/model-store"
    snapshot = json.loads(properties["model_snapshot"])
    assert snapshot["modelCount"] == 1
    assert snapshot["models"]["mnist"]["1.0"]["marName"] == "mnist.mar"
    assert snapshot["models"]["mnist"]["1.0"]["defaultVersion"] is True


def test_canary_store_carries_version_2_in_manifest_and_snapshot(tmp_path: Path) -> None:
    import build_model_store

    out = build_model_store.build_model_store(tmp_path / "v2", version="2.0")
    with zipfile.ZipFile(out / "model-store" / "mnist.mar") as mar:
        assert json.loads(mar.read("MAR-INF/MANIFEST.json"))["model"]["modelVersion"] == "2.0"
    snapshot = json.loads(read_properties(out / "config" / "config.properties")["model_snapshot"])
    assert list(snapshot["models"]["mnist"]) == ["2.0"]


def test_archives_of_one_model_name_built_at_once_are_each_complete(tmp_path: Path) -> None:
    """torch-model-archiver stages in $TMPDIR/<model-name>: concurrent runs (parallel test sessions) must not
    share that folder."""
    import build_model_store

    with ThreadPoolExecutor(3) as pool:
        archives = list(pool.map(lambda n: build_model_store.build_archive(tmp_path / str(n)), range(3)))
    for archive in archives:
        with zipfile.ZipFile(archive) as mar:
            assert mar.testzip() is None
            assert mar.read("mnist_cnn.pt") == build_model_store.WEIGHTS.read_bytes()


def test_cli_defaults_to_the_ignored_example_model_store(example_dir: Path) -> None:
    import build_model_store

    assert example_dir / "model-store" == build_model_store.DEFAULT_OUT
    repo = example_dir.parents[1]
    for generated in (
        "examples/mnist/model-store/config/config.properties",
        "examples/mnist/model-store/x.mar",
    ):
        check = subprocess.run(["git", "check-ignore", "-q", generated], cwd=repo, check=False)
        assert check.returncode == 0, f"{generated} is not git-ignored"
