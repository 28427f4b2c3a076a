"""Segmentation models: torchvision's architectures by name and a small U-Net.

Every factory takes the ``task`` (a :class:`thelper_vision.tasks.Segmentation`) and returns
an ``nn.Module`` mapping images ``(N, C, H, W)`` float to logits ``(N, K, H, W)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from thelper_vision.catalog import SEGMENTATION_MODELS
from thelper_vision.models import _adapt_and_load, _num_classes

__all__ = ["UNet", "unet", "OutputOf", "torchvision_segmentation", "SEGMENTATION_MODELS",
           "segmentation_zoo"]

class OutputOf(nn.Module):
    """Wrap a model that returns a dict and return one of its entries (``out`` for
    torchvision's segmentation models, whose ``aux`` head is then unused)."""

    def __init__(self, model: nn.Module, key: str = "out") -> None:
        super().__init__()
        self.model = model
        self.key = key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[self.key] if isinstance(out, dict) else out


def torchvision_segmentation(name: str, *, task: Any = None, in_channels: int = 3,
                             weights_path: str | None = None,
                             weights_strict: bool = True) -> nn.Module:
    """A ``torchvision.models.segmentation`` model with a head of ``task.num_classes``.

    Built with ``weights=None, weights_backbone=None, aux_loss=False``: nothing is
    downloaded (load a local state dict with ``weights_path``). The model is wrapped in
    :class:`OutputOf` so that it returns the ``out`` logits ``(N, K, H, W)``.

    Args:
        name: One of :data:`SEGMENTATION_MODELS`.
        task: The segmentation task.
        in_channels: Input channels; when not 3 the first convolution is replaced.
        weights_path: Local state dict of the unwrapped model.
        weights_strict: Fail on mismatched entries instead of skipping them.

    Raises:
        ValueError: Unknown name or no task.
    """
    from torchvision.models import get_model

    if name not in SEGMENTATION_MODELS:
        raise ValueError(f"{name!r} is not a torchvision segmentation model; choose one of "
                         f"{', '.join(SEGMENTATION_MODELS)}")
    model = get_model(name, weights=None, weights_backbone=None,
                      num_classes=_num_classes(task, name), aux_loss=False)
    return OutputOf(_adapt_and_load(model, in_channels, weights_path, weights_strict))


class _Block(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A small U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for
    Biomedical Image Segmentation", MICCAI 2015), with padded convolutions and batch norm.

    ``depth`` down-sampling stages (2x2 max pooling) of two ``3x3 conv - BN - ReLU``
    layers, channels doubling from ``base_channels``; the decoder upsamples (bilinear),
    concatenates the skip connection and applies two conv layers; a ``1x1`` convolution
    gives the logits. Inputs of any size work: they are padded to a multiple of
    ``2**depth`` and the logits cropped back.

    Args:
        num_classes: Output channels ``K``.
        in_channels: Input channels ``C``.
        base_channels: Channels of the first stage.
        depth: Number of down-sampling stages.

    Shape:
        ``(N, C, H, W)`` float -> ``(N, K, H, W)`` float.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, base_channels: int = 16,
                 depth: int = 3) -> None:
        super().__init__()
        widths = [base_channels * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.down = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.down.append(_Block(prev, w))
            prev = w
        self.up = nn.ModuleList(_Block(widths[i + 1] + widths[i], widths[i])
                                for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for block in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :h, :w]


def unet(*, task: Any = None, in_channels: int = 3, base_channels: int = 16,
         depth: int = 3) -> UNet:
    """Build :class:`UNet` with ``num_classes`` from the task."""
    return UNet(_num_classes(task, "unet"), in_channels, base_channels, depth)


class _Zoo:
    """``segmentation_zoo.<name>`` is the factory of one torchvision segmentation model
    (lazy ``"module:attr"`` references for the registry)."""

    def __getattr__(self, name: str) -> Any:
        if name not in SEGMENTATION_MODELS:
            raise AttributeError(f"no torchvision segmentation model named {name!r}")
        import functools

        return functools.partial(torchvision_segmentation, name)


segmentation_zoo = _Zoo()
