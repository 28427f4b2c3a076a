"""Params models of object detection: its task, dataset, models, loss, metric, loggers
and box transform.

Torch-free; see :mod:`thelper_vision.dense_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Annotated

from pydantic import Field, field_validator

from thelper.params import Params
from thelper_vision.param_types import ColorMap, ImageMode, unique_class_names

__all__ = [
    "DetectionTaskParams", "CocoDetectionParams", "TorchvisionDetectionParams",
    "SmallFasterRCNNParams", "DetectionLossParams", "MeanAveragePrecisionParams",
    "DetectionLoggerParams", "DetectionOverlaysParams", "SanitizeBoxesParams",
]


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
        return unique_class_names(value)


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


class DetectionLossParams(Params):
    """Params of ``detection_loss``: the weighted sum of a detector's loss dict."""

    weights: dict[str, float] | None = None
    """``{loss name: weight}`` (e.g. ``loss_box_reg: 2``); others weigh 1."""


class MeanAveragePrecisionParams(Params):
    """Params of ``mean_average_precision``."""

    iou: float | None = Field(default=None, gt=0.0, lt=1.0)
    """One IoU threshold (``0.5`` for mAP@0.5), or ``null`` for COCO's mean over
    0.50:0.05:0.95."""
    max_detections: int = Field(default=100, ge=1)
    """Highest-scoring detections kept per image and class."""


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
