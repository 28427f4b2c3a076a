"""Params models of image-to-image tasks (super-resolution, autoencoding): their tasks,
dataset, models, image-quality metrics and the min-max normalisation.

Torch-free; see :mod:`thelper_vision.dense_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from thelper.params import Params
from thelper_vision.param_types import ImageMode

__all__ = [
    "SuperResolutionTaskParams", "AutoencodingTaskParams", "SuperResolutionFolderParams",
    "SRCNNParams", "ConvAutoencoderParams", "ImageQualityParams", "SSIMParams",
    "MinMaxNormalizeParams",
]


class SuperResolutionTaskParams(Params):
    """Params of the ``super_resolution`` task."""

    input_key: str = "input"
    """Key of the low-resolution input (or joint input + target sample)."""
    label_key: str = "target"
    """Key of the high-resolution target in each batch."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along."""
    target_min: float | None = 0.0
    """Evaluation outputs are clamped to at least this intensity (``null``: no bound)."""
    target_max: float | None = 1.0
    """Evaluation outputs are clamped to at most this intensity (``null``: no bound)."""


class AutoencodingTaskParams(Params):
    """Params of the ``autoencoding`` task (the target is the input)."""

    input_key: str = "input"
    """Key of the input in each sample."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along."""
    target_min: float | None = None
    """Evaluation outputs are clamped to at least this value."""
    target_max: float | None = None
    """Evaluation outputs are clamped to at most this value."""


class SuperResolutionFolderParams(Params):
    """Params of ``super_resolution_folder``: targets from a folder of images, inputs made
    by downscaling them."""

    root: str = Field(min_length=1)
    """Folder of high-resolution images."""
    scale: int = Field(default=2, ge=2, le=16)
    """Downscaling factor."""
    interpolation: Literal["bicubic", "bilinear", "area", "nearest"] = "bicubic"
    """Downscaling interpolation (antialiased for bicubic and bilinear)."""
    upsample: bool = True
    """Bicubic-upsample the inputs back to the target size (SRCNN protocol); needed for
    geometric transforms, which must see images of one size."""
    mode: ImageMode = "L"
    """Decoding mode: ``L`` (luminance) or ``RGB``."""
    patch_size: int | None = Field(default=None, ge=4)
    """Cut images into square tiles of this many pixels (``null``: whole images)."""
    stride: int | None = Field(default=None, ge=1)
    """Step between tiles (default: ``patch_size``, no overlap)."""


class SRCNNParams(Params):
    """Params of ``srcnn`` (Dong et al., ECCV 2014)."""

    in_channels: int = Field(1, ge=1)
    """Image channels (1 for luminance)."""
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [64, 32], min_length=2, max_length=2)
    """Widths of the first two layers."""
    kernel_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [9, 5, 5], min_length=3, max_length=3)
    """Kernel sizes of the three layers (odd)."""
    residual: bool = True
    """Add the input to the output (global residual learning, VDSR)."""

    @field_validator("kernel_sizes")
    @classmethod
    def _odd(cls, value: list[int]) -> list[int]:
        if any(k % 2 == 0 for k in value):
            raise ValueError(f"kernel sizes must be odd (got {value})")
        return value


class ConvAutoencoderParams(Params):
    """Params of ``conv_autoencoder``."""

    in_channels: int = Field(1, ge=1)
    """Image channels."""
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [16, 32], min_length=1)
    """Encoder stage widths (each halves the size)."""
    latent_dim: int | None = Field(default=None, ge=1)
    """Size of a linear bottleneck (needs ``input_size``)."""
    input_size: list[Annotated[int, Field(ge=1)]] | None = Field(
        default=None, min_length=2, max_length=2)
    """``[H, W]`` of the inputs."""
    output_activation: Literal["sigmoid", "none"] = "sigmoid"
    """``sigmoid`` for images in ``[0, 1]``."""

    @model_validator(mode="after")
    def _latent(self) -> "ConvAutoencoderParams":
        if self.latent_dim is not None and self.input_size is None:
            raise ValueError("latent_dim needs input_size [H, W]")
        return self


class ImageQualityParams(Params):
    """Params of ``psnr``."""

    data_range: float = Field(default=1.0, gt=0)
    """Intensity range ``R`` (1 for images in ``[0, 1]``, 255 for uint8 scales)."""
    border: int = Field(default=0, ge=0)
    """Pixels shaved from each side before comparing (often the SR scale)."""


class SSIMParams(ImageQualityParams):
    """Params of ``ssim``."""

    window: int = Field(default=11, ge=3)
    """Gaussian window size (odd)."""
    sigma: float = Field(default=1.5, gt=0)
    """Gaussian standard deviation in pixels."""


class MinMaxNormalizeParams(Params):
    """Params of ``minmax_normalize`` (per-image linear stretch, OpenCV's NORM_MINMAX)."""

    low: float = 0.0
    """Value of each image's minimum after the transform."""
    high: float = 1.0
    """Value of each image's maximum after the transform."""
    per_channel: bool = False
    """Stretch each channel separately (else one range over all channels)."""

    @model_validator(mode="after")
    def _ordered(self) -> "MinMaxNormalizeParams":
        if self.high <= self.low:
            raise ValueError(f"high must be greater than low (got {self.low}, {self.high})")
        return self


class ImagePanelsParams(Params):
    """Params of ``image_panels``."""

    max_images: int = Field(default=8, ge=1)
    """Images whose input | output | target panels are written."""
