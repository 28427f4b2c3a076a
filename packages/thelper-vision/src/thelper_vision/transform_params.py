"""Params models of the vision transforms (torch-free).

Each model mirrors the arguments of one ``torchvision.transforms.v2`` class, with config-friendly
types (lists instead of tuples, interpolation modes as strings). Sizes are ``[H, W]`` (height
first) or one int; angles are in degrees. This module must never import torch.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built, about a quarter of
# this module's import time, paid by ``thelper config validate``.

from typing import Annotated, Any, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from thelper.params import Params

__all__ = [
    "ResizeParams",
    "CenterCropParams",
    "RandomCropParams",
    "RandomResizedCropParams",
    "FlipParams",
    "RandomRotationParams",
    "RandomAffineParams",
    "ColorJitterParams",
    "GaussianBlurParams",
    "NormalizeParams",
    "ToFloatParams",
    "GrayscaleParams",
    "RandomGrayscaleParams",
    "PadParams",
    "RandomErasingParams",
]

#: ``[H, W]`` or one int.
Size = PositiveInt | Annotated[list[PositiveInt], Field(min_length=1, max_length=2)]
#: ``[low, high]``.
Pair = Annotated[list[float], Field(min_length=2, max_length=2)]
#: Interpolation modes that work on tensors.
Interpolation = Literal["nearest", "nearest-exact", "bilinear", "bicubic"]
#: A fill value for pixels outside the image: one value, or one per channel.
Fill = float | list[float]
#: Probability in [0, 1].
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def _ordered(value: list[float] | None, name: str) -> list[float] | None:
    if value is not None and value[0] > value[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high (got {value})")
    return value


def _padding_length(value: Any) -> Any:
    if isinstance(value, list) and len(value) not in (1, 2, 4):
        raise ValueError(f"padding must have 1, 2 or 4 values (got {len(value)})")
    return value


class ResizeParams(Params):
    """Params of ``resize`` (``torchvision.transforms.v2.Resize``).

    thelper 0.6 configs that give ``dsize: [width, height]`` (OpenCV order) are accepted and
    converted to ``size: [height, width]``.
    """

    size: Size
    """Output ``[H, W]``; one int resizes the shorter side to it, keeping the aspect ratio."""
    interpolation: Interpolation = "bilinear"
    """Interpolation mode."""
    max_size: PositiveInt | None = None
    """Upper bound of the longer side when ``size`` is one int."""
    antialias: bool = True
    """Low-pass filter when downsampling (bilinear and bicubic modes)."""

    @model_validator(mode="before")
    @classmethod
    def _from_dsize(cls, data: Any) -> Any:
        if isinstance(data, dict) and "dsize" in data:
            data = dict(data)
            if "size" in data:
                raise ValueError("give 'size' ([height, width]) or 'dsize', not both")
            dsize = data.pop("dsize")
            data["size"] = list(reversed(dsize)) if isinstance(dsize, list | tuple) else dsize
        return data


class CenterCropParams(Params):
    """Params of ``center_crop`` (``torchvision.transforms.v2.CenterCrop``)."""

    size: Size
    """Crop ``[H, W]`` (one int for a square); images smaller than it are zero-padded."""


class RandomCropParams(Params):
    """Params of ``random_crop`` (``torchvision.transforms.v2.RandomCrop``)."""

    size: Size
    """Crop ``[H, W]`` (one int for a square)."""
    padding: int | list[int] | None = None
    """Border added before cropping: one int for all sides, ``[left/right, top/bottom]`` or
    ``[left, top, right, bottom]``."""
    pad_if_needed: bool = False
    """Pad images smaller than ``size`` instead of failing."""
    fill: Fill = 0.0
    """Value of padded pixels (``padding_mode: constant`` only)."""
    padding_mode: Literal["constant", "edge", "reflect", "symmetric"] = "constant"
    """How padded pixels are filled."""

    @field_validator("padding")
    @classmethod
    def _check_padding(cls, value: int | list[int] | None) -> int | list[int] | None:
        return _padding_length(value)


class RandomResizedCropParams(Params):
    """Params of ``random_resized_crop`` (``torchvision.transforms.v2.RandomResizedCrop``)."""

    size: Size
    """Output ``[H, W]`` (one int for a square)."""
    scale: Pair = Field(default_factory=lambda: [0.08, 1.0])
    """Range of the crop area, as a fraction of the image area."""
    ratio: Pair = Field(default_factory=lambda: [3 / 4, 4 / 3])
    """Range of the crop aspect ratio (width / height)."""
    interpolation: Interpolation = "bilinear"
    """Interpolation mode."""
    antialias: bool = True
    """Low-pass filter when downsampling."""

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_range(cls, value: list[float], info: ValidationInfo) -> list[float]:
        return _ordered(value, str(info.field_name))


class FlipParams(Params):
    """Params of ``random_horizontal_flip`` and ``random_vertical_flip``."""

    p: Probability = 0.5
    """Probability of flipping each image."""


class RandomRotationParams(Params):
    """Params of ``random_rotation`` (``torchvision.transforms.v2.RandomRotation``)."""

    degrees: Annotated[float, Field(ge=0)] | Pair
    """Angle range in degrees: ``d`` means ``[-d, d]``, or give ``[low, high]``."""
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    """Interpolation mode."""
    expand: bool = False
    """Enlarge the output to hold the whole rotated image."""
    fill: Fill = 0.0
    """Value of pixels outside the rotated image."""


class RandomAffineParams(Params):
    """Params of ``random_affine`` (``torchvision.transforms.v2.RandomAffine``)."""

    degrees: Annotated[float, Field(ge=0)] | Pair = 0.0
    """Rotation range in degrees: ``d`` means ``[-d, d]``, or give ``[low, high]``."""
    translate: Annotated[list[Annotated[float, Field(ge=0, le=1)]],
                         Field(min_length=2, max_length=2)] | None = None
    """Largest ``[horizontal, vertical]`` shift, as fractions of the width and height."""
    scale: Pair | None = None
    """Range of the scale factor, e.g. ``[0.9, 1.1]``."""
    shear: float | Annotated[list[float], Field(min_length=2, max_length=4)] | None = None
    """Shear range in degrees: ``s`` means x-shear in ``[-s, s]``; ``[low, high]`` for x;
    ``[xlow, xhigh, ylow, yhigh]`` for both axes."""
    interpolation: Literal["nearest", "bilinear"] = "nearest"
    """Interpolation mode."""
    fill: Fill = 0.0
    """Value of pixels outside the transformed image."""

    @field_validator("shear")
    @classmethod
    def _shear_length(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) == 3:
            raise ValueError("shear must have 1, 2 or 4 values (got 3)")
        return value


class ColorJitterParams(Params):
    """Params of ``color_jitter`` (``torchvision.transforms.v2.ColorJitter``).

    ``saturation`` and ``hue`` need 3-channel (RGB) images.
    """

    brightness: Annotated[float, Field(ge=0)] | Pair | None = None
    """Brightness factor range: ``b`` means ``[max(0, 1 - b), 1 + b]``."""
    contrast: Annotated[float, Field(ge=0)] | Pair | None = None
    """Contrast factor range: ``c`` means ``[max(0, 1 - c), 1 + c]``."""
    saturation: Annotated[float, Field(ge=0)] | Pair | None = None
    """Saturation factor range: ``s`` means ``[max(0, 1 - s), 1 + s]``."""
    hue: Annotated[float, Field(ge=0, le=0.5)] | Pair | None = None
    """Hue shift range, in fractions of a turn: ``h`` means ``[-h, h]`` (``h <= 0.5``)."""


class GaussianBlurParams(Params):
    """Params of ``gaussian_blur`` (``torchvision.transforms.v2.GaussianBlur``)."""

    kernel_size: PositiveInt | Annotated[list[PositiveInt], Field(min_length=2, max_length=2)]
    """Odd kernel size in pixels, or ``[width, height]``."""
    sigma: Annotated[float, Field(gt=0)] | Pair = Field(default_factory=lambda: [0.1, 2.0])
    """Standard deviation in pixels, or a ``[low, high]`` range drawn uniformly."""

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, value: int | list[int]) -> int | list[int]:
        sizes = value if isinstance(value, list) else [value]
        if any(k % 2 == 0 for k in sizes):
            raise ValueError(f"kernel sizes must be odd (got {value})")
        return value


class NormalizeParams(Params):
    """Params of ``normalize``: ``(x - mean) / std`` per channel.

    uint8 inputs are first scaled to ``[0, 1]`` (as ``to_float`` does), so the ImageNet
    statistics ``mean: [0.485, 0.456, 0.406]``, ``std: [0.229, 0.224, 0.225]`` apply to both
    uint8 and float images.
    """

    mean: list[float] = Field(min_length=1)
    """Per-channel mean (one value per channel ``C``), in the ``[0, 1]`` intensity scale."""
    std: list[Annotated[float, Field(gt=0)]] = Field(min_length=1)
    """Per-channel standard deviation (same length as ``mean``), strictly positive."""

    @model_validator(mode="after")
    def _same_length(self) -> "NormalizeParams":
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std need one value per channel (got {len(self.mean)} and "
                f"{len(self.std)})"
            )
        return self


class ToFloatParams(Params):
    """Params of ``to_float`` (``torchvision.transforms.v2.ToDtype``)."""

    dtype: Literal["float32", "float16", "bfloat16", "float64"] = "float32"
    """Output floating-point dtype."""
    scale: bool = True
    """Scale integer images to ``[0, 1]`` (uint8 is divided by 255); float inputs are only cast."""


class GrayscaleParams(Params):
    """Params of ``grayscale`` (``torchvision.transforms.v2.Grayscale``)."""

    num_output_channels: Literal[1, 3] = 1
    """1 for a ``(1, H, W)`` output, 3 to repeat the grey level over three channels."""


class RandomGrayscaleParams(Params):
    """Params of ``random_grayscale`` (``torchvision.transforms.v2.RandomGrayscale``)."""

    p: Probability = 0.1
    """Probability of converting each image to grey (the channel count is kept)."""


class PadParams(Params):
    """Params of ``pad`` (``torchvision.transforms.v2.Pad``)."""

    padding: int | list[int]
    """Border in pixels: one int for all sides, ``[left/right, top/bottom]`` or
    ``[left, top, right, bottom]``."""
    fill: Fill = 0.0
    """Value of padded pixels (``padding_mode: constant`` only)."""
    padding_mode: Literal["constant", "edge", "reflect", "symmetric"] = "constant"
    """How padded pixels are filled."""

    @field_validator("padding")
    @classmethod
    def _check_padding(cls, value: int | list[int]) -> int | list[int]:
        return _padding_length(value)


class RandomErasingParams(Params):
    """Params of ``random_erasing`` (``torchvision.transforms.v2.RandomErasing``).

    Zhong et al., "Random Erasing Data Augmentation", AAAI 2020.
    """

    p: Probability = 0.5
    """Probability of erasing a rectangle in each image."""
    scale: Pair = Field(default_factory=lambda: [0.02, 0.33])
    """Range of the erased area, as a fraction of the image area."""
    ratio: Pair = Field(default_factory=lambda: [0.3, 3.3])
    """Range of the erased rectangle's aspect ratio."""
    value: float = 0.0
    """Value written in the erased rectangle."""

    @field_validator("scale", "ratio")
    @classmethod
    def _ordered_range(cls, value: list[float], info: ValidationInfo) -> list[float]:
        return _ordered(value, str(info.field_name))
