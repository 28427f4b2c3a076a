"""Image transforms backed by ``torchvision.transforms.v2``.

Each factory takes the validated params of its ``transform`` component (see
:mod:`thelper_vision.transform_params`) and returns a ``torchvision.transforms.v2`` transform:
a picklable callable that maps one image tensor of shape ``(C, H, W)`` (uint8 or float; a
batch ``(N, C, H, W)`` works too) to a transformed tensor, or a joint sample (a dict of
``tv_tensors``: image with mask, boxes or target image, see :mod:`thelper_vision.joint`) to a
joint sample whose members moved together. Random transforms draw from torch's
global generator, so ``torch.manual_seed`` makes them reproducible.

Geometric transforms that create pixels outside the image (``pad``, ``random_crop`` with
``padding`` or ``pad_if_needed``, ``center_crop`` larger than the image, ``random_rotation``,
``random_affine``) fill images (and target images) with ``fill`` and masks
(``tv_tensors.Mask``) with :data:`MASK_FILL` (255, the segmentation task's default
``ignore_index``), so that padded pixels count in neither the loss nor the metrics instead
of training as class 0.

Geometric and colour transforms keep the input dtype. ``to_float`` turns uint8 images into
float32 in ``[0, 1]``; ``normalize`` does the same before normalising, so it accepts both.
"""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

__all__ = [
    "MASK_FILL",
    "CenterCrop",
    "Normalize",
    "center_crop",
    "color_jitter",
    "gaussian_blur",
    "minmax_normalize",
    "grayscale",
    "normalize",
    "pad",
    "random_affine",
    "random_crop",
    "random_erasing",
    "random_grayscale",
    "random_horizontal_flip",
    "random_resized_crop",
    "random_rotation",
    "random_vertical_flip",
    "resize",
    "sanitize_boxes",
    "to_float",
]


#: Value of the mask pixels that padding, rotations and shifts create: 255, the default
#: ``ignore_index`` of the ``segmentation`` task and of ``segmentation_folder`` (PASCAL
#: VOC's "void"). Masks are ``tv_tensors.Mask`` members of joint samples (uint8 or int64).
MASK_FILL = 255


def _seq(value: Any) -> Any:
    """Lists from the config become tuples (what torchvision documents); scalars pass."""
    return tuple(value) if isinstance(value, list) else value


def _fill(fill: float | list[float]) -> dict[Any, Any]:
    """torchvision's per-type fill: ``fill`` for images (``"others"``), :data:`MASK_FILL`
    for masks."""
    return {tv_tensors.Mask: MASK_FILL, "others": _seq(fill)}


def resize(*, size: int | list[int], interpolation: str = "bilinear",
           max_size: int | None = None, antialias: bool = True) -> v2.Transform:
    """Resize to ``size``: ``(C, H, W)`` -> ``(C, *size)`` (or shorter side = ``size``)."""
    return v2.Resize(_seq(size), interpolation=v2.InterpolationMode(interpolation),
                     max_size=max_size, antialias=antialias)


class CenterCrop(v2.CenterCrop):
    """``torchvision.transforms.v2.CenterCrop`` padding masks with :data:`MASK_FILL`.

    A crop larger than the image pads it first (torchvision pads everything with 0): images
    and target images still get 0, masks ``(H, W)`` or ``(1, H, W)`` get
    :data:`MASK_FILL`, with the same padding on each side so that they stay aligned.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.Mask):
            h, w = inpt.shape[-2:]
            ch, cw = self.size
            if ch > h or cw > w:  # as torchvision's _center_crop_compute_padding
                dh, dw = max(ch - h, 0), max(cw - w, 0)
                inpt = F.pad(inpt, [dw // 2, dh // 2, (dw + 1) // 2, (dh + 1) // 2],
                             fill=MASK_FILL)
        return super().transform(inpt, params)


def center_crop(*, size: int | list[int]) -> v2.Transform:
    """Crop the centre: ``(C, H, W)`` -> ``(C, *size)`` (padded first when smaller: images
    with 0, masks with :data:`MASK_FILL`)."""
    return CenterCrop(_seq(size))


def random_crop(*, size: int | list[int], padding: int | list[int] | None = None,
                pad_if_needed: bool = False, fill: float | list[float] = 0,
                padding_mode: str = "constant") -> v2.Transform:
    """Crop at a random position: ``(C, H, W)`` -> ``(C, *size)``; constant padding fills
    images with ``fill`` and masks with :data:`MASK_FILL`."""
    return v2.RandomCrop(_seq(size), padding=_seq(padding), pad_if_needed=pad_if_needed,
                         fill=_fill(fill), padding_mode=padding_mode)  # type: ignore[arg-type]


def random_resized_crop(*, size: int | list[int], scale: list[float], ratio: list[float],
                        interpolation: str = "bilinear", antialias: bool = True) -> v2.Transform:
    """Crop a random area and aspect ratio, then resize: ``(C, H, W)`` -> ``(C, *size)``.

    Szegedy et al., "Going deeper with convolutions", CVPR 2015 (the Inception crop).
    """
    return v2.RandomResizedCrop(_seq(size), scale=_seq(scale), ratio=_seq(ratio),
                                interpolation=v2.InterpolationMode(interpolation),
                                antialias=antialias)


def random_horizontal_flip(*, p: float = 0.5) -> v2.Transform:
    """Flip left-right with probability ``p``; shape and dtype are kept."""
    return v2.RandomHorizontalFlip(p=p)


def random_vertical_flip(*, p: float = 0.5) -> v2.Transform:
    """Flip upside-down with probability ``p``; shape and dtype are kept."""
    return v2.RandomVerticalFlip(p=p)


def random_rotation(*, degrees: float | list[float], interpolation: str = "nearest",
                    expand: bool = False, fill: float | list[float] = 0) -> v2.Transform:
    """Rotate by a random angle (degrees, counter-clockwise) about the centre; corners
    outside the image are ``fill`` in images, :data:`MASK_FILL` in masks."""
    return v2.RandomRotation(_seq(degrees), interpolation=v2.InterpolationMode(interpolation),
                             expand=expand, fill=_fill(fill))


def random_affine(*, degrees: float | list[float] = 0.0, translate: list[float] | None = None,
                  scale: list[float] | None = None, shear: float | list[float] | None = None,
                  interpolation: str = "nearest", fill: float | list[float] = 0) -> v2.Transform:
    """Random rotation, translation, scale and shear; the shape ``(C, H, W)`` is kept;
    pixels from outside the image are ``fill`` in images, :data:`MASK_FILL` in masks."""
    return v2.RandomAffine(_seq(degrees), translate=_seq(translate), scale=_seq(scale),
                           shear=_seq(shear), interpolation=v2.InterpolationMode(interpolation),
                           fill=_fill(fill))


def color_jitter(*, brightness: float | list[float] | None = None,
                 contrast: float | list[float] | None = None,
                 saturation: float | list[float] | None = None,
                 hue: float | list[float] | None = None) -> v2.Transform:
    """Random brightness, contrast, saturation and hue, applied in random order."""
    return v2.ColorJitter(brightness=_seq(brightness), contrast=_seq(contrast),
                          saturation=_seq(saturation), hue=_seq(hue))


def gaussian_blur(*, kernel_size: int | list[int],
                  sigma: float | list[float] = (0.1, 2.0)) -> v2.Transform:  # type: ignore[assignment]
    """Blur with a Gaussian kernel of random standard deviation in ``sigma`` (pixels)."""
    return v2.GaussianBlur(_seq(kernel_size), sigma=_seq(sigma))


class Normalize(v2.Normalize):
    """``(x - mean) / std`` per channel, scaling integer images to ``[0, 1]`` first.

    Input ``(..., C, H, W)`` uint8 or float; output float (float32 for integer inputs).

    Raises:
        ValueError: When called on an image whose channel count ``C`` differs from
            ``len(mean)`` (torchvision would silently broadcast a 1-channel image to 3).
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(
                inpt, tv_tensors.Image | tv_tensors.Video):
            return inpt  # masks and boxes of joint samples are not normalised
        if isinstance(inpt, torch.Tensor):
            channels = inpt.shape[-3] if inpt.ndim >= 3 else 1
            if len(self.mean) not in (1, channels):
                raise ValueError(
                    f"normalize has {len(self.mean)} mean/std values but the image has "
                    f"{channels} channels (shape {tuple(inpt.shape)}); give one value per "
                    "channel, or add a 'grayscale' transform before it"
                )
            if not inpt.is_floating_point():
                inpt = F.to_dtype(inpt, torch.float32, scale=True)
        return super().transform(inpt, params)


def normalize(*, mean: list[float], std: list[float]) -> v2.Transform:
    """Per-channel normalisation; uint8 inputs are scaled to ``[0, 1]`` first."""
    return Normalize(mean=list(mean), std=list(std))


def to_float(*, dtype: str = "float32", scale: bool = True) -> v2.Transform:
    """Cast to a float dtype; with ``scale``, uint8 ``[0, 255]`` maps to ``[0, 1]``.

    PIL images (e.g. samples of torchvision data sets such as ``FakeData``) are first turned
    into uint8 ``(C, H, W)`` tensors, like 0.6's ``torchvision.transforms.ToTensor``.
    """
    return v2.Compose([v2.PILToTensor(), v2.ToDtype(getattr(torch, dtype), scale=scale)])


def grayscale(*, num_output_channels: int = 1) -> v2.Transform:
    """RGB ``(3, H, W)`` -> grey ``(num_output_channels, H, W)`` (ITU-R 601-2 luma)."""
    return v2.Grayscale(num_output_channels=num_output_channels)


def random_grayscale(*, p: float = 0.1) -> v2.Transform:
    """Convert RGB to grey (kept as 3 channels) with probability ``p``."""
    return v2.RandomGrayscale(p=p)


def pad(*, padding: int | list[int], fill: float | list[float] = 0,
        padding_mode: str = "constant") -> v2.Transform:
    """Pad the borders: ``(C, H, W)`` -> ``(C, H + top + bottom, W + left + right)``;
    constant padding fills images with ``fill`` and masks with :data:`MASK_FILL`."""
    return v2.Pad(_seq(padding), fill=_fill(fill), padding_mode=padding_mode)  # type: ignore[arg-type]


def random_erasing(*, p: float = 0.5, scale: list[float], ratio: list[float],
                   value: float = 0.0) -> v2.Transform:
    """Erase a random rectangle with probability ``p`` (Zhong et al., AAAI 2020)."""
    return v2.RandomErasing(p=p, scale=_seq(scale), ratio=_seq(ratio), value=value)


def sanitize_boxes(*, min_size: float = 1.0, min_area: float = 1.0) -> v2.Transform:
    """Remove boxes smaller than ``min_size`` pixels (or ``min_area``) or outside the image,
    with their ``labels``, from joint detection samples (after random crops)."""
    return v2.SanitizeBoundingBoxes(min_size=min_size, min_area=min_area)


class MinMaxNormalize(v2.Transform):
    """Stretch each image linearly so that its minimum becomes ``low`` and its maximum
    ``high`` (OpenCV's ``cv2.normalize(..., NORM_MINMAX)``, which torchvision lacks), over
    all channels or per channel. Output float32; constant images map to ``low``. Masks and
    boxes of joint samples are left unchanged.
    """

    def __init__(self, low: float = 0.0, high: float = 1.0, per_channel: bool = False) -> None:
        super().__init__()
        self.low, self.high, self.per_channel = float(low), float(high), per_channel

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, tv_tensors.TVTensor) and not isinstance(
                inpt, tv_tensors.Image | tv_tensors.Video):
            return inpt
        x = inpt.as_subclass(torch.Tensor).float()
        dims = (-2, -1) if self.per_channel else (-3, -2, -1)
        lo = x.amin(dim=dims, keepdim=True)
        span = x.amax(dim=dims, keepdim=True) - lo
        out = (x - lo) / span.clamp(min=1e-12) * (self.high - self.low) + self.low
        out = torch.where(span > 0, out, torch.full_like(out, self.low))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out


def minmax_normalize(*, low: float = 0.0, high: float = 1.0,
                     per_channel: bool = False) -> v2.Transform:
    """Per-image min-max stretch to ``[low, high]`` (float32)."""
    return MinMaxNormalize(low, high, per_channel)
