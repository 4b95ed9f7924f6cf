"""The MNIST network: the one TorchServe's example serves, layer for layer and step for step.

It computes what ``examples/image_classifier/mnist/mnist.py`` in pytorch/serve computes: conv1 (1→32,
3x3) and a ReLU, conv2 (32→64, 3x3) with *no* activation of its own, a 2x2 max-pool, dropout, flatten,
fc1 (9216→128) and a ReLU, dropout, fc2 (128→10), log-softmax. Same layer names and shapes, so a
``state_dict`` made for either network loads into the other and gives the same answers.
This file is the archive's ``--model-file``: it defines exactly one ``nn.Module``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        # Dropout holds no parameters and is the identity in eval mode, so plain Dropout leaves the
        # state_dict and every inference answer as they are; Dropout2d on the flattened [N, 128]
        # activations (TorchServe's choice) is deprecated in torch and warns on every call.
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        # conv2 goes straight into the max-pool, unactivated: TorchServe's network does it so, and weights
        # trained for one forward answer wrongly under the other.
        x = self.dropout1(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = self.fc2(self.dropout2(x))
        return F.log_softmax(x, dim=1)
