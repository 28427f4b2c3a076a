"""Tile placement (regular grid, random in a region) and spatial grouping for splits.

Tiles are pixel windows ``(row_off, col_off, size, size)`` that lie entirely inside their
raster. Regions of interest and split regions are shapely geometries in the raster's CRS;
a tile is *inside* a region when its whole footprint is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from thelper.exceptions import DataError
from thelper_geo.rasters import Grid

__all__ = ["region_geometry", "grid_windows", "random_windows", "footprints",
           "inside", "spatial_groups"]


def _get(params: Any, key: str) -> Any:
    return params.get(key) if isinstance(params, Mapping) else getattr(params, key, None)


def region_geometry(params: Any, grid: Grid) -> Any:
    """A region's shapely geometry in ``grid``'s CRS.

    Args:
        params: A :class:`thelper_geo.params.RegionParams` (or its dict).
        grid: The raster grid (its CRS and extent bound the half-planes).

    Raises:
        DataError: An invalid polygon, or an unreadable vector file.
    """
    import shapely
    from rasterio.transform import array_bounds

    from thelper_geo.coords import reproject_geometries

    west, south, east, north = array_bounds(grid.height, grid.width, grid.transform)
    crs = _get(params, "crs") or grid.crs
    vector = _get(params, "vector")
    if vector:
        from thelper_geo.labels import read_vector

        geoms, _, crs = read_vector(vector)
        if crs is None:
            raise DataError(f"region vector {vector!r} has no CRS; add one")
        geom = shapely.union_all(geoms)
    elif _get(params, "polygon"):
        try:
            geom = shapely.from_wkt(_get(params, "polygon"))
        except shapely.errors.GEOSException as exc:
            raise DataError(f"region polygon is not valid WKT: {exc}") from None
    elif _get(params, "bounds"):
        geom = shapely.box(*_get(params, "bounds"))
    else:
        if crs != grid.crs:  # the raster's extent in the region's CRS
            from thelper_geo.coords import reproject_coords

            xs, ys = reproject_coords([west, east, west, east], [south, south, north, north],
                                      grid.crs, crs)
            west, east, south, north = xs.min(), xs.max(), ys.min(), ys.max()
        pad = max(east - west, north - south)
        lo_x, hi_x, lo_y, hi_y = west - pad, east + pad, south - pad, north + pad
        for key, (a, b, c, d) in {
                "west_of": (lo_x, lo_y, None, hi_y), "east_of": (None, lo_y, hi_x, hi_y),
                "south_of": (lo_x, lo_y, hi_x, None), "north_of": (lo_x, None, hi_x, hi_y)
        }.items():
            value = _get(params, key)
            if value is not None:
                a = value if a is None else a
                b = value if b is None else b
                c = value if c is None else c
                d = value if d is None else d
                geom = shapely.box(a, b, c, d)
                break
        else:
            raise DataError("a region needs bounds, polygon, vector, west_of, east_of, "
                            "south_of or north_of")
    if crs is not None and crs != grid.crs:
        geom = reproject_geometries(shapely.segmentize(geom, max(
            (geom.bounds[2] - geom.bounds[0]) / 64, 1e-9)), crs, grid.crs)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return geom


def grid_windows(grid: Grid, size: int, stride: int) -> np.ndarray:
    """Tile origins of a regular grid: ``(T, 2)`` int64 ``(row_off, col_off)`` of every
    ``size × size`` window inside the raster, every ``stride`` pixels."""
    rows = np.arange(0, grid.height - size + 1, stride, dtype=np.int64)
    cols = np.arange(0, grid.width - size + 1, stride, dtype=np.int64)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    return np.stack([rr.ravel(), cc.ravel()], axis=1)


def footprints(grid: Grid, origins: np.ndarray, size: int) -> np.ndarray:
    """Shapely boxes ``(T,)`` of the tiles' footprints in CRS coordinates."""
    import shapely

    t = grid.transform
    rows, cols = origins[:, 0].astype(np.float64), origins[:, 1].astype(np.float64)
    x0, y0 = t.c + cols * t.a + rows * t.b, t.f + cols * t.d + rows * t.e
    x1, y1 = x0 + size * t.a + size * t.b, y0 + size * t.d + size * t.e
    return shapely.box(np.minimum(x0, x1), np.minimum(y0, y1), np.maximum(x0, x1),
                       np.maximum(y0, y1))


def inside(region: Any, boxes: np.ndarray) -> np.ndarray:
    """``(T,)`` bool: whole footprint inside ``region``."""
    import shapely

    shapely.prepare(region)
    return shapely.contains(region, boxes) | shapely.covers(region, boxes)


def random_windows(grid: Grid, size: int, count: int, seed: int, region: Any = None,
                   tries: int = 20) -> np.ndarray:
    """``count`` random tile origins ``(T, 2)`` whose footprints lie in ``region`` (default:
    anywhere in the raster), drawn with ``numpy.random.default_rng(seed)``; fewer when
    ``tries × count`` draws do not find enough."""
    rng = np.random.default_rng(seed)
    if grid.height < size or grid.width < size:
        return np.zeros((0, 2), np.int64)
    found: list[np.ndarray] = []
    total = 0
    for _ in range(tries):
        draw = np.stack([rng.integers(0, grid.height - size + 1, count),
                         rng.integers(0, grid.width - size + 1, count)], axis=1)
        if region is not None:
            draw = draw[inside(region, footprints(grid, draw, size))]
        found.append(draw[:count - total])
        total += len(found[-1])
        if total >= count:
            break
    return np.concatenate(found).astype(np.int64) if found else np.zeros((0, 2), np.int64)


def spatial_groups(grid: Grid, origins: np.ndarray, size: int, block_size: int, buffer: int,
                   regions: Mapping[str, Any], prefix: str = ""
                   ) -> tuple[np.ndarray, list[str | None], dict[str, str]]:
    """Group tiles by block or fixed region.

    A tile inside ``regions[split]`` joins group ``region:<split>``; a tile crossing a
    region's edge is dropped; any other tile joins the block ``b<row>_<col>`` of
    ``block_size`` pixels that holds it, at least ``buffer`` pixels from the block's edges, or
    is dropped.

    Args:
        grid: The raster grid.
        origins: ``(T, 2)`` tile origins.
        size: Tile side in pixels.
        block_size: Block side in pixels.
        buffer: Margin in pixels inside each block.
        regions: ``{split: shapely geometry in the grid's CRS}``.
        prefix: Prepended to group ids (e.g. the raster index).

    Returns:
        ``(keep, groups, fixed)``: ``keep`` ``(T,)`` bool, the group id of each tile
        (``None`` where dropped), and ``{group: split}`` for the region groups.
    """
    import shapely

    n = len(origins)
    keep = np.ones(n, bool)
    groups: list[str | None] = [None] * n
    fixed: dict[str, str] = {}
    boxes = footprints(grid, origins, size) if regions else None
    in_region = np.zeros(n, bool)
    for split, geom in regions.items():
        inner = inside(geom, boxes)
        touch = shapely.intersects(geom, boxes) & ~shapely.touches(geom, boxes)
        keep &= ~(touch & ~inner)  # crosses the edge
        name = f"{prefix}region:{split}"
        for i in np.flatnonzero(inner & keep):
            groups[i] = name
        fixed[name] = split
        in_region |= touch
    r, c = origins[:, 0] % block_size, origins[:, 1] % block_size
    fits = (r >= buffer) & (c >= buffer) & (r + size <= block_size - buffer) \
        & (c + size <= block_size - buffer)
    for i in np.flatnonzero(~in_region & keep):
        if fits[i]:
            groups[i] = f"{prefix}b{origins[i, 0] // block_size}_{origins[i, 1] // block_size}"
        else:
            keep[i] = False
    return keep, groups, fixed
