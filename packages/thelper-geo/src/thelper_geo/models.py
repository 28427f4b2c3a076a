"""``dense_cnn``: a small fully convolutional network with per-pixel outputs.

Dilated 3×3 convolutions (Yu & Koltun, "Multi-scale context aggregation by dilated
convolutions", ICLR 2016) widen the receptive field without down-sampling, so any tile size
works and outputs keep the input's size: logits ``(N, K, H, W)`` for segmentation, values
``(N, 1, H, W)`` for per-pixel regression.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from thelper.exceptions import ConfigError

__all__ = ["DenseCNN", "dense_cnn"]


class DenseCNN(nn.Module):
    """Conv-BN-ReLU layers with growing dilation, then a 1×1 head.

    Args:
        in_channels: Input channels ``C``.
        out_channels: Output channels ``K``.
        channels: Hidden channels.
        dilations: Dilation of each hidden 3×3 convolution.

    Shapes:
        input ``(N, C, H, W)`` float32 → output ``(N, K, H, W)`` float32.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 32,
                 dilations: Sequence[int] = (1, 2, 4)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for d in dilations:
            layers += [nn.Conv2d(c, channels, 3, padding=d, dilation=d, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
            c = channels
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _out_channels(task: Any) -> int:
    shape = getattr(task, "target_shape", None)
    if shape is not None:  # per-pixel regression: target (C, H, W)
        if len(shape) != 3:
            raise ConfigError(f"dense_cnn predicts per-pixel values; the regression task's "
                              f"target_shape {list(shape)} is not [C, H, W]")
        return int(shape[0])
    n = getattr(task, "num_classes", None)
    if n is None:
        raise ConfigError("dense_cnn needs a segmentation or regression task, or "
                          "params.out_channels")
    return int(n)


def dense_cnn(*, task: Any = None, in_channels: int = 3, channels: int = 32,
              dilations: Sequence[int] = (1, 2, 4), out_channels: int | None = None
              ) -> DenseCNN:
    """Build :class:`DenseCNN`; ``out_channels`` defaults to the task's classes (or the
    regression target's channels)."""
    return DenseCNN(in_channels, out_channels or _out_channels(task), channels, dilations)
