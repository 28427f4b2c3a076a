"""Params models of thelper-gui's components (pydantic; no torch, no OpenCV).

Imported when a config names one of them: the ``annotator:`` section
(:class:`AnnotatorSection`, one ``{type, params}`` slot of kind ``annotator``) and the
annotators. The datasets' params are in :mod:`thelper_gui.dataset_params`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, RootModel, field_validator, model_validator

from thelper.config import Slot
from thelper.params import Params

__all__ = ["AnnotatorSection", "LabelSpec", "SegmentationAnnotatorParams",
           "ClassificationAnnotatorParams", "BoxAnnotatorParams", "ViewerParams"]


class AnnotatorSection(RootModel[Slot[Literal["annotator"]]]):
    """The annotation tool ``thelper annot`` opens: ``{type: segmentation | classification
    | boxes, params: {...}}`` (thelper-gui)."""


class LabelSpec(Params):
    """One label of the palette (thelper 0.6's ``{id, name, color}`` form)."""

    id: int = Field(ge=0, le=255)
    """Value written in the mask PNG for this label (uint8)."""
    name: str = Field(min_length=1)
    """Name shown in the palette."""
    color: list[int] | None = Field(default=None, min_length=3, max_length=3)
    """``[r, g, b]`` (0-255) drawn over the image; default: the task's colour or a
    generated one. thelper 0.6 read this as ``[b, g, r]``: swap the two ends of 0.6
    configs to keep their colours."""

    @field_validator("color")
    @classmethod
    def _byte_range(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(not 0 <= c <= 255 for c in value):
            raise ValueError(f"colour components must be 0-255 (got {value})")
        return value


class _WindowParams(Params):
    window_name: str = Field(default="thelper-annot", min_length=1,
                             pattern=r"^[A-Za-z0-9_.+\- ]+$")
    """Title of the window (``xdotool search --name`` finds it)."""
    sample_input_key: str | None = None
    """Key of the image in a dataset sample (default: the task's ``input_key``; a joint
    sample's ``image``)."""
    start_sample_idx: int | None = Field(default=None, ge=0)
    """First sample shown in a new annotation session (a resumed one starts where it
    stopped)."""
    gui_bar_size: int = Field(default=22, ge=16, le=100)
    """Height in pixels of the status bar drawn under the image."""
    save_interval: float = Field(default=0.5, ge=0.0, le=3600.0)
    """Seconds changes wait in the journal (already on disk) before they are folded into
    the mask PNGs, ``labels.csv`` or ``boxes.json`` by the background thread."""


class SegmentationAnnotatorParams(_WindowParams):
    """A brush, an eraser and flood fill that paint label ids into a mask per image; saved
    as ``masks/<stem>.png`` (one uint8 label id per pixel)."""

    labels: list[LabelSpec] | None = Field(default=None, min_length=1, max_length=256)
    """The palette, ``[{id, name, color}]``; default: the task's classes, id = class
    index. Keys 1-9 pick the first nine."""
    background_id: int = Field(default=0, ge=0, le=255)
    """Label id the eraser paints."""
    default_fill_id: int = Field(default=0, ge=0, le=255)
    """Label id of every pixel of a new mask."""
    default_brush_radius: int = Field(default=10, ge=0, le=500)
    """Brush radius in pixels at start-up (``[`` and ``]`` change it)."""
    default_mask_opacity: float = Field(default=0.5, ge=0.0, le=1.0)
    """Opacity of the label colours over the image (``o`` and ``O`` change it)."""
    window_zoom_crop_size: int = Field(default=40, ge=8, le=400)
    """Side in image pixels of the area the zoom tooltip magnifies."""
    window_zoom_size: int = Field(default=200, ge=32, le=1000)
    """Side in screen pixels of the zoom tooltip."""
    brush_thickness: int = Field(default=1, ge=1, le=10)
    """Line width of the brush outline drawn at the cursor."""

    @model_validator(mode="after")
    def _unique_ids(self) -> SegmentationAnnotatorParams:
        if self.labels is not None:
            ids = [label.id for label in self.labels]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"label ids must be unique (repeated: {dupes})")
        return self


def _unique_names(names: list[str] | None) -> list[str] | None:
    if names is not None:
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"class names must be unique (repeated: {dupes})")
    return names


class ClassificationAnnotatorParams(_WindowParams):
    """Pick one class per image (number keys or a click in the class list), skip images, go
    back; saved as ``labels.csv`` (``sample, dataset, index, path, label``)."""

    classes: list[str] | None = Field(default=None, min_length=1, max_length=100)
    """The classes, in order (keys 1-9 then 0 pick the first ten); default: the task's
    class names."""
    advance: bool = True
    """Go to the next image after a class is picked or the image is skipped."""
    max_display_size: int = Field(default=800, ge=64, le=8192)
    """Longest side in screen pixels of a shown image: larger images are scaled down (the
    saved label does not depend on it)."""
    min_display_size: int = Field(default=256, ge=16, le=2048)
    """Images whose longest side is shorter are magnified by a whole factor (nearest
    neighbour), e.g. scikit-learn's 8x8 digits."""
    list_width: int = Field(default=220, ge=120, le=800)
    """Width in pixels of the class list drawn right of the image."""

    _names = field_validator("classes")(classmethod(lambda cls, v: _unique_names(v)))


class BoxAnnotatorParams(_WindowParams):
    """Draw, select, move, resize and delete boxes and change their class; saved as COCO
    JSON (``boxes.json``)."""

    classes: list[str] | None = Field(default=None, min_length=1, max_length=100)
    """The object classes (keys 1-9 then 0 pick the first ten); default: the task's class
    names. ``category_id`` in ``boxes.json`` is the class index + 1."""
    min_box_size: int = Field(default=3, ge=1, le=1000)
    """Drags shorter than this (pixels, either side) draw no box: a click selects."""
    handle_size: int = Field(default=6, ge=2, le=50)
    """Distance in pixels from a corner of the selected box within which a drag resizes
    it."""
    line_width: int = Field(default=2, ge=1, le=10)
    """Line width of the boxes."""

    _names = field_validator("classes")(classmethod(lambda cls, v: _unique_names(v)))


class ViewerParams(Params):
    """The batch viewer of ``thelper viz CONFIG --window``."""

    window_name: str = Field(default="thelper-viz", min_length=1,
                             pattern=r"^[A-Za-z0-9_.+\- ]+$")
    """Title of the window."""
    tile_size: int = Field(default=256, ge=32, le=2048)
    """Side in pixels of the square each sample is fitted into."""
    columns: int = Field(default=4, ge=1, le=16)
    """Samples per row."""
    mask_opacity: float = Field(default=0.45, ge=0.0, le=1.0)
    """Opacity of the masks over the images."""
