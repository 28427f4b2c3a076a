"""What sliding-window inference writes: GeoTIFFs on the input's grid and GeoJSON polygons.

* :class:`BlockGeoTiff`: a tiled GeoTIFF written one square block at a time, with the
  input's CRS, affine transform and size (optionally converted to a Cloud Optimized GeoTIFF
  when closed);
* :func:`class_values` / :func:`write_class_values`: the stored value of each class in a
  class map (class index + 1; 0 is nodata, as in thelper 0.6) and ``config-classes.json``;
* :func:`write_polygons`: the class map's polygons (``rasterio.features.shapes``, GDAL's
  polygonize over the band on disk, not an array in memory) streamed to a GeoJSON file in
  the input's CRS.

:func:`components` registers the inference components (:mod:`thelper_geo.inference`).
rasterio and numpy are imported inside the functions: importing this module (the plugin
does, on every command) costs nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thelper.registry import ComponentInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["NODATA_CLASS", "class_values", "class_dtype", "write_class_values", "BlockGeoTiff",
           "write_polygons", "CLASSES_FILE", "components"]

#: Stored value of nodata pixels in a class map (class ``i`` is stored as ``i + 1``).
NODATA_CLASS = 0
#: Name of the class name → stored value mapping written beside the class maps.
CLASSES_FILE = "config-classes.json"


def class_values(class_names: Sequence[str]) -> dict[str, int]:
    """``{class name: stored value}``: class index + 1 (0 is nodata).

    Args:
        class_names: The task's classes in index order.
    """
    return {str(name): i + 1 for i, name in enumerate(class_names)}


def class_dtype(num_classes: int) -> str:
    """``uint8`` when the stored values (``0..num_classes``) fit, else ``uint16``.

    Raises:
        ValueError: More than 65535 classes.
    """
    if num_classes <= 255:
        return "uint8"
    if num_classes <= 65535:
        return "uint16"
    raise ValueError(f"{num_classes} classes do not fit a uint16 class map")


def write_class_values(out: Path, class_names: Sequence[str]) -> Path:
    """Write ``<out>/config-classes.json`` (``{class name: stored value}``); return its path."""
    path = Path(out) / CLASSES_FILE
    path.write_text(json.dumps(class_values(class_names), indent=1) + "\n")
    return path


def _block_size(size: int, width: int, height: int) -> int | None:
    """GeoTIFF tile side: ``size`` when the raster holds one (tile sides are multiples of
    16), else ``None`` (a small raster is written in strips)."""
    if size % 16 or size > max(width, height):
        side = 16 * (min(width, height, size) // 16)
        return side or None
    return size


class BlockGeoTiff:
    """A GeoTIFF on a reference grid, written by windows (blocks).

    The file is a tiled, deflate-compressed GTiff (BigTIFF when needed) whose internal tiles
    are ``block`` pixels square, so that writing the blocks of a ``block`` grid never rewrites
    a compressed tile. With ``cog``, the GTiff is written beside the target and converted to a
    Cloud Optimized GeoTIFF (GDAL's ``COG`` driver: 512-pixel tiles and overviews) by
    :meth:`close`, then removed.

    Args:
        path: The output file.
        profile: The input's ``crs``, ``transform``, ``width`` and ``height`` (a rasterio
            profile; other keys are ignored).
        count: Bands.
        dtype: numpy dtype name of the bands (``uint8``, ``uint16``, ``float32``).
        nodata: The bands' nodata value (``None``: none; use ``mask`` instead).
        block: Side of the written blocks in pixels.
        mask: Also write a per-dataset mask band (0 where nodata): for uint8 probabilities,
            whose every value is a valid probability.
        cog: Convert to a Cloud Optimized GeoTIFF when closed.
        descriptions: Band descriptions (e.g. class names), one per band.
        overview_resampling: Resampling of the COG's overviews (``nearest`` for classes).

    Attributes:
        path: The final file.
        dtype: The bands' dtype name.
    """

    def __init__(self, path: Path, profile: Mapping[str, Any], *, count: int, dtype: str,
                 nodata: float | None, block: int, mask: bool = False, cog: bool = False,
                 descriptions: Sequence[str] | None = None,
                 overview_resampling: str = "nearest") -> None:
        import rasterio

        self.path = Path(path)
        self.dtype = str(dtype)
        self.cog = cog
        self.mask = mask
        self.overview_resampling = overview_resampling
        self._target = self.path.with_name(self.path.name + ".part.tif") if cog else self.path
        width, height = int(profile["width"]), int(profile["height"])
        side = _block_size(block, width, height)
        options: dict[str, Any] = {"compress": "deflate", "BIGTIFF": "IF_SAFER"}
        if side is not None:
            options.update(tiled=True, blockxsize=side, blockysize=side)
        self._dst = rasterio.open(
            self._target, "w", driver="GTiff", width=width, height=height, count=int(count),
            dtype=dtype, crs=profile.get("crs"), transform=profile["transform"],
            nodata=nodata, **options)
        for i, text in enumerate(descriptions or [], start=1):
            self._dst.set_band_description(i, str(text))

    def write(self, data: np.ndarray, window: Any, valid: np.ndarray | None = None) -> None:
        """Write one block.

        Args:
            data: ``(count, h, w)`` values of the block, of the file's dtype.
            window: Its ``rasterio.windows.Window`` in the raster.
            valid: ``(h, w)`` bool, False where nodata (written to the mask band when the
                file has one).
        """
        import numpy as np

        self._dst.write(data, window=window)
        if self.mask:
            flags = np.full(data.shape[-2:], 255, np.uint8) if valid is None else \
                valid.astype(np.uint8) * 255
            self._dst.write_mask(flags, window=window)

    def close(self) -> Path:
        """Close the file (and convert it to a COG); return the final path."""
        if self._dst.closed:
            return self.path
        self._dst.close()
        if self.cog:
            from rasterio.shutil import copy

            copy(self._target, self.path, driver="COG", compress="deflate", blocksize=512,
                 overview_resampling=self.overview_resampling, BIGTIFF="IF_SAFER")
            os.remove(self._target)
        return self.path

    def abort(self) -> None:
        """Close and remove the files (after a failure)."""
        if not self._dst.closed:
            self._dst.close()
        for p in {self._target, self.path}:
            if p.exists():
                p.unlink()


def _crs_member(crs: Any) -> dict[str, Any] | None:
    """The GeoJSON 2008 ``crs`` member naming ``crs`` (read by GDAL/OGR and QGIS)."""
    if crs is None:
        return None
    epsg = crs.to_epsg()
    name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else crs.to_wkt()
    return {"type": "name", "properties": {"name": name}}


def write_polygons(class_map: Path, path: Path, class_names: Sequence[str], *,
                   connectivity: int = 4) -> tuple[Path, int]:
    """Polygons of a class map as a GeoJSON FeatureCollection in the map's CRS.

    Each connected region of one stored value (nodata excluded) becomes a feature with
    properties ``class`` (its name) and ``value`` (the stored value). Polygonizing runs on
    the band on disk (``rasterio.features.shapes`` on ``rasterio.band``) and features are
    written as they come, so memory follows the number of polygons, not the raster size.
    Coordinates are in the raster's CRS (not reprojected to WGS 84): the collection carries
    a ``crs`` member naming it, as GDAL writes GeoJSON in other CRSs.

    Args:
        class_map: A class map GeoTIFF (band 1: class index + 1, 0 nodata).
        path: The GeoJSON file to write.
        class_names: Class names in index order.
        connectivity: 4 or 8 (pixel neighbourhood of a region).

    Returns:
        ``(path, number of features)``.
    """
    import rasterio
    from rasterio.features import shapes

    names = {v: k for k, v in class_values(class_names).items()}
    count = 0
    with rasterio.open(class_map) as src, Path(path).open("w") as f:
        head: dict[str, Any] = {"type": "FeatureCollection", "name": Path(path).stem}
        crs = _crs_member(src.crs)
        if crs is not None:
            head["crs"] = crs
        f.write(json.dumps(head)[:-1] + ', "features": [\n')
        band = rasterio.band(src, 1)
        for geometry, value in shapes(band, mask=band, connectivity=connectivity,
                                      transform=src.transform):
            stored = int(value)
            feature = {"type": "Feature",
                       "properties": {"class": names.get(stored, str(stored)), "value": stored},
                       "geometry": geometry}
            f.write((",\n" if count else "") + json.dumps(feature))
            count += 1
        f.write("\n]}\n")
    return Path(path), count


def components() -> list[ComponentInfo]:
    """The inference components of thelper-geo (data only; nothing is imported): the
    ``geotiff_tiles`` file decoder and infer runner (:mod:`thelper_geo.inference`)."""
    m = "thelper_geo.inference"
    return [
        ComponentInfo("decoder", "geotiff_tiles", f"{m}:geotiff_decoder",
                      description="raster windows read as geotiff_tiles reads its tiles"),
        ComponentInfo("infer_runner", "geotiff_tiles", f"{m}:run_sliding_window",
                      description="sliding-window inference over whole rasters to GeoTIFF"),
    ]
