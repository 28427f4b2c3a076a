"""BigEarthNet-S2 v1.0 in its on-disk layout: Sentinel-2 patches with multi-label targets.

BigEarthNet (Sumbul, Charfuelan, Demir, Markl, "BigEarthNet: a large-scale benchmark archive
for remote sensing image understanding", IGARSS 2019; CDLA-Permissive-1.0) holds 590,326
Sentinel-2 L2A patches of 1.2 × 1.2 km, each a folder::

    BigEarthNet-v1.0/
      S2A_MSIL2A_20170613T101031_0_45/
        S2A_MSIL2A_20170613T101031_0_45_B01.tif    60 m: 20 × 20 (B01, B09)
        S2A_MSIL2A_20170613T101031_0_45_B02.tif    10 m: 120 × 120 (B02, B03, B04, B08)
        ...                                        20 m: 60 × 60 (B05, B06, B07, B8A, B11, B12)
        S2A_MSIL2A_20170613T101031_0_45_labels_metadata.json   {"labels": [...], ...}

The labels are names of the 43 CORINE Land Cover 2018 level-3 classes present in the
archive; the 19-class nomenclature of Sumbul et al., "BigEarthNet-MM: a large-scale,
multimodal, multilabel benchmark archive for remote sensing image classification and
retrieval", IEEE GRSM 2021 merges and drops some of them (:data:`LABELS_19`,
:data:`TO_19`). Every band is read whole (a patch is small) and resampled explicitly onto the
10 m 120 × 120 grid of the patch.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thelper.exceptions import DataError
from thelper_geo.interface_params import S2_BANDS

__all__ = ["BigEarthNet", "LABELS_43", "LABELS_19", "TO_19", "PATCH_SIZE"]

#: Side of a patch on the 10 m grid, in pixels.
PATCH_SIZE = 120

#: The 43 CORINE classes of BigEarthNet v1.0, in the order of its ``label_indices.json``.
LABELS_43 = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves",
    "Pastures", "Annual crops associated with permanent crops",
    "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons",
    "Estuaries", "Sea and ocean",
)

#: The 19 classes of BigEarthNet-MM (Sumbul et al. 2021).
LABELS_19 = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops",
    "Pastures", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation", "Transitional woodland, shrub",
    "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands", "Inland waters",
    "Marine waters",
)

#: 43-class index -> 19-class index (``label_conversion`` of BigEarthNet's
#: ``label_indices.json``); the 43-class labels absent here have no 19-class counterpart.
TO_19: dict[int, int] = {
    src: dst for dst, sources in enumerate((
        (0, 1), (2,), (11, 12, 13), (14, 15, 16, 18), (17,), (19,), (20,), (21,), (22,),
        (23,), (24,), (25, 31), (26, 27), (28,), (29,), (33, 34), (35, 36), (38, 39),
        (40, 41, 42))) for src in sources
}

def _names_from_file(path: str, what: str) -> list[str]:
    """Patch names of a CSV/text list (first column of each non-empty line)."""
    from thelper.data.files import open_regular

    try:
        with open_regular(path, "r") as f:  # a FIFO or device would block or never end
            return [row[0].strip() for row in csv.reader(f) if row and row[0].strip()]
    except OSError as exc:
        raise DataError(f"{what} {path!r} cannot be read: {exc.strerror}; fix the path") \
            from None
    except DataError as exc:
        raise DataError(f"{what}: {exc}; give a CSV or text file of patch names") from None


def _per_band(value: float | Sequence[float], n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size == 1:
        return np.full(n, float(arr[0]), dtype=np.float32)
    if arr.size != n:
        raise DataError(f"bigearthnet {what} gives {arr.size} values for {n} bands; give one "
                        "value or one per band")
    return arr


class BigEarthNet(Dataset):
    """BigEarthNet-S2 v1.0 patches as multi-label classification samples.

    Each sample is ``{"input": float32 (C, 120, 120), "label": float32 (L,), "patch": str,
    "crs": str, "transform": float64 (6,)}``: the selected bands in ``bands`` order, every
    band resampled onto the patch's 10 m grid (``resampling``) and normalised as
    ``(dn - offset) / scale``; the multi-hot label vector over :data:`LABELS_19` (or
    :data:`LABELS_43`); the patch name; its CRS as WKT and the affine transform ``(a, b, c,
    d, e, f)`` of the 120 × 120 grid (rasterio order). Its :attr:`task` is the core's
    ``multilabel_classification``.

    Args:
        root: Folder of the patch folders.
        bands: Band names (``B01`` ... ``B12``, ``B8A``), in channel order.
        nomenclature: ``19`` or ``43`` classes.
        resampling: ``nearest``, ``bilinear`` or ``cubic``, for the 20 m and 60 m bands.
        offset: Subtracted from the digital numbers (one value or one per band).
        scale: Divisor after ``offset`` (one value or one per band).
        patches: A CSV/text file of the patch names to use (first column); default: all.
        exclude: CSV/text files of patch names to leave out.
        group_by_tile: Expose :meth:`groups` (one group per tile acquisition).

    Raises:
        DataError: ``root`` is not a folder, no patch is found, a listed patch is missing, a
            label file is unreadable or names a label outside the 43 classes, or (when read)
            a band file is missing, unreadable or does not cover the patch's extent.
    """

    def __init__(self, root: str, bands: Sequence[str] = S2_BANDS, nomenclature: int = 19,
                 resampling: str = "bilinear", offset: float | Sequence[float] = 0.0,
                 scale: float | Sequence[float] = 10000.0, patches: str | None = None,
                 exclude: Sequence[str] = (), group_by_tile: bool = True) -> None:
        from thelper.tasks import MultiLabelClassification

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"bigearthnet root {root!r} is not a folder; give the folder of "
                            "the patch folders (e.g. BigEarthNet-v1.0)")
        unknown = [b for b in bands if b not in S2_BANDS]
        if unknown:
            raise DataError(f"bigearthnet: unknown band {unknown[0]!r} (bands: "
                            f"{', '.join(S2_BANDS)})")
        self.bands = list(bands)
        self.nomenclature = int(nomenclature)
        if self.nomenclature not in (19, 43):
            raise DataError(f"bigearthnet nomenclature must be 19 or 43 (got {nomenclature})")
        self.resampling = resampling
        self.offset = _per_band(offset, len(self.bands), "offset")
        self.scale = _per_band(scale, len(self.bands), "scale")
        if np.any(self.scale == 0):
            raise DataError("bigearthnet scale must not be 0")
        self.class_names = list(LABELS_19 if self.nomenclature == 19 else LABELS_43)
        if patches is not None:
            names = _names_from_file(patches, "bigearthnet patches list")
            missing = [n for n in names if not (self.root / n).is_dir()]
            if missing:
                raise DataError(f"bigearthnet: patch {missing[0]!r} listed in {patches!r} is "
                                f"not a folder under {root!r} ({len(missing)} missing)")
        else:
            with os.scandir(self.root) as it:
                names = sorted(e.name for e in it if e.is_dir()
                               and (self.root / e.name / f"{e.name}_labels_metadata.json")
                               .is_file())
        excluded: set[str] = set()
        for path in exclude:
            excluded.update(_names_from_file(path, "bigearthnet exclude list"))
        self.patches = [n for n in names if n not in excluded]
        if not self.patches:
            raise DataError(f"bigearthnet: no patch folder (<patch>/<patch>_labels_metadata"
                            f".json) under {root!r} after the patches/exclude lists")
        self.labels = torch.from_numpy(np.stack([self._read_labels(n) for n in self.patches]))
        self.task = MultiLabelClassification(self.class_names,
                                             meta_keys=("patch", "crs", "transform"))
        self._tiles = [n.rsplit("_", 2)[0] for n in self.patches] if group_by_tile else None

    # ---------------------------------------------------------------- labels
    def _read_labels(self, name: str) -> np.ndarray:
        path = self.root / name / f"{name}_labels_metadata.json"
        from thelper.data.files import open_regular

        try:
            with open_regular(path, "r") as f:  # a FIFO or device would block or never end
                labels = json.load(f)["labels"]
        except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
            raise DataError(f"bigearthnet label file {str(path)!r} is unreadable or has no "
                            f"'labels' list ({type(exc).__name__}: {exc})") from None
        index43 = {c: i for i, c in enumerate(LABELS_43)}
        out = np.zeros(len(self.class_names), dtype=np.float32)
        for label in labels:
            if label not in index43:
                raise DataError(f"bigearthnet label file {str(path)!r} names {label!r}, not "
                                "one of BigEarthNet's 43 CORINE classes")
            i = index43[label]
            if self.nomenclature == 43:
                out[i] = 1.0
            elif i in TO_19:
                out[TO_19[i]] = 1.0
        return out

    # ---------------------------------------------------------------- reading
    def read_patch(self, name: str) -> tuple[np.ndarray, Any, Any]:
        """Bands of one patch on its 10 m grid.

        Args:
            name: Patch folder name.

        Returns:
            ``(x, crs, transform)``: ``x`` float32 ``(C, 120, 120)`` normalised; the patch's
            ``rasterio.crs.CRS`` and ``affine.Affine`` of the 120 × 120 grid.

        Raises:
            DataError: A band file is missing or unreadable, or covers other bounds than the
                patch's first band.
        """
        from rasterio.enums import Resampling
        from rasterio.transform import from_bounds

        from thelper_geo.rasters import open_raster

        method = Resampling[self.resampling]
        x = np.empty((len(self.bands), PATCH_SIZE, PATCH_SIZE), dtype=np.float32)
        crs = transform = ref = None
        for c, band in enumerate(self.bands):
            path = self.root / name / f"{name}_{band}.tif"
            src = open_raster(str(path), "bigearthnet band file")
            with src:
                if ref is None:
                    ref, crs = src.bounds, src.crs
                    transform = from_bounds(*ref, PATCH_SIZE, PATCH_SIZE)
                elif src.crs != crs or not np.allclose(tuple(src.bounds), tuple(ref),
                                                       rtol=0, atol=1e-6 * abs(transform.a)):
                    raise DataError(
                        f"bigearthnet band file {str(path)!r} covers {tuple(src.bounds)} in "
                        f"{src.crs}, not the patch's {tuple(ref)} in {crs}: the bands of one "
                        "patch must cover the same 1.2 km square")
                # an explicit decimated/upsampled read onto the 120 × 120 grid of the bounds
                data = src.read(1, out_shape=(PATCH_SIZE, PATCH_SIZE), resampling=method)
            x[c] = (data.astype(np.float32) - self.offset[c]) / self.scale[c]
        return x, crs, transform

    def __len__(self) -> int:
        return len(self.patches)

    def __getitem__(self, index: int) -> dict[str, Any]:
        name = self.patches[index]
        x, crs, t = self.read_patch(name)
        return {"input": torch.from_numpy(x), "label": self.labels[index], "patch": name,
                "crs": crs.to_wkt() if crs else "",
                "transform": torch.tensor([t.a, t.b, t.c, t.d, t.e, t.f], dtype=torch.float64)}

    def groups(self) -> list[str] | None:
        """Tile acquisition of every patch (its name without ``_<row>_<col>``), or ``None``
        when ``group_by_tile`` is off (the core then splits by patch index)."""
        return list(self._tiles) if self._tiles is not None else None

    def __repr__(self) -> str:
        return (f"BigEarthNet({str(self.root)!r}, {len(self)} patches, bands={self.bands}, "
                f"{self.nomenclature} classes)")
