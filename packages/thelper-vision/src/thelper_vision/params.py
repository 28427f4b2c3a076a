"""Params models of the vision datasets and models (torch-free).

These pydantic models validate the ``params:`` of each ``{type, params}`` config slot that
names a vision component. They are imported when a config names one of these components
(the plugin registers them as ``"thelper_vision.params:Name"`` strings), so this module must
never import torch, torchvision, PIL or numpy. ``TORCHVISION_MODELS`` is re-exported from
:mod:`thelper_vision.catalog`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built, about a quarter of
# this module's import time, paid by ``thelper config validate``.

from typing import Literal

from pydantic import Field, field_validator

from thelper.params import Params, unique_class_names
from thelper_vision.catalog import TORCHVISION_MODELS

__all__ = [
    "TORCHVISION_MODELS",
    "ImageFolderParams",
    "SimpleCNNParams",
    "TorchvisionModelParams",
]


class ImageFolderParams(Params):
    """Params of the ``image_folder`` dataset: ``root/<class_name>/<image file>``."""

    root: str = Field(min_length=1)
    """Folder holding one sub-folder per class; nested folders inside a class are searched too."""
    extensions: list[str] = Field(
        default_factory=lambda: [".png", ".jpg", ".jpeg", ".bmp"], min_length=1
    )
    """File extensions to load (case-insensitive; the leading dot is optional)."""
    mode: Literal["RGB", "L", "unchanged"] = "RGB"
    """Decoding mode: ``RGB`` gives 3 channels, ``L`` 1 grey channel, ``unchanged`` the file's
    own channels (e.g. 4 for RGBA PNGs)."""
    classes: list[str] | None = Field(default=None, min_length=1)
    """Class sub-folders to use, in label-index order (default: every sub-folder of ``root``,
    sorted by name). Useful to keep the same label indices across several folders."""

    @field_validator("extensions")
    @classmethod
    def _normalise_extensions(cls, value: list[str]) -> list[str]:
        out = []
        for ext in value:
            ext = ext.strip().lower()
            if not ext or ext == ".":
                raise ValueError("extensions must not be empty strings")
            out.append(ext if ext.startswith(".") else f".{ext}")
        return out

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else unique_class_names(value)


class SimpleCNNParams(Params):
    """Params of the ``simple_cnn`` model (a small CNN for small images)."""

    in_channels: int = Field(1, ge=1)
    """Channels ``C`` of the ``(N, C, H, W)`` input (1 for grey images, 3 for RGB)."""
    channels: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    """Output channels of each stage (3x3 conv, batch norm, ReLU, 2x2 max pooling)."""
    hidden: int = Field(128, ge=1)
    """Width of the hidden fully connected layer of the classifier head."""
    dropout: float = Field(0.25, ge=0.0, lt=1.0)
    """Dropout probability before the last linear layer."""

    @field_validator("channels")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(c < 1 for c in value):
            raise ValueError(f"every stage needs at least one channel (got {value})")
        return value


class TorchvisionModelParams(Params):
    """Params of the ``torchvision.models`` classification architectures.

    The classifier head is sized from the task (``num_classes = len(task.class_names)``).
    Pretrained weights cannot be downloaded by thelper: save a state dict once (e.g.
    ``torch.save(torchvision.models.resnet18(weights="DEFAULT").state_dict(), "r18.pt")``)
    and give its path as ``weights_path``.
    """

    in_channels: int = Field(3, ge=1)
    """Channels ``C`` of the ``(N, C, H, W)`` input. When not 3, the first convolution is
    replaced by one with the same configuration and ``in_channels`` input channels."""
    weights: None = None
    """Must stay ``null``: weights are never downloaded; use ``weights_path``."""
    weights_path: str | None = None
    """Local state dict file (``torch.save(model.state_dict())``) loaded with
    ``torch.load(weights_only=True)``; a checkpoint dict holding it under ``model`` or
    ``state_dict`` works too. 3-channel first-conv weights are adapted to ``in_channels``."""
    weights_strict: bool = True
    """When false, weights whose names or shapes do not match (e.g. a 1000-class ImageNet
    head) are skipped with a warning and keep their fresh initialisation."""

    @field_validator("weights", mode="before")
    @classmethod
    def _no_download(cls, value: object) -> None:
        if value is not None:
            raise ValueError(
                f"pretrained weights cannot be downloaded (got weights={value!r}); save a "
                "state dict on a machine with internet access and give its path as "
                "'weights_path'"
            )
        return None
