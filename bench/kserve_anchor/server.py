"""KServe 0.21's Python model server around the bench's networks: the second anchor.

    bench/.venv-kserve/bin/python bench/kserve_anchor/server.py --workload mnist \
        --http_port 8080 --grpc_port 8081 [--workers 2] [KServe's other flags]

Written the way a KServe user writes a custom predictor: a ``kserve.Model`` subclass with ``load``,
``preprocess`` and ``predict``, started by ``kserve.ModelServer`` with KServe's own command line
(``kserve.model_server.parser``: ``--http_port``, ``--grpc_port``, ``--workers``, ``--enable_grpc`` ...).
Thread settings come from the environment (``OMP_NUM_THREADS``), as a KServe pod would set them.

- ``mnist``: the example's ``Net`` and ``mnist_cnn.pt``; a v1 instance ``{"data": <base64 PNG>}``, or a v2
  BYTES input of PNGs (REST: base64 strings; gRPC: the bytes themselves), becomes a tensor as our v1 path
  does it (ToTensor, Normalize(0.1307, 0.3081)); answers the digit, for v2 as an INT64 output
  ``output-0``. KServe hands ``preprocess`` a dict for v1 and an ``InferRequest`` for v2 REST and gRPC
  (kserve 0.21.0 ``protocol/grpc/servicer.py`` ``ModelInfer``: ``InferRequest.from_grpc``), and turns an
  ``InferResponse`` into either protocol's answer.
- ``resnet18``: torchvision's ResNet-18 with the weights file given by ``--weights``; the preprocessing
  and the answer of TorchServe's stock ``image_classifier`` (Resize 256, CenterCrop 224, ImageNet
  normalisation; softmax, top 5 as ``{label: probability}`` through ``--index-to-name``).

Runs in bench/.venv-kserve (bench/serving_env.py), which imports torch from the project venv.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import kserve
import torch
from kserve import InferOutput, InferRequest, InferResponse, model_server
from PIL import Image
from torchvision import models, transforms

REPO_ROOT = Path(__file__).resolve().parents[2]
MNIST_DIR = REPO_ROOT / "examples" / "mnist"
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def decode_instances(payload: dict[str, Any]) -> list[Image.Image]:
    images = []
    for instance in payload["instances"]:
        data = instance["data"] if isinstance(instance, dict) else instance
        images.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return images


def decode_v2(request: InferRequest) -> list[Image.Image]:
    """The images of a v2 request's first input: bytes as they came over gRPC, base64 text over REST."""
    values = request.inputs[0].data
    return [Image.open(io.BytesIO(v if isinstance(v, bytes) else base64.b64decode(v))) for v in values]


class MnistModel(kserve.Model):
    processing = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.net: torch.nn.Module | None = None
        self.load()

    def load(self) -> bool:
        # imported by name from the example's folder: ``--workers`` > 1 pickles the loaded model into
        # processes started with spawn, which import the network's class again by its module's name
        sys.path.insert(0, str(MNIST_DIR))
        from mnist import Net

        net = Net()
        net.load_state_dict(torch.load(MNIST_DIR / "mnist_cnn.pt", map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.ready = True
        return self.ready

    def preprocess(
        self, payload: dict[str, Any] | InferRequest, headers: dict[str, str] | None = None
    ) -> tuple[torch.Tensor, bool]:
        """The batch, and whether the request was v2."""
        v2 = isinstance(payload, InferRequest)
        images = decode_v2(payload) if v2 else decode_instances(payload)
        return torch.stack([self.processing(image) for image in images]), v2

    def predict(
        self, batch: tuple[torch.Tensor, bool], headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        assert self.net is not None
        tensor, v2 = batch
        with torch.inference_mode():
            digits = self.net(tensor).argmax(1).tolist()
        if not v2:
            return {"predictions": digits}
        output = InferOutput(name="output-0", shape=[len(digits)], datatype="INT64", data=digits)
        return InferResponse(response_id=str(uuid.uuid4()), model_name=self.name, infer_outputs=[output])


class ResNetModel(kserve.Model):
    processing = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ]
    )
    topk = 5

    def __init__(self, name: str, weights: Path, index_to_name: Path) -> None:
        super().__init__(name)
        self.weights, self.index_to_name = weights, index_to_name
        self.net: torch.nn.Module | None = None
        self.labels: dict[str, str] = {}
        self.load()

    def load(self) -> bool:
        net = models.resnet18()
        net.load_state_dict(torch.load(self.weights, map_location="cpu", weights_only=True))
        self.net = net.eval()
        self.labels = json.loads(self.index_to_name.read_text())
        self.ready = True
        return self.ready

    def preprocess(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> torch.Tensor:
        return torch.stack([self.processing(image.convert("RGB")) for image in decode_instances(payload)])

    def predict(self, batch: torch.Tensor, headers: dict[str, str] | None = None) -> dict[str, Any]:
        assert self.net is not None
        with torch.inference_mode():
            probabilities = torch.softmax(self.net(batch), dim=1)
        top, classes = torch.topk(probabilities, self.topk, dim=1)
        return {
            "predictions": [
                {self.labels[str(c)]: p for p, c in zip(row_p, row_c, strict=True)}
                for row_p, row_c in zip(top.tolist(), classes.tolist(), strict=True)
            ]
        }


def main() -> None:
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    parser.add_argument("--workload", choices=["mnist", "resnet18"], required=True)
    parser.add_argument("--weights", type=Path, help="resnet18: the state dict")
    parser.add_argument("--index-to-name", type=Path, help="resnet18: index_to_name.json")
    args, _ = parser.parse_known_args()
    if args.workload == "mnist":
        model: kserve.Model = MnistModel("mnist")
    else:
        model = ResNetModel("resnet18", args.weights, args.index_to_name)
    kserve.ModelServer().start([model])


if __name__ == "__main__":
    main()
