"""A token-id classifier: embedding, mean over tokens, linear. Integer input, float output."""

import torch
from torch import nn


class TokenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(20, 4)
        self.classifier = nn.Linear(4, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embedding(tokens).mean(dim=1))
