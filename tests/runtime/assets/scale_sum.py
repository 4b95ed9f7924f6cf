"""A tiny tensor model: each row's sum times ``scale`` (2.0 in the archive's state_dict)."""

import torch
from torch import nn


class ScaleSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1, keepdim=True) * self.scale
