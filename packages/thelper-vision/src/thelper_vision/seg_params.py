"""Params models of semantic segmentation: its task, dataset, models and metrics.

Torch-free; see :mod:`thelper_vision.dense_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.


from pydantic import Field, field_validator

from thelper.params import Params
from thelper_vision.param_types import ColorMap, ImageMode, unique_class_names

__all__ = [
    "SegmentationTaskParams", "SegmentationFolderParams", "UNetParams",
    "TorchvisionSegmentationParams", "NoMetricParams", "SegmentationMasksParams",
]


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
        return unique_class_names(value)


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
        return unique_class_names(value)


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


class NoMetricParams(Params):
    """This metric takes no params."""


class SegmentationMasksParams(Params):
    """Params of ``segmentation_masks``."""

    max_images: int = Field(default=16, ge=1)
    """Images whose masks are written."""
    grid_images: int = Field(default=8, ge=1)
    """Images in the grid figure (TensorBoard)."""
