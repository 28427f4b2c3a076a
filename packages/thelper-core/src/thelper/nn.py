"""Small generic models of the core (image models live in thelper-vision)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Multi-layer perceptron: ``Linear → ReLU → Dropout`` per hidden layer, then a linear head.

    Args:
        in_features: Features per sample ``F``.
        hidden: Hidden layer widths.
        dropout: Dropout probability after each hidden layer.
        task: The session task; the head has ``task.num_classes`` outputs.

    Shapes:
        input ``(N, F)`` float32 (any trailing shape is flattened) → logits ``(N, C)``.
    """

    def __init__(self, in_features: int, hidden: list[int], dropout: float = 0.0,
                 task: Any = None) -> None:
        super().__init__()
        out_features = getattr(task, "num_classes", None)
        if out_features is None:
            raise ValueError("mlp needs a classification task (class names) to size its head")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
