"""The example's handler: greyscale digit in, class index out (the seed answers ``{"predictions": [2]}``)."""

from __future__ import annotations

from typing import Any

import torch
from isvc_runtime.handlers import transforms
from isvc_runtime.handlers.image_classifier import ImageClassifier


class MNISTDigitClassifier(ImageClassifier):
    image_processing = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])

    def postprocess(self, data: torch.Tensor) -> list[Any]:
        return data.argmax(1).tolist()
