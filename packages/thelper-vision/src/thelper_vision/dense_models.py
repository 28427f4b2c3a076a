"""Image-to-image models: SRCNN for super-resolution and a convolutional autoencoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["SRCNN", "srcnn", "ConvAutoencoder", "conv_autoencoder"]


class SRCNN(nn.Module):
    """SRCNN (Dong, Loy, He & Tang, "Learning a Deep Convolutional Network for Image
    Super-Resolution", ECCV 2014): patch extraction, non-linear mapping and reconstruction
    convolutions (9-5-5 kernels, 64-32 channels by default) on the bicubic-upsampled input.

    Padded convolutions keep the size (replicate padding). With ``residual`` the network
    predicts the missing detail that is added to its input (the global residual learning of
    Kim, Lee & Lee, VDSR, CVPR 2016), which starts from the bicubic result and trains much
    faster than the original formulation.

    Args:
        in_channels: Image channels ``C`` (1 for luminance).
        channels: Widths of the first two layers.
        kernel_sizes: Kernel sizes of the three layers (odd).
        residual: Add the input to the output.

    Shape:
        ``(N, C, H, W)`` float -> ``(N, C, H, W)`` float.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (64, 32),
                 kernel_sizes: Sequence[int] = (9, 5, 5), residual: bool = True) -> None:
        super().__init__()
        c1, c2 = channels
        k1, k2, k3 = kernel_sizes

        def conv(cin: int, cout: int, k: int) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, k, padding=k // 2, padding_mode="replicate")

        self.body = nn.Sequential(conv(in_channels, c1, k1), nn.ReLU(inplace=True),
                                  conv(c1, c2, k2), nn.ReLU(inplace=True),
                                  conv(c2, in_channels, k3))
        self.residual = residual
        if residual:  # start from the identity: the last layer predicts a small correction
            last = self.body[-1]
            nn.init.normal_(last.weight, std=1e-3)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


def srcnn(*, task: Any = None, in_channels: int = 1, channels: Sequence[int] = (64, 32),
          kernel_sizes: Sequence[int] = (9, 5, 5), residual: bool = True) -> SRCNN:
    """Build :class:`SRCNN` (the task is not needed: output size = input size)."""
    return SRCNN(in_channels, list(channels), list(kernel_sizes), residual)


class ConvAutoencoder(nn.Module):
    """A convolutional autoencoder.

    Encoder: stages of ``3x3 conv (stride 2) - BN - ReLU`` with ``channels`` widths; with
    ``latent_dim``, a linear bottleneck of that size (needs ``input_size``). Decoder: the
    mirror image with ``4x4`` transposed convolutions (stride 2), then a ``3x3``
    convolution to ``in_channels`` and the ``output_activation`` (``sigmoid`` for images in
    ``[0, 1]``). Sides must be divisible by ``2 ** len(channels)``.

    Args:
        in_channels: Image channels ``C``.
        channels: Encoder stage widths.
        latent_dim: Size of the linear bottleneck (``None``: the last feature map is the
            code).
        input_size: ``[H, W]`` of the inputs (required with ``latent_dim``).
        output_activation: ``sigmoid`` or ``none``.

    Shape:
        ``(N, C, H, W)`` float -> ``(N, C, H, W)`` float.
    """

    def __init__(self, in_channels: int = 1, channels: Sequence[int] = (16, 32),
                 latent_dim: int | None = None, input_size: Sequence[int] | None = None,
                 output_activation: str = "sigmoid") -> None:
        super().__init__()
        enc: list[nn.Module] = []
        prev = in_channels
        for w in channels:
            enc += [nn.Conv2d(prev, w, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True)]
            prev = w
        self.encoder = nn.Sequential(*enc)
        self.bottleneck: nn.Module = nn.Identity()
        if latent_dim is not None:
            if input_size is None:
                raise ValueError("conv_autoencoder: latent_dim needs input_size [H, W]")
            f = 2 ** len(channels)
            h, w = int(input_size[0]), int(input_size[1])
            if h % f or w % f:
                raise ValueError(f"conv_autoencoder: input_size {[h, w]} must be divisible "
                                 f"by {f}")
            shape = (prev, h // f, w // f)
            n = prev * shape[1] * shape[2]
            self.bottleneck = nn.Sequential(nn.Flatten(), nn.Linear(n, latent_dim),
                                            nn.ReLU(inplace=True), nn.Linear(latent_dim, n),
                                            nn.ReLU(inplace=True), nn.Unflatten(1, shape))
        dec: list[nn.Module] = []
        for w in [*reversed(channels[:-1]), channels[0]]:
            dec += [nn.ConvTranspose2d(prev, w, 4, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            prev = w
        dec.append(nn.Conv2d(prev, in_channels, 3, padding=1))
        if output_activation == "sigmoid":
            dec.append(nn.Sigmoid())
        elif output_activation != "none":
            raise ValueError(f"output_activation must be 'sigmoid' or 'none' (got "
                             f"{output_activation!r})")
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.bottleneck(self.encoder(x)))


def conv_autoencoder(*, task: Any = None, in_channels: int = 1,
                     channels: Sequence[int] = (16, 32), latent_dim: int | None = None,
                     input_size: Sequence[int] | None = None,
                     output_activation: str = "sigmoid") -> ConvAutoencoder:
    """Build :class:`ConvAutoencoder` (the task is not needed)."""
    return ConvAutoencoder(in_channels, list(channels), latent_dim, input_size,
                           output_activation)
