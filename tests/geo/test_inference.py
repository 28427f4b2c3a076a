"""Sliding-window inference (``thelper_geo.inference``) on GeoTIFFs the tests write.

Models with known outputs make the blending checkable exactly: a constant model must give
its constant everywhere (no seams), a per-pixel (1×1 convolution) model must give what the
same model computes on the whole raster at once, whatever the tile size, overlap and block
size; outputs keep the input's CRS, transform, size and nodata; polygons fall inside the
raster's bounds; and the runner never holds a raster-sized array (``tracemalloc`` traces
numpy's allocations).
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from thelper.exceptions import ConfigError
from thelper.predict import Predictor
from thelper.tasks import Regression

rasterio = pytest.importorskip("rasterio")

from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import Window  # noqa: E402

from thelper_geo.inference import (  # noqa: E402
    Layout,
    SlidingWindow,
    blend_weights,
    block_side,
    coverage,
    run_sliding_window,
    window_origins,
)
from thelper_geo.outputs import CLASSES_FILE, class_values, components  # noqa: E402

CLASSES = ["low", "high"]
NODATA = 255


@pytest.fixture(scope="module")
def registry():
    """The process's registry, with the geo inference components (added if the geo plugin
    does not register them)."""
    from thelper.plugins import get_plugin_manager

    reg = get_plugin_manager().registry
    for info in components():
        if reg.canonical(info.kind, info.name) is None:
            reg.add(info)
    return reg


def write_raster(path: Path, height: int, width: int, *, seed: int = 0, crs: str = "EPSG:32613",
                 collar: int = 0, block: int = 256) -> Path:
    """A tiled 3-band uint8 GeoTIFF of smooth random values, nodata 255 on a ``collar``
    of pixels at the left and top edges."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 250, size=(3, height // 16 + 2, width // 16 + 2)).astype(np.float32)
    data = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2)[:, :height, :width]
    data = (data + rng.integers(0, 5, size=data.shape)).clip(0, 254).astype(np.uint8)
    if collar:
        data[:, :collar, :] = NODATA
        data[:, :, :collar] = NODATA
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 3,
               "dtype": "uint8", "crs": crs, "transform": from_origin(450000, 4480000, 30, 30),
               "nodata": NODATA, "compress": "deflate"}
    if min(height, width) >= block:
        profile |= {"tiled": True, "blockxsize": block, "blockysize": block}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


class Pointwise(nn.Module):
    """Logits (or values) of each pixel from its own channels only: a 1×1 convolution with
    fixed weights; ``constant`` outputs a fixed vector instead."""

    def __init__(self, outputs: int, constant: list[float] | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, outputs, 1)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(outputs, 3, 1, 1, generator=g) * 4)
            self.conv.bias.copy_(torch.randn(outputs, generator=g))
        self.constant = constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.constant is not None:
            c = torch.tensor(self.constant, dtype=x.dtype, device=x.device)
            return c[None, :, None, None].expand(x.shape[0], -1, *x.shape[-2:])
        return self.conv(x)


def predictor(registry, model: nn.Module, task, *, tile: int = 64, target: str,
              batch_size: int = 16) -> Predictor:
    """A Predictor as ``Predictor.load`` builds it for a ``geotiff_tiles`` session."""
    spec = {"type": "geotiff_tiles", "params": {"bands": [1, 2, 3], "nodata": None,
                                                "offset": 0.0, "scale": 255.0, "fill": 0.0,
                                                "gdal_cache_mb": 16, "target": target}}
    return Predictor(task, model.eval(), decoder_spec=spec, input_shape=[3, tile, tile],
                     batch_size=batch_size, registry=registry)


def segmentation_task():
    from thelper_vision.tasks import Segmentation

    return Segmentation(CLASSES)


def read(path: Path) -> tuple[np.ndarray, dict]:
    with rasterio.open(path) as src:
        return src.read(), {"crs": src.crs, "transform": src.transform, "width": src.width,
                            "height": src.height, "nodata": src.nodatavals,
                            "blocks": src.block_shapes, "dtypes": src.dtypes,
                            "bounds": src.bounds}


def direct(path: Path, model: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """``(model outputs (K, H, W), valid (H, W))`` of the whole raster in one forward."""
    with rasterio.open(path) as src:
        data = src.read()
    valid = ~np.any(data == NODATA, axis=0)
    x = torch.from_numpy(data.astype(np.float32) / 255.0)
    x[:, ~torch.from_numpy(valid)] = 0.0
    with torch.no_grad():
        return model(x[None])[0].numpy(), valid


# ---------------------------------------------------------------------- geometry
def test_windows_cover_every_pixel_and_blocks_hold_their_overhang():
    assert window_origins(100, 32, 24) == [0, 24, 48, 68]
    assert window_origins(20, 32, 24) == [0]
    w = blend_weights(32)
    assert (w > 0).all() and w[0] == w[-1] < w[15]
    assert np.allclose(w, w[::-1])
    cov = coverage(100, window_origins(100, 32, 24), w)
    assert (cov > 0).all()
    assert block_side(64, 48) % 48 == 0 and block_side(64, 48) % 16 == 0
    assert block_side(64, 48) >= 512
    lay = Layout.of(2000, 64, 48, block_side(64, 48))
    assert lay.overhang == 16  # the overlap: blocks are multiples of the stride
    odd = Layout.of(2000, 64, 50, 512)
    assert 0 < odd.overhang < 64


# ------------------------------------------------------------------ segmentation
@pytest.mark.parametrize("tile, overlap, block", [(64, 16, None), (48, 20, 96), (64, 0, 64)])
def test_pointwise_model_matches_one_forward_over_the_raster(registry, tmp_path, tile,
                                                             overlap, block):
    src = write_raster(tmp_path / "in.tif", 300, 420, collar=5)
    model = Pointwise(2)
    runner = SlidingWindow(predictor(registry, model, segmentation_task(), tile=tile,
                                     target="segmentation"),
                           tile_size=tile, overlap=overlap, probabilities="float32",
                           block=block, polygons=False)
    files = runner.run(src, tmp_path / "out")
    assert [f.name for f in files] == ["in_class.tif", "in_probs.tif"]
    logits, valid = direct(src, model)
    expected = torch.softmax(torch.from_numpy(logits), 0).numpy()
    probs, meta = read(tmp_path / "out" / "in_probs.tif")
    assert np.isnan(probs[:, ~valid]).all()
    np.testing.assert_allclose(probs[:, valid], expected[:, valid], rtol=1e-5, atol=1e-6)
    classes, cmeta = read(tmp_path / "out" / "in_class.tif")
    assert cmeta["dtypes"] == ("uint8",) and cmeta["nodata"] == (0.0,)
    stored = expected.argmax(0) + 1
    decided = np.abs(expected[1] - expected[0]) > 1e-4  # no ties within rounding
    assert (classes[0][valid & decided] == stored[valid & decided]).all()
    assert (classes[0][~valid] == 0).all()
    assert set(np.unique(classes)) <= {0, 1, 2}


def test_a_constant_model_gives_its_constant_without_seams(registry, tmp_path):
    src = write_raster(tmp_path / "in.tif", 333, 517)
    task = Regression(target_shape=[1, 40, 40])
    runner = SlidingWindow(predictor(registry, Pointwise(1, constant=[2.5]), task, tile=40,
                                     target="regression"), overlap=13)
    files = runner.run(src, tmp_path / "out")
    assert [f.name for f in files] == ["in_regression.tif"]
    values, meta = read(files[0])
    assert meta["dtypes"] == ("float32",)
    np.testing.assert_allclose(values, 2.5, rtol=1e-6)  # seams would show as other values


def test_outputs_keep_the_input_grid_and_nodata(registry, tmp_path):
    src = write_raster(tmp_path / "scene.tif", 260, 300, collar=7, crs="EPSG:3857")
    p = predictor(registry, Pointwise(2), segmentation_task(), target="segmentation")
    written = run_sliding_window(p, [src], tmp_path / "out", probabilities="uint8")
    names = sorted(f.name for f in written)
    assert names == [CLASSES_FILE, "scene_class.geojson", "scene_class.tif", "scene_probs.tif"]
    _, ref = read(src)
    for name in ("scene_class.tif", "scene_probs.tif"):
        _, meta = read(tmp_path / "out" / name)
        for key in ("crs", "transform", "width", "height"):
            assert meta[key] == ref[key], (name, key)
    classes, _ = read(tmp_path / "out" / "scene_class.tif")
    assert (classes[0, :7, :] == 0).all() and (classes[0, :, :7] == 0).all()
    assert (classes[0, 7:, 7:] > 0).all()
    with rasterio.open(tmp_path / "out" / "scene_probs.tif") as probs:
        assert probs.dtypes == ("uint8", "uint8")
        assert probs.descriptions == tuple(CLASSES)
        masked = probs.read(masked=True)
        assert masked.mask[:, :7, :].all() and not masked.mask[:, 7:, 7:].any()
        total = masked[:, 7:, 7:].astype(np.int32).sum(axis=0)
        assert total.min() >= 254 and total.max() <= 256  # two rounded probabilities
    mapping = json.loads((tmp_path / "out" / CLASSES_FILE).read_text())
    assert mapping == class_values(CLASSES) == {"low": 1, "high": 2}


def test_polygons_are_in_the_input_crs_and_inside_its_bounds(registry, tmp_path):
    from shapely.geometry import box, shape

    src = write_raster(tmp_path / "scene.tif", 200, 260, collar=4, crs="EPSG:3857")
    p = predictor(registry, Pointwise(2), segmentation_task(), target="segmentation")
    run_sliding_window(p, [src], tmp_path / "out")
    doc = json.loads((tmp_path / "out" / "scene_class.geojson").read_text())
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"
    _, meta = read(src)
    bounds = box(*meta["bounds"]).buffer(1e-6)
    classes, _ = read(tmp_path / "out" / "scene_class.tif")
    area = {1: 0.0, 2: 0.0}
    for f in doc["features"]:
        geom = shape(f["geometry"])
        assert geom.is_valid and bounds.contains(geom)
        assert f["properties"]["class"] == CLASSES[f["properties"]["value"] - 1]
        area[f["properties"]["value"]] += geom.area
    pixel = 30.0 * 30.0
    for value in (1, 2):  # the polygons cover the class map's pixels exactly
        assert area[value] == pytest.approx((classes == value).sum() * pixel)
    import pyogrio

    frame = pyogrio.read_dataframe(tmp_path / "out" / "scene_class.geojson") \
        if hasattr(pyogrio, "read_dataframe") and _has_geopandas() else None
    info = pyogrio.read_info(tmp_path / "out" / "scene_class.geojson")
    assert "3857" in str(info["crs"]) and info["features"] == len(doc["features"])
    del frame


def _has_geopandas() -> bool:
    try:
        import geopandas  # noqa: F401
    except ImportError:
        return False
    return True


def test_tile_classification_spreads_each_window_over_its_pixels(registry, tmp_path):
    from thelper.tasks import Classification

    class TileMean(nn.Module):
        def forward(self, x):  # "high" when the window is bright on average
            m = x.mean(dim=(1, 2, 3))
            return torch.stack([0.5 - m, m - 0.5], dim=1) * 20

    src = write_raster(tmp_path / "in.tif", 180, 200)
    p = predictor(registry, TileMean(), Classification(CLASSES), tile=32,
                  target="classification")
    files = SlidingWindow(p, overlap=0, polygons=True).run(src, tmp_path / "out")
    classes, _ = read(files[0])
    with rasterio.open(src) as s:
        data = s.read(window=Window(0, 0, 32, 32)).astype(np.float32) / 255
    expected = 2 if data.mean() > 0.5 else 1
    assert (classes[0, :32, :32] == expected).all()  # without overlap: one window's class


def test_a_raster_smaller_than_a_tile_is_read_past_its_edges(registry, tmp_path):
    src = write_raster(tmp_path / "small.tif", 20, 30)
    model = Pointwise(2)
    p = predictor(registry, model, segmentation_task(), tile=64, target="segmentation")
    files = SlidingWindow(p, probabilities="float32", polygons=False).run(src, tmp_path / "o")
    logits, _ = direct(src, model)
    probs, meta = read(files[1])
    assert (meta["width"], meta["height"]) == (30, 20)
    np.testing.assert_allclose(probs, torch.softmax(torch.from_numpy(logits), 0).numpy(),
                               rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- memory
def test_memory_is_flat_in_the_raster_size(registry, tmp_path):
    """numpy's allocations (rasterio's reads included) are traced by tracemalloc: a raster
    four times taller leaves the peak where it was, well under one float32 band of the
    raster; the outputs are tiled by processing block."""
    p = predictor(registry, Pointwise(2), segmentation_task(), tile=128,
                  target="segmentation", batch_size=8)
    runner = SlidingWindow(p, overlap=32, probabilities="float32", polygons=False)
    runner.run(write_raster(tmp_path / "warm.tif", 80, 90), tmp_path / "warm")  # imports
    peaks = {}
    for height in (1024, 4096):
        src = write_raster(tmp_path / f"h{height}.tif", height, 2048, block=512)
        tracemalloc.start()
        try:
            files = runner.run(src, tmp_path / f"out{height}")
            peaks[height] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        with rasterio.open(files[0]) as out:
            assert out.block_shapes == [(runner.block, runner.block)]
            assert (out.width, out.height) == (2048, height)
    one_band = 4096 * 2048 * 4
    assert peaks[4096] < 1.1 * peaks[1024], peaks
    assert peaks[4096] < one_band / 2, (peaks, one_band)


# ----------------------------------------------------------------------- errors
def test_bad_options_are_config_errors(registry):
    p = predictor(registry, Pointwise(2), segmentation_task(), target="segmentation")
    with pytest.raises(ConfigError, match="--overlap 64 must be"):
        SlidingWindow(p, overlap=64)
    with pytest.raises(ConfigError, match="--probabilities 'u16'"):
        SlidingWindow(p, probabilities="u16")
    r = predictor(registry, Pointwise(1), Regression(target_shape=[1, 64, 64]),
                  target="regression")
    with pytest.raises(ConfigError, match="regression session predicts values"):
        SlidingWindow(r, probabilities="uint8")
