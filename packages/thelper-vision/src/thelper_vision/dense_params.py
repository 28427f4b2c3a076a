"""Params models of the dense vision tasks and their datasets, models and metrics.

Torch-free: imported when a config names one of these components (the plugin registers them
as ``"thelper_vision.dense_params:Name"`` strings). ``SEGMENTATION_MODELS`` and
``DETECTION_MODELS`` are re-exported from :mod:`thelper_vision.catalog`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built, about a quarter of
# this module's import time, paid by ``thelper config validate``.

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from thelper.params import Params
from thelper_vision.catalog import DETECTION_MODELS, SEGMENTATION_MODELS

__all__ = [
    "SEGMENTATION_MODELS", "DETECTION_MODELS",
    "SegmentationTaskParams", "DetectionTaskParams", "SuperResolutionTaskParams",
    "AutoencodingTaskParams", "SegmentationFolderParams", "CocoDetectionParams",
    "SuperResolutionFolderParams", "UNetParams", "TorchvisionSegmentationParams",
    "TorchvisionDetectionParams", "SmallFasterRCNNParams", "SRCNNParams",
    "ConvAutoencoderParams", "DetectionLossParams", "NoMetricParams", "ImageQualityParams",
    "SSIMParams", "MeanAveragePrecisionParams", "SegmentationMasksParams",
    "DetectionLoggerParams", "DetectionOverlaysParams", "SanitizeBoxesParams",
    "MinMaxNormalizeParams",
]

RGB = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
ColorMap = dict[str, RGB]
ImageMode = Literal["RGB", "L", "unchanged"]


def _unique(value: list[str]) -> list[str]:
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
    return value


# -------------------------------------------------------------------------------- tasks
class SegmentationTaskParams(Params):
    """Params of the ``segmentation`` task."""

    class_names: list[str] = Field(min_length=1)
    """Class names; mask value ``i`` is ``class_names[i]``."""
    input_key: str = "input"
    """Key of the image (or joint image + mask sample) in each sample."""
    label_key: str = "mask"
    """Key of the mask ``(N, H, W)`` in each batch."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along (e.g. ``path``)."""
    ignore_index: int | None = 255
    """Mask value of "dontcare" pixels, skipped by the loss and the metrics (``null``:
    none). Must not be a class index."""
    color_map: ColorMap | None = None
    """``{class name: [r, g, b]}`` used to draw masks; other classes get default colours."""

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, value: list[str]) -> list[str]:
        return _unique(value)


class DetectionTaskParams(Params):
    """Params of the ``detection`` task (boxes XYXY in pixels, labels ``0..K-1``)."""

    class_names: list[str] = Field(min_length=1)
    """Object classes, without a background class."""
    input_key: str = "input"
    """Key of the image (or joint image + boxes sample) in each sample."""
    label_key: str = "target"
    """Key of the per-image targets ``[{boxes, labels}]`` in each batch."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along (e.g. ``path``, ``image_id``)."""
    color_map: ColorMap | None = None
    """``{class name: [r, g, b]}`` used to draw boxes."""
    min_box_size: float = Field(default=1.0, ge=0.0)
    """Boxes narrower or lower than this many pixels (after the transforms) are dropped."""
    eval_loss: bool = True
    """Compute a validation loss by a training-mode forward pass without gradients (batch
    norm frozen); ``false`` reports 0 and saves that pass."""

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, value: list[str]) -> list[str]:
        return _unique(value)


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


# ----------------------------------------------------------------------------- datasets
class SegmentationFolderParams(Params):
    """Params of ``segmentation_folder``: ``images/<stem>.<ext>`` with
    ``masks/<stem><mask_suffix>.png`` (one class index per pixel)."""

    images: str = Field(min_length=1)
    """Folder of images."""
    masks: str = Field(min_length=1)
    """Folder of masks (grey or palette PNGs whose pixel values are class indices)."""
    class_names: list[str] = Field(min_length=1)
    """Class names, in index order."""
    mode: ImageMode = "RGB"
    """Image decoding mode."""
    mask_suffix: str = ""
    """Added to an image's stem to name its mask (e.g. ``_mask``)."""
    ignore_index: int | None = 255
    """Mask value of pixels to ignore."""
    color_map: ColorMap | None = None
    """``{class name: [r, g, b]}`` for drawing."""

    @field_validator("class_names")
    @classmethod
    def _unique_names(cls, value: list[str]) -> list[str]:
        return _unique(value)


class CocoDetectionParams(Params):
    """Params of ``coco_detection``: images plus a COCO-format JSON file."""

    images: str = Field(min_length=1)
    """Folder that the JSON's ``file_name`` entries are relative to."""
    annotations: str = Field(min_length=1)
    """COCO JSON file (``images``, ``annotations`` with ``bbox: [x, y, w, h]``,
    ``categories``)."""
    mode: ImageMode = "RGB"
    """Image decoding mode."""
    color_map: ColorMap | None = None
    """``{class name: [r, g, b]}`` for drawing."""


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


# ------------------------------------------------------------------------------- models
class UNetParams(Params):
    """Params of ``unet``."""

    in_channels: int = Field(3, ge=1)
    """Input channels ``C``."""
    base_channels: int = Field(16, ge=1)
    """Channels of the first stage (doubled at each down-sampling)."""
    depth: int = Field(3, ge=1, le=6)
    """Number of 2x down-sampling stages."""


class TorchvisionSegmentationParams(Params):
    """Params of the torchvision segmentation models (built without downloading
    weights; head sized from the task; ``aux_loss`` off)."""

    in_channels: int = Field(3, ge=1)
    """Input channels; when not 3 the first convolution is replaced."""
    weights_path: str | None = None
    """Local state dict of the torchvision model (``torch.save(model.state_dict())``)."""
    weights_strict: bool = True
    """When false, mismatched entries (e.g. another number of classes) are skipped."""


class TorchvisionDetectionParams(Params):
    """Params of the torchvision detectors (built with ``weights=None,
    weights_backbone=None``; ``K + 1`` classes with the background)."""

    in_channels: int = Field(3, ge=1)
    """Input channels; when not 3 the first convolution is replaced."""
    min_size: int | None = Field(default=None, ge=16)
    """Shorter image side after the detector's resizing (not for SSD models)."""
    max_size: int | None = Field(default=None, ge=16)
    """Upper bound of the longer side after resizing (not for SSD models)."""
    image_mean: list[float] | None = None
    """Per-channel mean of the detector's normalisation (default: ImageNet's)."""
    image_std: list[float] | None = None
    """Per-channel standard deviation of the normalisation (default: ImageNet's)."""
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    """Detections scoring below are dropped at inference."""
    detections_per_image: int = Field(default=100, ge=1)
    """Most detections returned per image."""
    weights_path: str | None = None
    """Local state dict of the detector."""
    weights_strict: bool = True
    """When false, mismatched entries are skipped."""


class SmallFasterRCNNParams(Params):
    """Params of ``small_fasterrcnn`` (a plain-CNN Faster R-CNN trainable on a CPU)."""

    in_channels: int = Field(3, ge=1)
    """Input channels."""
    channels: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [16, 32, 64, 64], min_length=1)
    """Width of each backbone stage (stride 2 between stages)."""
    anchor_sizes: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [16, 32, 64], min_length=1)
    """Anchor sizes in pixels of the resized image."""
    aspect_ratios: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.5, 1.0, 2.0], min_length=1)
    """Anchor height/width ratios."""
    representation_size: int = Field(128, ge=1)
    """Width of the box head's hidden layers."""
    min_size: int = Field(256, ge=16)
    """Shorter image side after the detector's resizing."""
    max_size: int = Field(1024, ge=16)
    """Upper bound of the longer side after resizing."""
    image_mean: list[float] | None = None
    """Per-channel mean of the detector's normalisation (default: ImageNet's)."""
    image_std: list[float] | None = None
    """Per-channel standard deviation of the normalisation (default: ImageNet's)."""
    score_threshold: float = Field(default=0.05, ge=0.0, le=1.0)
    """Detections scoring below are dropped at inference."""
    detections_per_image: int = Field(default=100, ge=1)
    """Most detections returned per image."""
    rpn_batch_size_per_image: int = Field(default=128, ge=1)
    """Anchors sampled per image to train the region proposal network."""
    box_batch_size_per_image: int = Field(default=64, ge=1)
    """Proposals sampled per image to train the box head (RoIAlign's backward pass costs
    time in proportion on a CPU)."""


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


# ---------------------------------------------------------------------- losses, metrics
class DetectionLossParams(Params):
    """Params of ``detection_loss``: the weighted sum of a detector's loss dict."""

    weights: dict[str, float] | None = None
    """``{loss name: weight}`` (e.g. ``loss_box_reg: 2``); others weigh 1."""


class NoMetricParams(Params):
    """This metric takes no params."""


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


class MeanAveragePrecisionParams(Params):
    """Params of ``mean_average_precision``."""

    iou: float | None = Field(default=None, gt=0.0, lt=1.0)
    """One IoU threshold (``0.5`` for mAP@0.5), or ``null`` for COCO's mean over
    0.50:0.05:0.95."""
    max_detections: int = Field(default=100, ge=1)
    """Highest-scoring detections kept per image and class."""


class SegmentationMasksParams(Params):
    """Params of ``segmentation_masks``."""

    max_images: int = Field(default=16, ge=1)
    """Images whose masks are written."""
    grid_images: int = Field(default=8, ge=1)
    """Images in the grid figure (TensorBoard)."""


class DetectionLoggerParams(Params):
    """Params of ``detection_logger``."""

    min_score: float = Field(default=0.05, ge=0.0, le=1.0)
    """Lowest detection score written."""


class DetectionOverlaysParams(Params):
    """Params of ``detection_overlays``."""

    max_images: int = Field(default=8, ge=1)
    """Images drawn."""
    min_score: float = Field(default=0.5, ge=0.0, le=1.0)
    """Lowest detection score drawn."""


class SanitizeBoxesParams(Params):
    """Params of ``sanitize_boxes`` (``torchvision.transforms.v2.SanitizeBoundingBoxes``)."""

    min_size: float = Field(default=1.0, ge=0.0)
    """Boxes narrower or lower than this (pixels) are removed with their labels."""
    min_area: float = Field(default=1.0, ge=0.0)
    """Boxes of a smaller area (square pixels) are removed with their labels."""


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
