"""thelper-geo installs alone, as a user gets it: wheels of thelper-core, thelper-vision and
thelper-geo built with ``uv build`` and installed into a fresh virtual environment (no
workspace), where ``thelper plugins list`` shows the geo components.

Dependencies (torch, rasterio, ...) are resolved by uv from its cache (the workspace's
downloads); no Python is downloaded (``UV_PYTHON_DOWNLOADS=never``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.geo.conftest import ROOT

pytestmark = pytest.mark.slow


def _uv() -> str:
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    return uv


def test_three_wheels_install_alone_and_list_geo(tmp_path: Path):
    uv = _uv()
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    dist = tmp_path / "dist"
    for package in ("thelper-core", "thelper-vision", "thelper-geo"):
        proc = subprocess.run([uv, "build", "--package", package, "--wheel", "--out-dir",
                               str(dist)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = sorted(dist.glob("*.whl"))
    assert len(wheels) == 3, wheels
    geo = next(w for w in wheels if w.name.startswith("thelper_geo"))
    import zipfile

    names = zipfile.ZipFile(geo).namelist()
    for data in ("rmnp-rgb.tif", "rmnp-dem.tif", "rmnp.shp", "colorado-glaciers.geojson",
                 "LICENSE"):
        assert f"thelper_geo/example_data/{data}" in names
    venv = tmp_path / "venv"
    subprocess.run([uv, "venv", "--python", sys.executable, str(venv)], env=env, check=True,
                   capture_output=True, timeout=120)
    python = venv / "bin" / "python"
    proc = subprocess.run([uv, "pip", "install", "--python", str(python), *map(str, wheels)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = subprocess.run([str(venv / "bin" / "thelper"), "plugins", "list", "--json"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "geotiff_tiles" in proc.stdout and "dense_cnn" in proc.stdout
    assert "thelper-geo" in proc.stdout
    proc = subprocess.run([str(python), "-c", "import thelper_geo, pathlib; from thelper_geo "
                           "import example_data as e; print(e.path('rmnp-rgb.tif'))"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and str(venv) in proc.stdout, proc.stderr
