"""Coordinate helpers: pixel ↔ geographic coordinates, extents, reprojection.

Thin functions over rasterio and pyproj (the helpers thelper 0.6's ``thelper.data.geo``
offered). Pixel coordinates are ``(row, col)`` of the pixel grid; ``offset="center"`` refers
to pixel centres, ``"ul"`` to upper-left corners (rasterio's convention).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["pixel_to_geo", "geo_to_pixel", "raster_extent", "window_bounds",
           "reproject_coords", "reproject_geometries", "transformer"]


def pixel_to_geo(transform: Any, rows: Any, cols: Any, offset: str = "center"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """CRS coordinates of pixels.

    Args:
        transform: The raster's ``affine.Affine`` (or a 6-sequence ``(a, b, c, d, e, f)``).
        rows: Row indices (scalar or array).
        cols: Column indices (scalar or array).
        offset: ``center``, ``ul``, ``ur``, ``ll`` or ``lr``.

    Returns:
        ``(xs, ys)`` float64 arrays in the raster's CRS units.
    """
    from affine import Affine
    from rasterio.transform import xy

    t = transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])
    xs, ys = xy(t, np.atleast_1d(rows), np.atleast_1d(cols), offset=offset)
    return np.asarray(xs, np.float64), np.asarray(ys, np.float64)


def geo_to_pixel(transform: Any, xs: Any, ys: Any) -> tuple[np.ndarray, np.ndarray]:
    """Pixel ``(rows, cols)`` (int64, floor) holding CRS coordinates ``(xs, ys)``."""
    from affine import Affine
    from rasterio.transform import rowcol

    t = transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])
    rows, cols = rowcol(t, np.atleast_1d(xs), np.atleast_1d(ys))
    return np.asarray(rows, np.int64), np.asarray(cols, np.int64)


def raster_extent(path: str) -> tuple[tuple[float, float, float, float], str]:
    """``((xmin, ymin, xmax, ymax), crs_wkt)`` of a raster file (its header only; local
    regular files only, never a VRT: :func:`thelper_geo.rasters.open_raster`)."""
    from thelper_geo.rasters import open_raster

    with open_raster(path) as src:
        b = src.bounds
        return (b.left, b.bottom, b.right, b.top), src.crs.to_wkt() if src.crs else ""


def window_bounds(transform: Any, row_off: int, col_off: int, height: int, width: int
                  ) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a pixel window in CRS units."""
    from affine import Affine
    from rasterio.windows import Window, bounds

    t = transform if isinstance(transform, Affine) else Affine(*list(transform)[:6])
    left, bottom, right, top = bounds(Window(col_off, row_off, width, height), t)
    return (min(left, right), min(bottom, top), max(left, right), max(bottom, top))


def transformer(src_crs: Any, dst_crs: Any) -> Any:
    """A ``pyproj.Transformer`` from ``src_crs`` to ``dst_crs`` in ``(x, y)`` order
    (longitude first for geographic CRSs, whatever the CRS's axis order)."""
    from pyproj import CRS, Transformer

    def crs(value: Any) -> Any:
        return CRS.from_user_input(value.to_wkt() if hasattr(value, "to_wkt") else value)

    return Transformer.from_crs(crs(src_crs), crs(dst_crs), always_xy=True)


def reproject_coords(xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray,
                     src_crs: Any, dst_crs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates ``(xs, ys)`` from ``src_crs`` to ``dst_crs`` (pyproj, ``always_xy``).

    Args:
        xs, ys: Coordinates (x = easting/longitude).
        src_crs, dst_crs: Anything pyproj's ``CRS.from_user_input`` takes (``EPSG:4326``,
            WKT, a rasterio or pyproj CRS).

    Returns:
        ``(xs, ys)`` float64 arrays.
    """
    x, y = transformer(src_crs, dst_crs).transform(np.asarray(xs, np.float64),
                                                   np.asarray(ys, np.float64))
    return np.asarray(x, np.float64), np.asarray(y, np.float64)


def reproject_geometries(geoms: Any, src_crs: Any, dst_crs: Any) -> Any:
    """Shapely geometries (one or an array) from ``src_crs`` to ``dst_crs``, vertex by vertex
    (densify long straight edges first with ``shapely.segmentize`` where the projection bends
    them)."""
    import shapely

    t = transformer(src_crs, dst_crs)
    return shapely.transform(geoms, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
