"""``thelper infer SESSION rmnp-rgb.tif`` end to end: a session of the treeline example
(trained one epoch by the ``treeline_session`` fixture) predicts the whole RGB raster of
Rocky Mountain National Park through the ``geotiff_tiles`` infer runner; the outputs are
read back with rasterio."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
rasterio = pytest.importorskip("rasterio")

pytestmark = pytest.mark.slow


def run_thelper(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m thelper ARGS`` from the repository root (output captured)."""
    return subprocess.run([sys.executable, "-m", "thelper", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def treeline_infer(treeline_session: Path, rgb_path: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("treeline-infer")
    proc = run_thelper("infer", str(treeline_session), str(rgb_path), "--out", str(out),
                       "--probabilities", "uint8", "--overlap", "8")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


def test_the_class_map_has_the_input_grid_and_nodata(treeline_infer: Path, rgb_path: Path):
    with rasterio.open(rgb_path) as src:
        ref = src.read()
        grid = (src.crs, src.transform, src.width, src.height)
        nodata = np.any(ref == src.nodata, axis=0)  # as geotiff_tiles masks its inputs
    with rasterio.open(treeline_infer / "rmnp-rgb_class.tif") as out:
        assert (out.crs, out.transform, out.width, out.height) == grid
        assert out.nodata == 0 and out.dtypes == ("uint8",)
        assert out.profile["tiled"]
        classes = out.read(1)
    assert nodata.any() and (classes[nodata] == 0).all()
    assert set(np.unique(classes[~nodata])) <= {1, 2} and (classes[~nodata] > 0).all()
    mapping = json.loads((treeline_infer / "config-classes.json").read_text())
    assert mapping == {"below": 1, "above": 2}
    with rasterio.open(treeline_infer / "rmnp-rgb_probs.tif") as probs:
        assert (probs.crs, probs.transform, probs.width, probs.height) == grid
        assert probs.count == 2 and probs.descriptions == ("below", "above")
        p = probs.read(masked=True)
    assert (p.mask[:, nodata]).all() and not p.mask[:, ~nodata].any()
    winner = np.argmax(p.filled(0), axis=0) + 1
    ties = p[0].filled(0) == p[1].filled(0)
    assert (winner[~nodata & ~ties] == classes[~nodata & ~ties]).all()


def test_polygons_fall_inside_the_raster_bounds(treeline_infer: Path, rgb_path: Path):
    from shapely.geometry import box, shape

    with rasterio.open(rgb_path) as src:
        bounds = box(*src.bounds).buffer(1e-9)
        pixel = abs(src.transform.a * src.transform.e)
    with rasterio.open(treeline_infer / "rmnp-rgb_class.tif") as out:
        counts = {v: int((out.read(1) == v).sum()) for v in (1, 2)}
    doc = json.loads((treeline_infer / "rmnp-rgb_class.geojson").read_text())
    assert doc["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::4326"
    area = {1: 0.0, 2: 0.0}
    for feature in doc["features"]:
        geom = shape(feature["geometry"])
        assert bounds.contains(geom)
        area[feature["properties"]["value"]] += geom.area
    for value, n in counts.items():
        assert area[value] == pytest.approx(n * pixel, rel=1e-6)


def test_inference_yaml_records_the_runner(treeline_infer: Path, treeline_session: Path):
    settings = yaml.safe_load((treeline_infer / "inference.yaml").read_text())
    assert settings["input_decoder"]["type"] == "geotiff_tiles"
    assert settings["input_decoder"]["params"]["scale"] == 255
    assert settings["runner"]["probabilities"] == "uint8" and settings["runner"]["overlap"] == 8
    assert sorted(settings["outputs"]) == ["config-classes.json", "rmnp-rgb_class.geojson",
                                           "rmnp-rgb_class.tif", "rmnp-rgb_probs.tif"]


def test_runner_options_are_refused_for_other_sessions(tmp_path: Path):
    """A session without an infer runner (digits) refuses --tile-size: exit 2, one line."""
    from thelper.cli import main

    digits = ROOT / "examples" / "digits-classification"
    root = tmp_path / "runs"
    assert main(["run", str(digits / "config.yaml"), "--save-dir", str(root), "--set",
                 "trainer.epochs=1", "--set", "trainer.device=cpu", "--set",
                 "trainer.progress=false"]) == 0
    proc = run_thelper("infer", str(root / "digits-classification"), str(digits),
                       "--tile-size", "64")
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert "--tile-size: only for sessions whose dataset type has an infer runner" in err
    assert "Traceback" not in err and len(err.splitlines()) == 1


def test_an_export_predicts_the_raster_like_its_session(treeline_infer: Path,
                                                        treeline_session: Path, rgb_path: Path,
                                                        tmp_path: Path):
    """The export records the geotiff_tiles decoder, so it runs the same sliding window."""
    export = tmp_path / "treeline.ts.pt"
    proc = run_thelper("export", str(treeline_session), "--out", str(export))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    proc = run_thelper("infer", str(export), str(rgb_path), "--out", str(tmp_path / "out"),
                       "--overlap", "8", "--no-polygons")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert not (tmp_path / "out" / "rmnp-rgb_class.geojson").exists()
    with rasterio.open(tmp_path / "out" / "rmnp-rgb_class.tif") as a, \
            rasterio.open(treeline_infer / "rmnp-rgb_class.tif") as b:
        assert (a.read() == b.read()).mean() > 0.999  # TorchScript vs eager: rounding only
