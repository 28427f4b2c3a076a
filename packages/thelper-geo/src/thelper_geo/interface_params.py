"""Params models of the dataset interfaces (``bigearthnet``, ``agriculture_vision``).

Imports only pydantic and :mod:`thelper.params`, like :mod:`thelper_geo.params`: validating a
config never imports rasterio, PIL or torch.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Literal

from pydantic import Field, field_validator

from thelper.params import Params
from thelper_geo.params import local_path

__all__ = ["S2_BANDS", "BigEarthNetParams", "AgricultureVisionParams"]

#: The 12 bands of BigEarthNet-S2 v1.0 patches (Sentinel-2 L2A without B10), in file order.
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11",
            "B12")


class BigEarthNetParams(Params):
    """BigEarthNet-S2 v1.0: 120×120 Sentinel-2 patches with multi-label CORINE land cover."""

    root: str
    """Folder holding one sub-folder per patch (``<patch>/<patch>_B01.tif`` ...,
    ``<patch>/<patch>_labels_metadata.json``), e.g. ``BigEarthNet-v1.0``."""
    bands: list[str] = Field(default_factory=lambda: list(S2_BANDS), min_length=1)
    """Bands to stack, in this order (names as in the files: ``B01`` ... ``B12``, ``B8A``)."""
    nomenclature: Literal[19, 43] = 19
    """Label set: the 19 classes of Sumbul et al. 2021 (the recommended one; labels are mapped
    from the 43 CORINE classes of the files) or the original 43."""
    resampling: Literal["nearest", "bilinear", "cubic"] = "bilinear"
    """How the 20 m (60×60) and 60 m (20×20) bands are resampled onto the 10 m 120×120
    grid."""
    offset: float | list[float] = 0.0
    """Subtracted from the digital numbers (one value, or one per band in ``bands``)."""
    scale: float | list[float] = 10000.0
    """Divisor after ``offset`` (default 10000: L2A digital numbers to reflectance)."""
    patches: str | None = None
    """A CSV/text file listing the patch names to use, one per line (first column), such as
    the official ``train.csv``/``val.csv``/``test.csv``; default: every patch under
    ``root``."""
    exclude: list[str] = Field(default_factory=list)
    """CSV/text files of patch names to leave out (e.g. ``patches_with_cloud_and_shadow.csv``,
    ``patches_with_seasonal_snow.csv``)."""
    group_by_tile: bool = True
    """Split by Sentinel-2 tile acquisition (the patch name without its ``_row_col``
    suffix), so neighbouring patches never straddle train and test."""

    @field_validator("root", "patches")
    @classmethod
    def _local(cls, value: str | None) -> str | None:
        return local_path(value)

    @field_validator("exclude")
    @classmethod
    def _local_list(cls, value: list[str]) -> list[str]:
        for path in value:
            local_path(path)
        return value

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, value: list[str]) -> list[str]:
        unknown = [b for b in value if b not in S2_BANDS]
        if unknown:
            raise ValueError(f"unknown band {unknown[0]!r}; BigEarthNet-S2 bands are "
                             f"{', '.join(S2_BANDS)}")
        if len(set(value)) != len(value):
            raise ValueError(f"bands are repeated: {value}")
        return value


class AgricultureVisionParams(Params):
    """Agriculture-Vision: aerial RGB + NIR field images with per-class anomaly masks."""

    root: str
    """The data set folder, holding ``train/``, ``val/`` and ``test/``."""
    split: str = "train"
    """Sub-folder to read: ``train``, ``val`` or ``test`` (the test split has no labels)."""
    classes: list[str] | None = None
    """Label folders (``labels/<class>/``) to use, in priority order where labels overlap
    (the first listed wins); class 0 is ``background``. Default: every folder under
    ``labels/``, sorted."""
    nir: bool = True
    """Stack the NIR image as a 4th channel (``images/nir/``)."""
    group_by_field: bool = True
    """Split by field id (the name before ``_x1-y1-x2-y2``): the overlapping crops of one
    field never straddle train and test."""

    _local = field_validator("root")(local_path)

    @field_validator("split")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not value or "/" in value or "\\" in value or value in (".", ".."):
            raise ValueError(f"split must be a folder name such as train, val or test (got "
                             f"{value!r})")
        return value

    @field_validator("classes")
    @classmethod
    def _classes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("classes must name at least one label folder (or be null)")
        if len(set(value)) != len(value) or "background" in value:
            raise ValueError(f"classes must be unique and not 'background' (got {value})")
        bad = [c for c in value if not c or "/" in c or "\\" in c or c in (".", "..")]
        if bad:
            raise ValueError(f"class {bad[0]!r} is not a folder name")
        return value
