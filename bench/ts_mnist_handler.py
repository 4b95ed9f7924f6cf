"""The MNIST handler for TorchServe's own worker (the bench's TorchServe archive).

TorchServe cannot import ``isvc_runtime``, so its archive carries this handler instead of
``examples/mnist/mnist_handler.py``: the same model file, weights and normalisation, on TorchServe's
``ImageClassifier`` (base64 PNG in, class index out; ``explain`` uses its VisionHandler's Captum
IntegratedGradients, 15 steps).
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import transforms
from ts.torch_handler.image_classifier import ImageClassifier

MEAN, STD = 0.1307, 0.3081


class MNISTDigitClassifier(ImageClassifier):
    image_processing = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return data.argmax(1).tolist()
