"""Windowed raster reads: band selection, nodata masking, normalisation, grid checks.

Only windows are ever read (``DatasetReader.read(window=...)``), inside a
``rasterio.Env(GDAL_CACHEMAX=<bytes>)`` so that GDAL's block cache stays capped (an integer
``GDAL_CACHEMAX`` given to ``rasterio.Env`` is in bytes; the environment variable of the same
name is in MB).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from thelper.exceptions import DataError

__all__ = ["RasterInput", "Grid", "grid_of", "check_same_grid", "resampling", "open_raster",
           "check_local_file"]


def resampling(name: str) -> Resampling:
    """``rasterio.enums.Resampling`` member from its name (``nearest``, ``bilinear``...)."""
    return Resampling[name]


#: The message refusing a VRT (``what``, ``path``).
VRT_REFUSED = ("{what} {path!r} is a GDAL/OGR VRT: VRT files can read other files or URLs; "
               "convert it with gdal_translate (rasters: gdal_translate in.vrt out.tif) or "
               "ogr2ogr (vectors: ogr2ogr out.gpkg in.vrt) and give the result")


def check_local_file(path: str, what: str = "raster") -> None:
    """Refuse what GDAL/OGR should not open from an untrusted path: a remote or virtual
    file system path (``/vsicurl/...``, ``http://...``, ``/vsis3/...``: network requests)
    inline XML (a path starting with ``<``), a file holding a GDAL or OGR VRT (its XML can
    read any other file or URL; found by its first 8 KiB, whatever the file's name), and
    anything that is neither a regular file nor a folder (a FIFO would block the reader
    forever, a device could be read without end). A missing path passes: the reader then
    reports it.

    Args:
        path: The file given in the config.
        what: Names the file in the message (``raster``, ``label raster``...).

    Raises:
        DataError: A remote/virtual path, inline XML, a VRT, or a FIFO, socket or device.
    """
    text = str(path)
    if text.startswith(("/vsi", "<")) or "://" in text:
        raise DataError(f"{what} {text!r} is a remote or GDAL virtual path; thelper reads "
                        "local files only (remote data would need an explicit opt-in, not "
                        "available yet): download the file and give its local path")
    try:
        mode = os.stat(text).st_mode
    except OSError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise DataError(f"{what} {text!r} is not a regular file (a FIFO, socket or device); "
                        "give the path of a raster file")
    if stat.S_ISREG(mode):
        with open(text, "rb") as f:
            head = f.read(8192)
        if _is_vrt(head):
            raise DataError(VRT_REFUSED.format(what=what, path=text))
        member = _vrt_in_archive(text, head)
        if member is not None:
            raise DataError(f"{what} {text!r} is an archive holding a GDAL/OGR VRT or a link "
                            f"({member!r}): GDAL/OGR would open it and read whatever it "
                            "names; extract the data it refers to and give that file")


#: Members of an archive that :func:`check_local_file` looks into, at most.
MAX_ARCHIVE_MEMBERS = 10_000


def _is_vrt(head: bytes) -> bool:
    """True when the first bytes of a file are a GDAL (``<VRTDataset``) or OGR
    (``<OGRVRTDataSource``) VRT."""
    low = head.lower()
    return b"<vrtdataset" in low or b"<ogrvrtdatasource" in low


def _vrt_in_archive(path: str, head: bytes) -> str | None:
    """The name of the first VRT or link inside a zip, tar or gzip file (which OGR and
    GDAL open through ``/vsizip/``, ``/vsitar/`` and ``/vsigzip/``), else ``None``.

    Each member's first 8 KiB are read, for at most :data:`MAX_ARCHIVE_MEMBERS` members
    (a longer archive is refused as well): bounded in time and memory whatever the
    compression ratio. An archive that cannot be read is left to the reader to report.
    """
    import gzip
    import tarfile
    import zipfile

    try:
        if head.startswith(b"PK\x03\x04") or zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for i, info in enumerate(archive.infolist()):
                    if i >= MAX_ARCHIVE_MEMBERS:
                        return f"more than {MAX_ARCHIVE_MEMBERS} members"
                    if info.filename.lower().endswith(".vrt"):
                        return info.filename
                    if stat.S_ISLNK(info.external_attr >> 16):
                        return info.filename
                    if not info.is_dir():
                        with archive.open(info) as member:
                            if _is_vrt(member.read(8192)):
                                return info.filename
            return None
        if tarfile.is_tarfile(path):
            with tarfile.open(path, "r:*") as archive:
                for i, info in enumerate(archive):
                    if i >= MAX_ARCHIVE_MEMBERS:
                        return f"more than {MAX_ARCHIVE_MEMBERS} members"
                    if info.name.lower().endswith(".vrt") or info.issym() or info.islnk():
                        return info.name
                    if info.isfile():
                        member = archive.extractfile(info)
                        if member is not None and _is_vrt(member.read(8192)):
                            return info.name
            return None
        if head.startswith(b"\x1f\x8b"):
            with gzip.open(path, "rb") as member:
                if _is_vrt(member.read(8192)):
                    return os.path.basename(path)
    except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError, ValueError):
        return None
    return None


def open_raster(path: str, what: str = "raster") -> Any:
    """``rasterio.open(path)`` of a local file, with a one-line :class:`DataError` naming it.

    A VRT (whatever its file name) is refused: its XML can make GDAL read any other local
    file or URL.

    Raises:
        DataError: The file is missing, remote, not a regular file, a VRT, or not a raster
            GDAL reads.
    """
    check_local_file(path, what)
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"{what} {path!r} cannot be opened: {exc}; fix the path") from None
    if src.driver.upper() == "VRT":
        src.close()
        raise DataError(VRT_REFUSED.format(what=what, path=path))
    return src


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size.

    Attributes:
        crs: ``rasterio.crs.CRS``.
        transform: ``affine.Affine`` (pixel → CRS coordinates of the pixel's corner).
        width: Columns.
        height: Rows.
    """

    crs: Any
    transform: Any
    width: int
    height: int

    def same_as(self, other: Grid, tol: float = 1e-9) -> bool:
        """Same CRS, size and transform (within ``tol`` of a pixel)."""
        if self.crs != other.crs or (self.width, self.height) != (other.width, other.height):
            return False
        return self.transform.almost_equals(other.transform, precision=tol)

    def describe(self) -> str:
        t = self.transform
        return (f"{self.crs.to_string() if self.crs else 'no CRS'}, {self.width}x{self.height} "
                f"px of {t.a:g} x {-t.e:g}, origin ({t.c:g}, {t.f:g})")


def grid_of(src: Any) -> Grid:
    """The :class:`Grid` of an open rasterio dataset."""
    return Grid(src.crs, src.transform, src.width, src.height)


def check_same_grid(first: tuple[str, Grid], other: tuple[str, Grid], fix: str) -> None:
    """Refuse two rasters on different grids (nothing is resampled silently).

    Raises:
        DataError: One line naming both files, both grids and ``fix``.
    """
    (a, ga), (b, gb) = first, other
    if ga.crs != gb.crs or not np.allclose([ga.transform.a, ga.transform.e],
                                           [gb.transform.a, gb.transform.e]):
        raise DataError(f"{b!r} ({gb.describe()}) is not on the grid of {a!r} "
                        f"({ga.describe()}); {fix}")


def _per_band(value: float | Sequence[float], n: int, key: str) -> np.ndarray:
    arr = np.asarray(value if isinstance(value, list | tuple) else [value] * n, np.float32)
    if arr.shape != (n,):
        raise DataError(f"{key} has {arr.size} values but {n} bands are read; give one value "
                        "or one per band")
    return arr.reshape(n, 1, 1)


def _all_valid(src: Any, bands: Sequence[int]) -> bool:
    """Whether GDAL says every pixel of ``bands`` is valid (no nodata value, mask band or
    alpha band: ``GMF_ALL_VALID``), so that their masks need not be read."""
    from rasterio.enums import MaskFlags

    flags = src.mask_flag_enums
    return all(flags[b - 1] == [MaskFlags.all_valid] for b in bands)


class RasterInput:
    """Reads normalised input windows from a raster: the preprocessing of a geo session.

    ``x = (value - offset) / scale`` per band, float32; pixels that are nodata (in any read
    band, or masked by the raster's mask) become ``fill``.

    Args:
        bands: 1-based bands to read, in order (``None``: all of the raster's).
        nodata: Input nodata value (``None``: the raster's own nodata or mask).
        offset: One value or one per band.
        scale: One value or one per band (not 0).
        fill: Normalised value of nodata pixels.
        gdal_cache_mb: GDAL block cache cap in MiB (see :meth:`env`).
    """

    def __init__(self, bands: Sequence[int] | None = None, nodata: float | None = None,
                 offset: float | Sequence[float] = 0.0, scale: float | Sequence[float] = 1.0,
                 fill: float = 0.0, gdal_cache_mb: int = 64) -> None:
        self.bands = None if bands is None else [int(b) for b in bands]
        self.nodata = nodata
        self.offset = offset
        self.scale = scale
        self.fill = float(fill)
        self.gdal_cache_mb = int(gdal_cache_mb)

    @classmethod
    def from_params(cls, params: Any) -> RasterInput:
        """From a ``geotiff_tiles`` params model or its dict (e.g. a session config's
        ``datasets.<name>.params``)."""
        get = params.get if isinstance(params, Mapping) else (
            lambda k, d=None: getattr(params, k, d))
        return cls(get("bands"), get("nodata"), get("offset", 0.0), get("scale", 1.0),
                   get("fill", 0.0), get("gdal_cache_mb", 64))

    @property
    def gdal_cache_bytes(self) -> int:
        """``GDAL_CACHEMAX`` in bytes."""
        return self.gdal_cache_mb * 2**20

    def env(self) -> contextlib.AbstractContextManager[Any]:
        """``rasterio.Env`` with the GDAL block cache capped (bytes)."""
        return rasterio.Env(GDAL_CACHEMAX=self.gdal_cache_bytes)

    def band_list(self, src: Any, path: str = "") -> list[int]:
        """The bands read from ``src``.

        Raises:
            DataError: A band is not in the raster.
        """
        if self.bands is None:
            return list(range(1, src.count + 1))
        bad = [b for b in self.bands if not 1 <= b <= src.count]
        if bad:
            raise DataError(f"raster {path or src.name!r} has {src.count} bands; bands "
                            f"{bad} do not exist (bands are 1-based); fix params.bands")
        return self.bands

    def channels(self, src: Any) -> int:
        """Number of channels ``C`` of the windows read from ``src``."""
        return len(self.band_list(src))

    def valid_mask(self, src: Any, window: Window, bands: list[int] | None = None,
                   data: np.ndarray | None = None) -> np.ndarray:
        """Valid pixels of a window: ``(h, w)`` bool (valid in every read band).

        With ``nodata`` set, pixels equal to it are invalid; otherwise the raster's own
        masks (its nodata value, alpha band or mask band) decide.
        """
        bands = bands or self.band_list(src)
        if self.nodata is not None:
            if data is None:
                data = src.read(bands, window=window)
            return ~np.any(data == self.nodata, axis=0)
        if src.nodata is not None and data is not None:
            nod = src.nodata
            return ~np.any(np.isnan(data) if np.isnan(nod) else data == nod, axis=0)
        if _all_valid(src, bands):  # no nodata, mask band or alpha: nothing to read
            return np.ones((int(window.height), int(window.width)), bool)
        masks = src.read_masks(bands, window=window)
        return np.all(masks > 0, axis=0)

    def read(self, src: Any, window: Window, boundless: bool = False
             ) -> tuple[np.ndarray, np.ndarray]:
        """One normalised window.

        Args:
            src: An open rasterio dataset.
            window: The pixel window (``rasterio.windows.Window``).
            boundless: Read past the raster's edges (outside pixels are invalid and
                ``fill``); windows that cross an edge are always read this way.

        Returns:
            ``(x, valid)``: ``x`` float32 ``(C, h, w)`` normalised with nodata pixels set to
            ``fill``; ``valid`` bool ``(h, w)``.

        Raises:
            DataError: A band is not in the raster.
        """
        bands = self.band_list(src)
        boundless = boundless or window.col_off < 0 or window.row_off < 0 or \
            window.col_off + window.width > src.width or \
            window.row_off + window.height > src.height
        if boundless:
            data = src.read(bands, window=window, boundless=True, masked=True)
            valid = ~np.any(np.ma.getmaskarray(data), axis=0)
            data = data.filled(0)
            if self.nodata is not None:
                valid &= ~np.any(data == self.nodata, axis=0)
        else:
            data = src.read(bands, window=window)
            valid = self.valid_mask(src, window, bands, data)
        n = len(bands)
        x = data.astype(np.float32)  # then in place: no float temporaries per window
        x -= _per_band(self.offset, n, "offset")
        x /= _per_band(self.scale, n, "scale")
        if not valid.all():
            x[:, ~valid] = self.fill
        return x, valid

    def describe(self) -> dict[str, Any]:
        """The preprocessing as plain data (for logs)."""
        return {"bands": self.bands, "nodata": self.nodata, "offset": self.offset,
                "scale": self.scale, "fill": self.fill, "gdal_cache_mb": self.gdal_cache_mb}


@contextlib.contextmanager
def aligned(path: str, grid: Grid, method: str) -> Iterator[Any]:
    """``path`` seen through a ``WarpedVRT`` on ``grid`` (windowed reads warp on the fly).

    Args:
        path: The raster.
        grid: Target grid.
        method: Resampling name.
    """
    from rasterio.vrt import WarpedVRT

    with open_raster(path) as src, WarpedVRT(src, crs=grid.crs, transform=grid.transform,
                                             width=grid.width, height=grid.height,
                                             resampling=resampling(method)) as vrt:
        yield vrt
