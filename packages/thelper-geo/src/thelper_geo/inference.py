"""Sliding-window inference over whole rasters: ``thelper infer SESSION raster.tif``.

A session trained on ``geotiff_tiles`` predicts a raster of any size window by window, with
the session's own preprocessing (the dataset's band selection, nodata handling and
normalisation through :class:`thelper_geo.rasters.RasterInput`, then the config's
``loaders.base_transforms`` and the task's collation, through the core
:class:`thelper.predict.Predictor`), and writes the result on the input's grid
(:mod:`thelper_geo.outputs`).

How the windows are blended. Windows of ``tile_size`` pixels are laid every
``stride = tile_size - overlap`` pixels (the last one of a row or column shifted back to end
at the raster's edge). Each window's per-pixel output (class probabilities: the softmax of
the logits; regression: the task's values in target units; tile classification: the tile's
probabilities spread over its pixels) is multiplied by a separable weight
``w(i) w(j)`` with ``w(i) = sin(pi (i + 1/2) / tile_size)`` (``cosine``; ``triangular`` and
``uniform`` are also available), strictly positive and lowest at the window's edges, where a
CNN sees the least context. A pixel's value is the weighted mean of the windows covering it,
``sum_k w_k p_k / sum_k w_k``, so seams vanish and a model whose output is constant gives
that constant everywhere. The weight sums are separable too, ``Wy(y) Wx(x)``, and never
stored as rasters. Windows without a single valid input pixel are skipped (their pixels are
nodata anyway).

How memory stays flat. The raster is cut into square blocks of ``block`` pixels (a multiple
of the stride and of 16, at least 512 and the tile size). Blocks are processed in row-major
order; each window belongs to the block holding its origin, and its output is added into
that block's accumulator, which extends ``overhang`` pixels right and down (``overhang`` is
the overlap when the block is a multiple of the stride). When a block's windows are done
the block is final: it is normalised, written to the GeoTIFFs (whose internal tiles are the
blocks) and dropped, its right margin carried to the next block and its bottom margin kept
in one ``(K, overhang, width)`` buffer for the next row of blocks. The largest arrays are
therefore ``K × (block + overhang)²`` and ``K × overhang × width`` float32, whatever the
raster's height, and GDAL's block cache is capped with ``rasterio.Env(GDAL_CACHEMAX=bytes)``.
Windows are read (and preprocessed) in a background thread one batch ahead of the model.

Importing this module imports neither numpy, torch nor rasterio (the plugin registers
:func:`components` on every command).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from thelper.exceptions import ConfigError, DataError
from thelper_geo.outputs import components

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["BLENDS", "blend_weights", "window_origins", "coverage", "block_side", "Layout",
           "GeoTiffDecoder", "geotiff_decoder", "SlidingWindow", "run_sliding_window",
           "components"]

log = logging.getLogger("thelper.geo.inference")

#: Window weights: ``cosine`` (``sin(pi (i + 1/2) / n)``), ``triangular`` (``1 - |2 (i +
#: 1/2) / n - 1|``) and ``uniform`` (a plain mean of the overlapping windows).
BLENDS = ("cosine", "triangular", "uniform")
#: Processing blocks are at least this many pixels on a side.
MIN_BLOCK = 512


# ------------------------------------------------------------------------ geometry
def blend_weights(n: int, blend: str = "cosine") -> np.ndarray:
    """1-D window weights ``(n,)`` float64, all strictly positive.

    Raises:
        ConfigError: Unknown ``blend``.
    """
    import numpy as np

    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    if blend == "cosine":
        w = np.sin(np.pi * t)
    elif blend == "triangular":
        w = 1.0 - np.abs(2.0 * t - 1.0)
    elif blend == "uniform":
        w = np.ones(n, np.float64)
    else:
        raise ConfigError(f"blend {blend!r}: choose one of {', '.join(BLENDS)}")
    return (w + w[::-1]) / 2.0  # exactly symmetric


def window_origins(length: int, tile: int, stride: int) -> list[int]:
    """Origins of the windows along one axis: ``0, stride, 2 stride, ...``, the last one
    shifted to end at ``length`` (one window at 0 when ``length <= tile``)."""
    if length <= tile:
        return [0]
    origins = list(range(0, length - tile + 1, stride))
    if origins[-1] + tile < length:
        origins.append(length - tile)
    return origins


def coverage(length: int, origins: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Sum of the window weights covering each position along one axis: ``(length,)``."""
    import numpy as np

    total = np.zeros(length, np.float64)
    n = len(weights)
    for o in origins:
        end = min(o + n, length)
        total[o:end] += weights[:end - o]
    return total


def block_side(tile: int, stride: int) -> int:
    """Side of the processing (and GeoTIFF tile) blocks: a multiple of 16 and, when that
    stays under 2048 pixels, of the stride, at least :data:`MIN_BLOCK` and ``tile``."""
    need = max(tile, MIN_BLOCK)
    base = math.lcm(stride, 16)
    if base > 2048:
        base = 16
    return base * math.ceil(need / base)


@dataclass(frozen=True)
class Layout:
    """Windows and blocks along one axis.

    Attributes:
        length: Pixels along the axis.
        origins: Window origins (:func:`window_origins`).
        owners: Block index of each window (the block holding its origin).
        starts: First pixel of each block.
        overhang: Pixels the windows of a block reach past its end (at most).
    """

    length: int
    origins: tuple[int, ...]
    owners: tuple[int, ...]
    starts: tuple[int, ...]
    overhang: int

    @classmethod
    def of(cls, length: int, tile: int, stride: int, block: int) -> Layout:
        origins = window_origins(length, tile, stride)
        starts = tuple(range(0, length, block))
        owners = tuple(o // block for o in origins)
        over = 0
        for o, b in zip(origins, owners, strict=True):
            end = min(starts[b] + block, length)
            over = max(over, min(o + tile, length) - end)
        return cls(length, tuple(origins), owners, starts, over)

    def size(self, b: int, block: int) -> int:
        """Pixels of block ``b``."""
        return min(block, self.length - self.starts[b])


# ------------------------------------------------------------------------- decoder
class GeoTiffDecoder:
    """Reads raster windows as a ``geotiff_tiles`` dataset reads its tiles.

    Built from the dataset's params (:class:`thelper_geo.rasters.RasterInput`: ``bands``,
    ``nodata``, ``offset``, ``scale``, ``fill``, ``gdal_cache_mb``) and its ``target``, which
    sets the form of a sample's input: ``{"image": Image}`` (float32 ``(C, H, W)``, a joint
    sample) for segmentation, the plain float32 ``(C, H, W)`` tensor otherwise. Calling it on
    a file reads the whole raster as one sample (a tile-sized file); ``thelper infer`` runs
    :class:`SlidingWindow` over rasters instead.

    Args:
        bands, nodata, offset, scale, fill, gdal_cache_mb: The dataset's.
        target: ``segmentation``, ``regression`` or ``classification``.

    Attributes:
        params: Plain data that rebuilds the decoder (recorded in exports).
        reader: The :class:`~thelper_geo.rasters.RasterInput`.
    """

    def __init__(self, bands: Sequence[int] | None = None, nodata: float | None = None,
                 offset: Any = 0.0, scale: Any = 1.0, fill: float = 0.0,
                 gdal_cache_mb: int = 64, target: str = "segmentation") -> None:
        from thelper_geo.rasters import RasterInput

        self.params = {"bands": None if bands is None else [int(b) for b in bands],
                       "nodata": nodata, "offset": offset, "scale": scale, "fill": float(fill),
                       "gdal_cache_mb": int(gdal_cache_mb), "target": str(target)}
        self.reader = RasterInput(bands, nodata, offset, scale, fill, gdal_cache_mb)

    def value(self, x: np.ndarray) -> Any:
        """A normalised window ``(C, h, w)`` float32 as the dataset's ``input`` value."""
        import numpy as np
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x))
        if self.params["target"] != "segmentation":
            return t
        from torchvision import tv_tensors

        return {"image": tv_tensors.Image(t)}

    def read(self, src: Any, window: Any, boundless: bool = False) -> tuple[Any, np.ndarray]:
        """``(input value, valid (h, w) bool)`` of one window of an open raster."""
        x, valid = self.reader.read(src, window, boundless=boundless)
        return self.value(x), valid

    def __call__(self, path: Path) -> Any:
        from rasterio.windows import Window

        from thelper_geo.rasters import open_raster

        with self.reader.env(), open_raster(str(path), "input raster") as src:
            value, _ = self.read(src, Window(0, 0, src.width, src.height))
        return value

    def __repr__(self) -> str:
        return f"GeoTiffDecoder({self.params})"


def geotiff_decoder(dataset_params: Mapping[str, Any]) -> GeoTiffDecoder:
    """Decoder of ``geotiff_tiles`` (``dataset_params``: the dataset's params, or a decoder's
    own ``params``)."""
    keys = ("bands", "nodata", "offset", "scale", "fill", "gdal_cache_mb", "target")
    return GeoTiffDecoder(**{k: dataset_params[k] for k in keys if k in dataset_params})


# -------------------------------------------------------------------- the runner
def _task_kind(task: Any) -> str:
    for cls in type(task).__mro__:
        name = getattr(cls, "type_name", None)
        if name in ("segmentation", "classification", "regression"):
            return str(name)
    raise ConfigError(f"sliding-window inference predicts segmentation, classification or "
                      f"regression sessions, not {task.type_name!r}")


def _channels(task: Any, kind: str) -> int:
    if kind != "regression":
        return len(task.class_names)
    shape = list(task.target_shape)
    return shape[0] if len(shape) == 3 else (1 if len(shape) == 2 else task.num_outputs)


@dataclass
class _Batch:
    tiles: list[tuple[int, int, int]]  # (block index, row, col) of each window
    inputs: Any
    scanned: int  # windows read, skipped ones included


class SlidingWindow:
    """Predict rasters window by window and write them on their own grid.

    Args:
        predictor: The session's :class:`~thelper.predict.Predictor` (its decoder must be a
            :class:`GeoTiffDecoder`).
        tile_size: Window side in pixels (default: the training input's width).
        overlap: Pixels shared by neighbouring windows (default: ``tile_size // 4``).
        probabilities: ``none``, ``uint8`` (``round(255 p)`` with a mask band for nodata) or
            ``float32`` (nodata NaN): per-class probabilities (classification tasks).
        cog: Write Cloud Optimized GeoTIFFs.
        polygons: Write the class map's polygons as GeoJSON (classification tasks).
        gdal_cache_mb: GDAL block cache cap in MiB (default: the dataset's).
        blend: Window weights, one of :data:`BLENDS`.
        block: Processing block side (default :func:`block_side`).
        progress: Called with ``(raster name, windows done, windows in all)``.

    Raises:
        ConfigError: Invalid sizes or options, or a task the runner does not predict.
    """

    def __init__(self, predictor: Any, *, tile_size: int | None = None,
                 overlap: int | None = None, probabilities: str = "none", cog: bool = False,
                 polygons: bool = True, gdal_cache_mb: int | None = None,
                 blend: str = "cosine", block: int | None = None,
                 progress: Callable[[str, int, int], None] | None = None) -> None:
        self.predictor = predictor
        self.task = predictor.task
        self.kind = _task_kind(self.task)
        self.channels = _channels(self.task, self.kind)
        decoder = predictor.decoder
        if not isinstance(decoder, GeoTiffDecoder):
            raise ConfigError(f"{predictor.source}: the session's inputs are not read by the "
                              f"geotiff_tiles decoder (got {decoder!r})")
        self.decoder = decoder
        shape = list(predictor.input_shape or [])
        tile = int(tile_size) if tile_size else (int(shape[-1]) if len(shape) >= 2 else 256)
        if tile < 1:
            raise ConfigError(f"--tile-size must be >= 1 (got {tile})")
        over = tile // 4 if overlap is None else int(overlap)
        if not 0 <= over < tile:
            raise ConfigError(f"--overlap {over} must be >= 0 and smaller than the tile size "
                              f"{tile}")
        if probabilities not in ("none", "uint8", "float32"):
            raise ConfigError(f"--probabilities {probabilities!r}: choose none, uint8 or "
                              "float32")
        if probabilities != "none" and self.kind == "regression":
            raise ConfigError("--probabilities: a regression session predicts values, not "
                              "class probabilities; drop the option")
        self.tile, self.overlap, self.stride = tile, over, tile - over
        self.block = int(block) if block else block_side(tile, self.stride)
        if self.block < tile or self.block % 16:
            raise ConfigError(f"block {self.block} must be a multiple of 16 and at least the "
                              f"tile size {tile}")
        self.probabilities = probabilities
        self.cog = bool(cog)
        self.polygons = bool(polygons) and self.kind != "regression"
        self.cache_bytes = int(gdal_cache_mb or decoder.params["gdal_cache_mb"]) * 2**20
        self.w1 = blend_weights(tile, blend)
        self.progress = progress
        self._weights: Any = None

    # ---------------------------------------------------------------- prediction
    def _to_maps(self, outputs: Any, n: int) -> np.ndarray:
        """Weighted per-pixel outputs ``(n, K, tile, tile)`` float32 of a batch."""
        import numpy as np
        import torch
        import torch.nn.functional as F

        if self.kind == "segmentation":
            from thelper_vision.tasks import model_output

            p = torch.softmax(model_output(outputs).float(), dim=1)
        elif self.kind == "classification":
            p = torch.softmax(outputs.float(), dim=1)
        else:
            p = self.task.decode(outputs).float()
        if p.ndim == 2:  # one vector per window: spread over its pixels
            p = p[:, :, None, None].expand(-1, -1, self.tile, self.tile)
        elif p.ndim == 3:
            p = p[:, None]
        if p.ndim != 4 or p.shape[0] != n or p.shape[1] != self.channels:
            raise DataError(f"the model's outputs {tuple(p.shape)} are not (N={n}, "
                            f"K={self.channels}, H, W) for the {self.kind} task")
        if tuple(p.shape[-2:]) != (self.tile, self.tile):  # e.g. base transforms resized
            p = F.interpolate(p, size=(self.tile, self.tile), mode="bilinear",
                              align_corners=False)
        if self._weights is None or self._weights.device != p.device:
            w = torch.from_numpy(np.outer(self.w1, self.w1).astype(np.float32))
            self._weights = w.to(p.device)
        with torch.inference_mode():  # the outputs are inference tensors
            # in place where p owns its memory (not an expanded per-window vector)
            p = p.mul_(self._weights) if p.is_contiguous() else p * self._weights
        return p.cpu().numpy()

    def _batches(self, path: Path, xs: Layout, ys: Layout) -> Iterator[_Batch]:
        """Preprocessed batches of valid windows, in block order (runs in the reader
        thread)."""
        import rasterio
        from rasterio.windows import Window

        from thelper_geo.rasters import open_raster

        order = sorted(((ys.owners[i] * len(xs.starts) + xs.owners[j], y, x)
                        for i, y in enumerate(ys.origins) for j, x in enumerate(xs.origins)))
        boundless = ys.length < self.tile or xs.length < self.tile
        p = self.predictor
        with rasterio.Env(GDAL_CACHEMAX=self.cache_bytes), \
                open_raster(str(path), "input raster") as src:
            tiles: list[tuple[int, int, int]] = []
            samples: list[dict[str, Any]] = []
            scanned = 0
            for b, y, x in order:
                scanned += 1
                value, valid = self.decoder.read(src, Window(x, y, self.tile, self.tile),
                                                 boundless=boundless)
                if not valid.any():
                    continue
                tiles.append((b, y, x))
                samples.append(p.prepare(value, str(path)))
                if len(samples) == p.batch_size:
                    yield _Batch(tiles, p.collate(samples), scanned)
                    tiles, samples, scanned = [], [], 0
            if samples or scanned:
                yield _Batch(tiles, p.collate(samples) if samples else None, scanned)

    def run(self, path: Path, out: Path, stem: str | None = None) -> list[Path]:
        """Predict one raster; write its GeoTIFFs (and GeoJSON) under ``out``.

        Files (``<stem>`` defaults to the input's): ``<stem>_class.tif`` (uint8/uint16,
        class index + 1, 0 nodata), ``<stem>_probs.tif`` (opt-in, one band per class),
        ``<stem>_class.geojson`` (polygons), or ``<stem>_regression.tif`` (float32, NaN
        nodata, one band per target channel); all with the input's CRS, transform and size.

        Returns:
            The files written.

        Raises:
            DataError: The raster cannot be read, lacks the session's bands, or the model
                fails on its windows.
        """
        import rasterio

        from thelper_geo import outputs as o
        from thelper_geo.rasters import open_raster

        path, out = Path(path), Path(out)
        stem = stem or path.stem
        out.mkdir(parents=True, exist_ok=True)
        with rasterio.Env(GDAL_CACHEMAX=self.cache_bytes, GDAL_TIFF_INTERNAL_MASK=True), \
                open_raster(str(path), "input raster") as src:
            self.decoder.reader.band_list(src, str(path))  # missing bands: one clear error
            xs = Layout.of(src.width, self.tile, self.stride, self.block)
            ys = Layout.of(src.height, self.tile, self.stride, self.block)
            files = self._open_outputs(src, out, stem)
            try:
                self._predict(path, src, xs, ys, files)
            except BaseException:
                for f in files.values():
                    f.abort()
                raise
            written = [f.close() for f in files.values()]
        if self.polygons:
            geojson, n = o.write_polygons(files["class"].path, out / f"{stem}_class.geojson",
                                          self.task.class_names)
            log.info("%s: %d polygons", geojson, n)
            written.append(geojson)
        return written

    def _open_outputs(self, src: Any, out: Path, stem: str) -> dict[str, Any]:
        from thelper_geo.outputs import BlockGeoTiff, class_dtype

        profile = {"crs": src.crs, "transform": src.transform, "width": src.width,
                   "height": src.height}
        common = {"block": self.block, "cog": self.cog}
        if self.kind == "regression":
            return {"values": BlockGeoTiff(out / f"{stem}_regression.tif", profile,
                                           count=self.channels, dtype="float32",
                                           nodata=float("nan"), overview_resampling="average",
                                           **common)}
        names = list(self.task.class_names)
        files = {"class": BlockGeoTiff(out / f"{stem}_class.tif", profile, count=1,
                                       dtype=class_dtype(len(names)), nodata=0, **common)}
        if self.probabilities != "none":
            uint8 = self.probabilities == "uint8"
            files["probs"] = BlockGeoTiff(
                out / f"{stem}_probs.tif", profile, count=len(names),
                dtype=self.probabilities, nodata=None if uint8 else float("nan"), mask=uint8,
                descriptions=names, overview_resampling="average", **common)
        return files

    def _predict(self, path: Path, src: Any, xs: Layout, ys: Layout,
                 files: dict[str, Any]) -> None:
        import numpy as np

        k, nbx = self.channels, len(xs.starts)
        wy = coverage(ys.length, ys.origins, self.w1)
        wx = coverage(xs.length, xs.origins, self.w1)
        below = np.zeros((k, ys.overhang, xs.length), np.float32)  # next block row's top
        state: dict[str, Any] = {"block": 0, "acc": None, "right": None}
        total, done = len(xs.origins) * len(ys.origins), 0

        def start(b: int) -> np.ndarray:
            by, bx = divmod(b, nbx)
            y0, x0 = ys.starts[by], xs.starts[bx]
            h, w = ys.size(by, self.block), xs.size(bx, self.block)
            acc = np.zeros((k, min(h + ys.overhang, ys.length - y0),
                            min(w + xs.overhang, xs.length - x0)), np.float32)
            if by > 0 and ys.overhang:
                n = min(ys.overhang, acc.shape[1])
                acc[:, :n, :w] += below[:, :n, x0:x0 + w]
            right = state["right"]
            if bx > 0 and right is not None:
                acc[:, :right.shape[1], :right.shape[2]] += right
            return acc

        def finish(b: int, acc: np.ndarray) -> None:
            from rasterio.windows import Window

            by, bx = divmod(b, nbx)
            y0, x0 = ys.starts[by], xs.starts[bx]
            h, w = ys.size(by, self.block), xs.size(bx, self.block)
            below[:, :, x0:x0 + w] = 0.0
            spill = acc[:, h:, :w]
            below[:, :spill.shape[1], x0:x0 + w] = spill
            state["right"] = acc[:, :, w:].copy() if acc.shape[2] > w else None
            window = Window(x0, y0, w, h)
            norm = (wy[y0:y0 + h, None] * wx[None, x0:x0 + w]).astype(np.float32)
            values = acc[:, :h, :w]
            values /= norm  # in place: the margins were carried above
            valid = self.decoder.reader.valid_mask(src, window)
            self._write(files, values, valid, window)

        def advance_to(b: int) -> None:
            while state["block"] < b:
                acc = state["acc"] if state["acc"] is not None else start(state["block"])
                finish(state["block"], acc)
                state["block"] += 1
                state["acc"] = None

        with ThreadPoolExecutor(1, thread_name_prefix="thelper-geo-read") as pool:
            batches = self._batches(path, xs, ys)
            future = pool.submit(next, batches, None)
            try:
                while (batch := future.result()) is not None:
                    future = pool.submit(next, batches, None)
                    if batch.tiles:
                        maps = self._forward(batch, path)
                        for (b, y, x), m in zip(batch.tiles, maps, strict=True):
                            advance_to(b)
                            if state["acc"] is None:
                                state["acc"] = start(b)
                            by, bx = divmod(b, nbx)
                            ry, rx = y - ys.starts[by], x - xs.starts[bx]
                            acc = state["acc"]
                            hh = min(self.tile, acc.shape[1] - ry)
                            ww = min(self.tile, acc.shape[2] - rx)
                            acc[:, ry:ry + hh, rx:rx + ww] += m[:, :hh, :ww]
                    done += batch.scanned
                    if self.progress is not None:
                        self.progress(path.name, done, total)
            finally:
                future.cancel()
                pool.submit(batches.close).result()
        advance_to(len(ys.starts) * nbx)

    def _forward(self, batch: _Batch, path: Path) -> np.ndarray:
        try:
            outputs = self.predictor.forward(batch.inputs)
            return self._to_maps(outputs, len(batch.tiles))
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise DataError(f"the model fails on windows of {str(path)!r} ({self.tile} px, "
                            f"trained on {tuple(self.predictor.input_shape or ())}): "
                            f"{type(exc).__name__}: {first}") from exc

    def _write(self, files: dict[str, Any], values: np.ndarray, valid: np.ndarray,
               window: Any) -> None:
        import numpy as np

        if self.kind == "regression":
            values[:, ~valid] = np.nan
            files["values"].write(values, window)
            return
        cls = files["class"]
        stored = values.argmax(axis=0).astype(cls.dtype) + 1
        stored[~valid] = 0
        cls.write(stored[None], window)
        if "probs" in files:
            if self.probabilities == "uint8":
                probs = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
                probs[:, ~valid] = 0
            else:
                probs = values
                probs[:, ~valid] = np.nan
            files["probs"].write(probs, window, valid)


def _progress_bar() -> tuple[Callable[[str, int, int], None] | None, Callable[[], None]]:
    """A rich progress bar on interactive terminals: ``(update, stop)``."""
    from thelper.logs import console, is_interactive

    if not is_interactive():
        return None, lambda: None
    from rich.progress import Progress

    progress = Progress(console=console, transient=True)
    progress.start()
    bars: dict[str, Any] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in bars:
            bars[name] = progress.add_task(f"windows of {name}", total=total)
        progress.update(bars[name], completed=done)

    return update, progress.stop


def run_sliding_window(predictor: Any, files: Sequence[Path], out: Path, *,
                       tile_size: int | None = None, overlap: int | None = None,
                       probabilities: str = "none", cog: bool = False, polygons: bool = True,
                       gdal_cache_mb: int | None = None) -> list[Path]:
    """The ``geotiff_tiles`` infer runner: :class:`SlidingWindow` over every file, plus
    ``config-classes.json`` (class name → stored value) for classification tasks.

    Returns:
        The files written under ``out``.
    """
    from thelper_geo.outputs import write_class_values

    update, stop = _progress_bar()
    runner = SlidingWindow(predictor, tile_size=tile_size, overlap=overlap,
                           probabilities=probabilities, cog=cog, polygons=polygons,
                           gdal_cache_mb=gdal_cache_mb, progress=update)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    stems: set[str] = set()
    try:
        for path in map(Path, files):
            stem, n = path.stem, 1
            while stem in stems:
                n += 1
                stem = f"{path.stem}_{n}"
            stems.add(stem)
            written += runner.run(path, out, stem)
    finally:
        stop()
    if runner.kind != "regression":
        written.append(write_class_values(out, runner.task.class_names))
    return written
