"""``geotiff_tiles``: tiles of georeferenced rasters with raster or vector labels.

Every read is a window (``rasterio`` windows inside ``rasterio.Env(GDAL_CACHEMAX=bytes)``);
no raster is ever read whole. Each sample keeps its tile's CRS (WKT) and affine transform as
plain data, so batches collate and predictions can be written back georeferenced.

Samples (``T`` tiles; ``C`` bands; ``S`` tile side):

- ``segmentation``: ``{"input": {"image": Image (C, S, S) float32, "mask": Mask (S, S)
  int64}, ...meta}``; pixels without a label or with nodata input are ``ignore_index`` (255).
- ``regression``: ``{"input": (C, S, S) float32, "target": (1, S, S) float32, ...meta}``.
- ``classification``: ``{"input": (C, S, S) float32, "label": () int64, ...meta}``.
- meta: ``"crs"`` (WKT str), ``"transform"`` ((6,) float64: the tile's affine ``a, b, c, d,
  e, f``), ``"window"`` ((4,) int64: ``row_off, col_off, height, width`` in the source
  raster), ``"raster"`` (() int64: index into :attr:`GeoTiffTiles.rasters`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from rasterio.windows import Window
from torch.utils.data import Dataset

from thelper.exceptions import DataError
from thelper_geo.labels import RasterLabels, VectorLabels, to_classes
from thelper_geo.rasters import Grid, RasterInput, aligned, grid_of, open_raster

__all__ = ["GeoTiffTiles", "IGNORE_INDEX"]

#: Mask value of pixels without a class (the vision segmentation task's default).
IGNORE_INDEX = 255


def _get(params: Any, key: str, default: Any = None) -> Any:
    if params is None:
        return default
    value = params.get(key, default) if isinstance(params, Mapping) else getattr(
        params, key, default)
    return default if value is None else value


class GeoTiffTiles(Dataset):
    """Tiles of one or many rasters, with targets from a label raster or vector features.

    Args:
        rasters: Input raster paths (each tiled separately).
        bands, nodata, offset, scale, fill, gdal_cache_mb: Input reading and normalisation
            (see :class:`thelper_geo.rasters.RasterInput`).
        target: ``segmentation``, ``regression`` or ``classification``.
        labels: Label source params (``kind: raster`` or ``kind: vector``), or ``None``.
        class_names: Class names (segmentation/classification).
        tile_label: Tile class rule for classification (``any`` or ``majority``).
        min_pixels: Pixels of a class a tile needs to hold it (``any``).
        sampling: Tile placement params (``mode: grid`` or ``random``).
        min_valid_fraction: Minimum fraction of valid input pixels per tile.
        spatial_split: Block/region grouping params, or ``None``.
        align: Target grid params for resampling inputs, or ``None`` (grids must agree).

    Raises:
        DataError: Unreadable files, rasters on different grids without ``align``, no tile
            passing the filters, or labels that do not fit the target.
    """

    def __init__(self, rasters: Sequence[str], bands: Sequence[int] | None = None,
                 nodata: float | None = None, offset: Any = 0.0, scale: Any = 1.0,
                 fill: float = 0.0, target: str = "segmentation", labels: Any = None,
                 class_names: Sequence[str] | None = None, tile_label: str = "any",
                 min_pixels: int = 1, sampling: Any = None, min_valid_fraction: float = 0.5,
                 spatial_split: Any = None, align: Any = None, gdal_cache_mb: int = 64) -> None:
        self.rasters = [str(p) for p in rasters]
        self.reader = RasterInput(bands, nodata, offset, scale, fill, gdal_cache_mb)
        self.target = target
        self.class_names = list(class_names) if class_names else None
        self.tile_label, self.min_pixels = tile_label, int(min_pixels)
        self.size = int(_get(sampling, "size", 64))
        self.align = align
        self._handles: dict[int, Any] = {}
        self._pid = -1
        with self.reader.env():
            self.grids = self._grids()
            self.labels = self._labels(labels)
            self._place(sampling, float(min_valid_fraction), spatial_split)
        self.task = self._task()
        if self.target == "classification":
            self.targets = [int(v) for v in self._tile_labels]

    # ------------------------------------------------------------------ construction
    def _grids(self) -> list[Grid]:
        grids = []
        channels = None
        for path in self.rasters:
            with open_raster(path) as src:
                grids.append(grid_of(src))
                c = self.reader.channels(src)
            if channels is not None and c != channels:
                raise DataError(f"raster {path!r} gives {c} bands but {self.rasters[0]!r} "
                                f"gives {channels}; every raster must hold the bands read")
            channels = c
        self.channels = int(channels or 0)
        if self.align is not None:
            from rasterio.crs import CRS
            from rasterio.transform import array_bounds
            from rasterio.warp import calculate_default_transform

            crs = CRS.from_user_input(_get(self.align, "crs") or grids[0].crs)
            res = _get(self.align, "resolution")
            out = []
            for g in grids:  # one CRS and pixel size; the first raster's unless given
                west, south, east, north = array_bounds(g.height, g.width, g.transform)
                t, w, h = calculate_default_transform(g.crs, crs, g.width, g.height, west,
                                                      south, east, north, resolution=res)
                out.append(Grid(crs, t, w, h))
                if res is None:
                    res = (t.a, -t.e)
            return out
        from thelper_geo.rasters import check_same_grid

        for path, g in zip(self.rasters[1:], grids[1:], strict=True):
            check_same_grid((self.rasters[0], grids[0]), (path, g),
                            "set params.align (crs, resolution, resampling) to resample the "
                            "rasters onto one grid")
        return grids

    def _labels(self, spec: Any) -> Any:
        if spec is None:
            return None
        kind = _get(spec, "kind", "raster")
        if kind == "vector":
            if self.class_names is None:
                raise DataError("vector labels need class_names (index 0 is the background)")
            return VectorLabels(_get(spec, "path"), self.grids[0].crs, self.class_names,
                                _get(spec, "layer"), _get(spec, "attribute"),
                                _get(spec, "classes"), float(_get(spec, "buffer", 0.0)),
                                bool(_get(spec, "all_touched", False)))
        labels = RasterLabels(_get(spec, "path"), int(_get(spec, "band", 1)),
                              _get(spec, "resampling"), _get(spec, "nodata"))
        self._direct = [labels.check_grid(p, g) for p, g in zip(self.rasters, self.grids,
                                                                  strict=True)]
        self._thresholds = _get(spec, "thresholds")
        values = _get(spec, "values")
        self._mapping = None
        if values is not None:
            names = self.class_names or []
            unknown = sorted(set(values.values()) - set(names))
            if unknown:
                raise DataError(f"labels.values maps to {unknown[0]!r}, not in class_names "
                                f"{names}")
            self._mapping = {float(k): names.index(v) for k, v in values.items()}
        return labels

    def _place(self, sampling: Any, min_valid: float, split: Any) -> None:
        from thelper_geo.tiling import (
            footprints,
            grid_windows,
            inside,
            random_windows,
            region_geometry,
            spatial_groups,
        )

        mode = _get(sampling, "mode", "grid")
        size = self.size
        if split is not None and int(_get(split, "block_size", 256)) < size:
            raise DataError(f"spatial_split.block_size {_get(split, 'block_size')} is smaller "
                            f"than the tiles ({size}); no tile fits in a block")
        tiles: list[tuple[int, int, int]] = []
        groups: list[str] = []
        self.group_splits: dict[str, str] = {}
        self._regions: dict[str, Any] = {}
        tile_labels: list[int] = []
        for r, grid in enumerate(self.grids):
            roi = _get(sampling, "roi")
            region = region_geometry(roi, grid) if roi is not None else None
            if mode == "random":
                origins = random_windows(grid, size, int(_get(sampling, "count", 1000)),
                                         int(_get(sampling, "seed", 0)) + r, region)
            else:
                origins = grid_windows(grid, size, int(_get(sampling, "stride", size)))
                if region is not None and len(origins):
                    origins = origins[inside(region, footprints(grid, origins, size))]
            tile_groups: list[str | None] = [None] * len(origins)
            if split is not None and len(origins):
                regions = {s: region_geometry(p, grid)
                           for s, p in (_get(split, "regions", {}) or {}).items()}
                self._regions.update({f"{r}:{s}": g for s, g in regions.items()})
                keep, tile_groups, fixed = spatial_groups(
                    grid, origins, size, int(_get(split, "block_size", 256)),
                    int(_get(split, "buffer", 0)), regions, prefix=f"r{r}:")
                self.group_splits.update(fixed)
                origins = origins[keep]
                tile_groups = [g for g, k in zip(tile_groups, keep, strict=True) if k]
            for (row, col), group in zip(origins.tolist(), tile_groups, strict=True):
                ok, label = self._check_tile(r, row, col, min_valid)
                if not ok:
                    continue
                tiles.append((r, row, col))
                groups.append(group or "")
                tile_labels.append(label)
        if not tiles:
            raise DataError(f"no tile of {size}x{size} px passes the filters in "
                            f"{', '.join(self.rasters)} (min_valid_fraction {min_valid}, "
                            "region of interest, spatial split); use smaller tiles or lower "
                            "min_valid_fraction")
        self.tiles = np.asarray(tiles, np.int64)
        self._groups = groups if split is not None else None
        self._tile_labels = tile_labels

    def _check_tile(self, r: int, row: int, col: int, min_valid: float) -> tuple[bool, int]:
        """Whether a tile passes the valid-pixel filters, and its tile label.

        Input pixels: at least ``min_valid`` valid. Regression: every target pixel valid.
        Segmentation: at least ``min_valid`` (and at least one) labelled pixels."""
        need_label = self.labels is not None
        if min_valid <= 0 and not need_label:
            return True, 0
        src = self._src(r)
        window = Window(col, row, self.size, self.size)
        if min_valid > 0:
            bands = self.reader.band_list(src, self.rasters[r])
            valid = self.reader.valid_mask(src, window, bands, src.read(bands, window=window)
                                           if self.reader.nodata is not None or
                                           src.nodata is not None else None)
            if valid.mean() < min_valid:
                return False, 0
        if not need_label:
            return True, 0
        target = self._label(r, row, col)
        if self.target == "regression":
            return bool(np.isfinite(target).all()), 0
        if self.target == "segmentation":  # enough labelled pixels (none: a NaN loss)
            labelled = float(np.mean(target != IGNORE_INDEX))
            return labelled > 0 and labelled >= min_valid, 0
        return True, self._classify(target)

    # ------------------------------------------------------------------ reading
    def _src(self, r: int) -> Any:
        if self._pid != os.getpid():  # rasterio handles do not cross processes
            self._handles, self._pid = {}, os.getpid()
        src = self._handles.get(r)
        if src is None:
            if self.align is not None:
                ctx = aligned(self.rasters[r], self.grids[r],
                              str(_get(self.align, "resampling", "bilinear")))
                src = ctx.__enter__()
                self._handles[f"ctx{r}"] = ctx  # type: ignore[index]
            else:
                src = open_raster(self.rasters[r])
            self._handles[r] = src
        return src

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # open rasterio handles do not pickle (loader workers)
        state["_handles"], state["_pid"] = {}, -1
        return state

    def tile_grid(self, index: int) -> Grid:
        """The grid of tile ``index`` (its CRS, transform and size)."""
        r, row, col = (int(v) for v in self.tiles[index])
        g = self.grids[r]
        return Grid(g.crs, g.transform @ g.transform.translation(col, row), self.size,
                    self.size)

    def _label(self, r: int, row: int, col: int) -> np.ndarray:
        """Label of a tile: float32 values (raster) or int64 classes (vector)."""
        g = self.grids[r]
        tile = Grid(g.crs, g.transform @ g.transform.translation(col, row), self.size, self.size)
        if isinstance(self.labels, VectorLabels):
            return self.labels.read(tile)
        window = Window(col, row, self.size, self.size) if self._direct[r] else None
        values = self.labels.read(tile, window)
        if self.target == "regression":
            return values
        return to_classes(values, self._thresholds, self._mapping, IGNORE_INDEX)

    def _classify(self, classes: np.ndarray) -> int:
        ok = classes[classes != IGNORE_INDEX]
        n = len(self.class_names or [])
        counts = np.bincount(ok.ravel(), minlength=n)[:n] if ok.size else np.zeros(n, int)
        if self.tile_label == "majority":
            return int(np.argmax(counts))
        present = np.flatnonzero(counts[1:] >= self.min_pixels)
        return int(present[-1] + 1) if len(present) else 0

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        r, row, col = (int(v) for v in self.tiles[index])
        grid = self.tile_grid(index)
        with self.reader.env():
            x, valid = self.reader.read(self._src(r), Window(col, row, self.size, self.size))
            label = self._label(r, row, col) if self.labels is not None else None
        t = grid.transform
        sample: dict[str, Any] = {
            "crs": grid.crs.to_wkt() if grid.crs else "",
            "transform": torch.tensor([t.a, t.b, t.c, t.d, t.e, t.f], dtype=torch.float64),
            "window": torch.tensor([row, col, self.size, self.size], dtype=torch.int64),
            "raster": torch.tensor(r, dtype=torch.int64),
        }
        image = torch.from_numpy(x)
        if self.target == "segmentation":
            joint: dict[str, Any] = {"image": tv_tensors.Image(image)}
            if label is not None:
                label = label.copy()
                label[~valid] = IGNORE_INDEX
                joint["mask"] = tv_tensors.Mask(torch.from_numpy(label))
            sample["input"] = joint
        elif self.target == "regression":
            sample["input"] = image
            if label is not None:
                sample["target"] = torch.from_numpy(np.ascontiguousarray(label[None]))
        else:
            sample["input"] = image
            if label is not None:
                sample["label"] = torch.tensor(self._tile_labels[index], dtype=torch.int64)
        return sample

    # ------------------------------------------------------------------ task and splits
    def _task(self) -> Any:
        if self.target == "segmentation":
            from thelper_vision.tasks import Segmentation

            return Segmentation(self.class_names or ["class"], ignore_index=IGNORE_INDEX,
                                meta_keys=("crs", "transform", "window", "raster"))
        if self.target == "classification":
            from thelper.tasks import Classification

            return Classification(self.class_names or ["class"],
                                  meta_keys=("crs", "transform", "window", "raster"))
        from thelper.tasks import Regression

        return Regression(target_shape=(1, self.size, self.size),
                          meta_keys=("crs", "transform", "window", "raster"))

    def groups(self) -> list[str] | None:
        """Group id of every tile (block or fixed region), or ``None`` without
        ``spatial_split`` (the core then splits by tile index)."""
        return list(self._groups) if self._groups is not None else None

    def group_regions(self) -> dict[str, Any]:
        """Where each group lies, for ``logs/splits.json``: ``{group: {"bounds": [xmin, ymin,
        xmax, ymax], "tiles": n}}`` (bounds of its tiles, in the raster's CRS) plus
        ``"_crs"`` (each raster's CRS) and ``"_regions"`` (the fixed regions as WKT)."""
        from thelper_geo.coords import window_bounds

        out: dict[str, Any] = {}
        if self._groups is None:
            return out
        for i, group in enumerate(self._groups):
            r, row, col = (int(v) for v in self.tiles[i])
            b = window_bounds(self.grids[r].transform, row, col, self.size, self.size)
            entry = out.setdefault(group, {"bounds": list(b), "tiles": 0})
            eb = entry["bounds"]
            entry["bounds"] = [min(eb[0], b[0]), min(eb[1], b[1]), max(eb[2], b[2]),
                               max(eb[3], b[3])]
            entry["tiles"] += 1
        out["_crs"] = {str(r): g.crs.to_string() if g.crs else "" for r, g in
                       enumerate(self.grids)}
        out["_regions"] = {k: g.wkt for k, g in self._regions.items()}
        return out

    def __repr__(self) -> str:
        return (f"GeoTiffTiles({len(self.rasters)} raster(s), {self.target}, "
                f"{len(self)} tiles of {self.size}px, bands={self.reader.bands})")
