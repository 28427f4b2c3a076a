"""Label sources of the geo datasets: a label raster or vector features, read for one tile.

Both give the label of a tile on the tile's own grid (CRS, transform, size), so tiles of
rasters in any CRS get labels in their pixels:

- :class:`RasterLabels`: a second raster, read by window when it shares the input's grid,
  otherwise resampled onto the tile's grid with ``rasterio.warp.reproject`` (only with an
  explicit ``resampling``: grids that differ are an error otherwise).
- :class:`VectorLabels`: features read once with pyogrio, reprojected with pyproj to the
  raster's CRS, buffered, indexed in a shapely ``STRtree``, and rasterized per tile with
  ``rasterio.features.rasterize``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rasterio.windows import Window

from thelper.exceptions import DataError
from thelper_geo.rasters import Grid, grid_of, open_raster, resampling

__all__ = ["RasterLabels", "VectorLabels", "read_vector", "to_classes"]


def to_classes(values: np.ndarray, thresholds: Sequence[float] | None,
               mapping: Mapping[float, int] | None, ignore: int) -> np.ndarray:
    """Class indices from label values: ``(h, w)`` int64.

    Args:
        values: ``(h, w)`` float32 label values, NaN where there is no label.
        thresholds: Class index = number of thresholds the value exceeds.
        mapping: ``{value: class index}``; other values become ``ignore``.
        ignore: Index of pixels without a class.
    """
    nan = np.isnan(values)
    if thresholds is not None:
        out = np.searchsorted(np.asarray(thresholds, np.float64), values, side="left")
        out = out.astype(np.int64)
    elif mapping is not None:
        out = np.full(values.shape, ignore, np.int64)
        for value, index in mapping.items():
            out[values == value] = index
    else:
        out = np.where(nan, 0, values).astype(np.int64)
    out[nan] = ignore
    return out


class RasterLabels:
    """Label values from a raster, on the grid of a tile.

    Args:
        path: The label raster.
        band: 1-based band.
        method: Resampling name when the grids differ (``None``: they must not).
        nodata: Label nodata (default: the raster's).

    Raises:
        DataError: The raster cannot be opened or lacks the band.
    """

    def __init__(self, path: str, band: int = 1, method: str | None = None,
                 nodata: float | None = None) -> None:
        self.path, self.band, self.method = str(path), int(band), method
        with open_raster(self.path, "label raster") as src:
            if not 1 <= self.band <= src.count:
                raise DataError(f"label raster {self.path!r} has {src.count} band(s); band "
                                f"{self.band} does not exist; fix labels.band")
            self.grid = grid_of(src)
            self.nodata = src.nodata if nodata is None else nodata
        self._src: Any = None
        self._pid = -1

    def _open(self) -> Any:
        import os

        if self._src is None or self._pid != os.getpid():  # one handle per worker process
            self._src = open_raster(self.path, "label raster")
            self._pid = os.getpid()
        return self._src

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # an open rasterio handle does not pickle
        state["_src"], state["_pid"] = None, -1
        return state

    def check_grid(self, raster: str, grid: Grid) -> bool:
        """Whether the label raster shares ``grid``; when not, whether resampling was asked.

        Returns:
            ``True`` when windows can be read directly (same grid).

        Raises:
            DataError: The grids differ and no ``resampling`` was given (one line naming both
                files).
        """
        if self.grid.same_as(grid):
            return True
        if self.method is None:
            raise DataError(f"label raster {self.path!r} ({self.grid.describe()}) is not on "
                            f"the grid of {raster!r} ({grid.describe()}); set "
                            "labels.resampling (e.g. bilinear for values, nearest for classes)"
                            " to resample it onto the input grid")
        return False

    def read(self, tile: Grid, window: Window | None = None) -> np.ndarray:
        """Label values on ``tile``'s grid: ``(h, w)`` float32, NaN where there is no label.

        Args:
            tile: The tile's grid.
            window: The tile's window in the label raster when it shares the input grid
                (read directly); ``None`` resamples with ``rasterio.warp.reproject``.
        """
        src = self._open()
        if window is not None:
            data = src.read(self.band, window=window, boundless=True,
                            fill_value=self.nodata if self.nodata is not None else 0)
            out = data.astype(np.float32)
            if self.nodata is not None:
                out[data == self.nodata] = np.nan
            return out
        import rasterio
        from rasterio.warp import reproject

        out = np.full((tile.height, tile.width), np.nan, np.float32)
        reproject(rasterio.band(src, self.band), out, src_nodata=self.nodata,
                  dst_transform=tile.transform, dst_crs=tile.crs, dst_nodata=np.nan,
                  resampling=resampling(self.method))
        return out


def read_vector(path: str, layer: str | None = None, columns: Sequence[str] = ()
                ) -> tuple[np.ndarray, dict[str, np.ndarray], Any]:
    """Geometries, attribute columns and CRS of a vector file (pyogrio).

    Returns:
        ``(geometries, {column: values}, crs)``: shapely geometries ``(F,)``, attribute
        arrays ``(F,)``, and the file's CRS as a ``pyproj.CRS`` (``None`` when it has none).

    Raises:
        DataError: The file cannot be read, is remote, not a regular file or a VRT, or a
            column is missing.
    """
    import pyogrio
    import shapely
    from pyproj import CRS

    from thelper_geo.rasters import check_local_file

    check_local_file(str(path), "vector file")  # remote, inline XML, VRT, FIFO
    try:
        meta, _, wkb, fields = pyogrio.raw.read(str(path), layer=layer,
                                                columns=list(columns) or None)
    except Exception as exc:  # noqa: BLE001 - any OGR failure is a data problem
        raise DataError(f"vector file {str(path)!r} cannot be read: {type(exc).__name__}: "
                        f"{exc}; fix the path or the layer") from None
    names = list(meta["fields"])
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"vector file {str(path)!r} has no attribute {missing[0]!r} "
                        f"(attributes: {', '.join(names) or 'none'}); fix labels.attribute")
    geoms = shapely.from_wkb(wkb)
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    return geoms, {n: np.asarray(v) for n, v in zip(names, fields, strict=True)}, crs


class VectorLabels:
    """Class rasters of a tile from vector features.

    Args:
        path: Vector file (GeoJSON, shapefile...).
        crs: CRS of the rasters (``rasterio.crs.CRS``); features are reprojected to it.
        class_names: Task classes; index 0 is the background.
        layer: Layer name (default: the first).
        attribute: Attribute holding the class (default: every feature is class 1).
        classes: Attribute value → class name (default: the value itself).
        buffer: Buffer in units of ``crs``.
        all_touched: Burn every touched pixel.

    Raises:
        DataError: Unreadable file, a class not in ``class_names``, or a file without CRS.
    """

    def __init__(self, path: str, crs: Any, class_names: Sequence[str], layer: str | None = None,
                 attribute: str | None = None, classes: Mapping[str, str] | None = None,
                 buffer: float = 0.0, all_touched: bool = False) -> None:
        import shapely
        from pyproj import CRS

        from thelper_geo.coords import reproject_geometries

        self.path = str(path)
        names = list(class_names)
        if len(names) < 2:
            raise DataError(f"vector labels {self.path!r}: class_names needs the background "
                            f"and at least one class (got {names})")
        geoms, fields, src_crs = read_vector(self.path, layer, [attribute] if attribute else [])
        if src_crs is None:
            raise DataError(f"vector file {self.path!r} has no CRS; add one (e.g. a .prj "
                            "beside a shapefile)")
        if attribute is None:
            values = np.ones(len(geoms), np.int64)
        else:
            raw = [str(v) for v in fields[attribute]]
            mapped = [classes.get(v) if classes is not None else v for v in raw]
            unknown = sorted({m for m in mapped if m is not None and m not in names})
            if unknown:
                raise DataError(f"vector labels {self.path!r}: class {unknown[0]!r} (attribute "
                                f"{attribute!r}) is not in class_names {names}; add it or map "
                                "it with labels.classes")
            values = np.array([names.index(m) if m is not None else -1 for m in mapped])
        keep = (values > 0) & ~shapely.is_missing(geoms)
        geoms, values = geoms[keep], values[keep]
        dst = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        if not CRS(src_crs).equals(dst):
            geoms = reproject_geometries(geoms, src_crs, dst)
        if buffer > 0:
            geoms = shapely.buffer(geoms, buffer)
        self.geometries, self.values = geoms, values
        self.all_touched = bool(all_touched)
        self.tree = shapely.STRtree(geoms)

    def read(self, tile: Grid) -> np.ndarray:
        """Class indices of ``tile``: ``(h, w)`` int64, 0 where no feature lies (later
        features win where they overlap)."""
        from rasterio.features import rasterize
        from rasterio.transform import array_bounds
        from shapely import box

        west, south, east, north = array_bounds(tile.height, tile.width, tile.transform)
        hits = np.sort(self.tree.query(box(west, south, east, north)))
        out = np.zeros((tile.height, tile.width), np.int64)
        if len(hits) == 0:
            return out
        shapes = [(self.geometries[i], int(self.values[i])) for i in hits]
        return rasterize(shapes, out_shape=out.shape, transform=tile.transform, fill=0,
                         all_touched=self.all_touched, dtype=np.int32).astype(np.int64)
