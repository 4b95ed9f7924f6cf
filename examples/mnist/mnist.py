"""The MNIST network: TorchServe's example architecture, so its published ``mnist_cnn.pt`` loads too.

Layer names and shapes match ``examples/image_classifier/mnist/mnist.py`` in pytorch/serve: two 3x3
convolutions (1→32→64), a 2x2 max-pool, dropout, and two linear layers (9216→128→10) with
log-softmax output. This file is the archive's ``--model-file``: it defines exactly one ``nn.Module``.
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
        # Dropout holds no parameters, so plain Dropout keeps the state_dict identical; Dropout2d on the
        # flattened [N, 128] activations is deprecated in torch and warns on every call.
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = self.fc2(self.dropout2(x))
        return F.log_softmax(x, dim=1)
