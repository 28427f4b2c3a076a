"""Params models of thelper-gui's datasets (pydantic; no torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from thelper.params import Params

__all__ = ["ImageFilesParams", "AnnotationsParams"]


class ImageFilesParams(Params):
    """Params of ``image_files``: every image of a folder, without labels."""

    root: str = Field(min_length=1)
    """Folder of images (``.png``, ``.jpg``, ``.tif``, ...; not recursive)."""
    mode: Literal["RGB", "L", "unchanged"] = "RGB"
    """Image decoding mode."""


class AnnotationsParams(Params):
    """Params of the ``annotations`` dataset: what ``thelper annot`` saved, loaded back."""

    session: str = Field(min_length=1)
    """Annotation session directory (``<save-dir>/<name>`` of ``thelper annot``)."""
    mode: Literal["RGB", "L", "unchanged"] = "RGB"
    """Image decoding mode."""
