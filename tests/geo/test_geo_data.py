"""thelper-geo data side: raster tiles, label rasters, vector labels, sampling, spatial splits,
coordinates, the plugin's registration and the core's group splitter."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from thelper.exceptions import DataError

RGB_NODATA = 255


def build(registry, **params):
    return registry.build("dataset", "geotiff_tiles", params)


def test_example_data_paths(rgb_path, park_path):
    from thelper_geo import example_data

    assert rgb_path.is_file() and park_path.with_suffix(".prj").is_file()
    assert (rgb_path.parent / "LICENSE").read_text().startswith("BSD 3-Clause")
    with pytest.raises(FileNotFoundError, match="rmnp-rgb.tif"):
        example_data.path("nope.tif")


@pytest.mark.parametrize("args", [["plugins", "list"],
                                  ["config", "validate", "examples/geo-elevation/config.yaml"]])
def test_listing_and_validating_never_import_rasterio(args):
    from tests.geo.conftest import ROOT

    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "thelper", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "geotiff_tiles" in proc.stdout or "valid" in proc.stdout
    heavy = [line for line in proc.stderr.splitlines()
             if any(f" {m}" in line.split("|")[-1] for m in ("rasterio", "shapely", "pyproj",
                                                             "pyogrio", "torch"))]
    assert not heavy, heavy[:5]


def test_regression_tiles_keep_crs_transform_and_resampled_dem(geo_registry, rgb_path, dem_path):
    import rasterio
    from rasterio.warp import Resampling, reproject

    ds = build(geo_registry, rasters=[str(rgb_path)], scale=255, target="regression",
               labels={"path": str(dem_path), "resampling": "bilinear"},
               sampling={"size": 32, "stride": 32}, min_valid_fraction=0.9)
    with rasterio.open(rgb_path) as rgb, rasterio.open(dem_path) as dem:
        full = np.full((rgb.height, rgb.width), np.nan, np.float32)
        reproject(rasterio.band(dem, 1), full, dst_transform=rgb.transform, dst_crs=rgb.crs,
                  dst_nodata=np.nan, resampling=Resampling.bilinear)
        image = rgb.read()
        for i in range(len(ds)):
            s = ds[i]
            row, col, h, w = s["window"].tolist()
            t = rgb.transform @ rgb.transform.translation(col, row)
            assert s["transform"].tolist() == pytest.approx([t.a, t.b, t.c, t.d, t.e, t.f])
            assert s["crs"] == rgb.crs.to_wkt()
            x = s["input"].numpy()
            raw = image[:, row:row + h, col:col + w]
            valid = ~np.any(raw == RGB_NODATA, axis=0)
            np.testing.assert_allclose(x[:, valid], raw[:, valid] / 255.0, rtol=1e-6)
            assert (x[:, ~valid] == 0).all()  # nodata -> fill
            target = s["target"][0].numpy()
            assert np.isfinite(target).all()  # regression tiles need every target pixel
            np.testing.assert_allclose(target, full[row:row + h, col:col + w], atol=0.5)
    assert 2281 - 1 <= min(float(ds[i]["target"].min()) for i in range(len(ds)))


def test_label_grid_mismatch_is_one_line_error(geo_registry, rgb_path, dem_path):
    with pytest.raises(DataError) as exc:
        build(geo_registry, rasters=[str(rgb_path)], target="regression",
              labels={"path": str(dem_path)}, sampling={"size": 32})
    msg = str(exc.value)
    assert "\n" not in msg and "rmnp-dem.tif" in msg and "rmnp-rgb.tif" in msg
    assert "labels.resampling" in msg


def test_rasters_on_other_grids_need_align(geo_registry, rgb_path, utm_rgb):
    with pytest.raises(DataError) as exc:
        build(geo_registry, rasters=[str(rgb_path), str(utm_rgb)], sampling={"size": 64})
    assert "rmnp-rgb-utm.tif" in str(exc.value) and "params.align" in str(exc.value)
    ds = build(geo_registry, rasters=[str(rgb_path), str(utm_rgb)], sampling={"size": 64},
               align={"crs": "EPSG:4326", "resampling": "nearest"}, min_valid_fraction=0.9)
    assert {int(t) for t in ds.tiles[:, 0]} == {0, 1}
    second = next(i for i in range(len(ds)) if int(ds.tiles[i, 0]) == 1)
    s = ds[second]
    assert "WGS 84" in s["crs"] and s["input"]["image"].shape == (3, 64, 64)


def test_segmentation_thresholds_and_ignored_nodata(geo_registry, rgb_path, dem_path):
    ds = build(geo_registry, rasters=[str(rgb_path)], scale=255, class_names=["below", "above"],
               labels={"path": str(dem_path), "resampling": "bilinear", "thresholds": [3500]},
               sampling={"size": 32, "stride": 32}, min_valid_fraction=0.5)
    masks = torch.stack([ds[i]["input"]["mask"] for i in range(len(ds))])
    values = set(masks.unique().tolist())
    assert values == {0, 1, 255}  # below, above, no DEM / nodata input
    assert ds.task.type_name == "segmentation" and ds.task.ignore_index == 255
    batch = ds.task.collate_fn()([ds[0], ds[1]])
    assert batch["input"].shape == (2, 3, 32, 32) and batch["mask"].dtype == torch.int64
    assert batch["transform"].shape == (2, 6) and len(batch["crs"]) == 2


def test_vector_polygon_mask_matches_full_rasterization(geo_registry, rgb_path, park_path):
    import rasterio
    from rasterio.features import rasterize

    from thelper_geo.labels import read_vector

    ds = build(geo_registry, rasters=[str(rgb_path)], class_names=["outside", "park"],
               labels={"kind": "vector", "path": str(park_path)},
               sampling={"size": 64, "stride": 64}, min_valid_fraction=0.0)
    geoms, _, _ = read_vector(str(park_path))
    with rasterio.open(rgb_path) as src:
        full = rasterize([(g, 1) for g in geoms], out_shape=(src.height, src.width),
                         transform=src.transform)
    for i in range(len(ds)):
        s = ds[i]
        row, col, h, w = s["window"].tolist()
        mask = s["input"]["mask"].numpy().copy()
        expected = full[row:row + h, col:col + w].astype(np.int64)
        known = mask != 255
        np.testing.assert_array_equal(mask[known], expected[known])
    assert 0.2 < full.mean() < 0.35  # the park covers ~28 % of the RGB extent


def test_vector_points_reprojected_to_a_utm_raster(geo_registry, utm_rgb, glaciers_path,
                                                   rgb_path):
    params = dict(scale=255, target="classification", class_names=["none", "glacier"],
                  sampling={"size": 32, "stride": 32}, min_valid_fraction=0.5)
    utm = build(geo_registry, rasters=[str(utm_rgb)], **params,
                labels={"kind": "vector", "path": str(glaciers_path), "buffer": 200.0})
    geo = build(geo_registry, rasters=[str(rgb_path)], **params,
                labels={"kind": "vector", "path": str(glaciers_path), "buffer": 0.002})
    assert "UTM zone 13N" in utm[0]["crs"]
    n_utm, n_geo = sum(utm.targets), sum(geo.targets)
    assert n_utm > 5 and n_geo > 5
    assert abs(n_utm - n_geo) <= 0.5 * max(n_utm, n_geo)  # same glaciers, other grid


def test_random_tiles_in_roi_are_seeded_and_inside(geo_registry, rgb_path):
    from thelper_geo.coords import window_bounds

    roi = {"bounds": [-105.9, 40.2, -105.6, 40.5]}
    params = dict(rasters=[str(rgb_path)], scale=255, min_valid_fraction=0.8,
                  sampling={"mode": "random", "size": 24, "count": 50, "roi": roi, "seed": 3})
    a, b = build(geo_registry, **params), build(geo_registry, **params)
    np.testing.assert_array_equal(a.tiles, b.tiles)
    assert len(a) == 50
    for r, row, col in a.tiles.tolist():
        x0, y0, x1, y1 = window_bounds(a.grids[r].transform, row, col, 24, 24)
        assert x0 >= -105.9 - 1e-9 and x1 <= -105.6 + 1e-9
        assert y0 >= 40.2 - 1e-9 and y1 <= 40.5 + 1e-9


def _overlap(w1, w2) -> bool:
    r1, c1, h1, ww1 = w1
    r2, c2, h2, ww2 = w2
    return r1 < r2 + h2 and r2 < r1 + h1 and c1 < c2 + ww2 and c2 < c1 + ww1


def test_spatial_split_never_overlaps_across_splits(geo_registry, rgb_path):
    from thelper.data.splits import group_record, split_dataset

    ds = build(geo_registry, rasters=[str(rgb_path)], scale=255, sampling={"size": 32,
               "stride": 8}, min_valid_fraction=0.5,
               spatial_split={"block_size": 96, "buffer": 4,
                              "regions": {"test": {"east_of": -105.5}}})
    split = split_dataset(ds, {"train": 0.7, "valid": 0.3}, seed=0)
    assert set(split) == {"train", "valid", "test"} and all(split.values())
    windows = {s: [ds.tiles[i, 1:].tolist() + [32, 32] for i in idx] for s, idx in split.items()}
    for a in windows:
        for b in windows:
            if a < b:
                assert not any(_overlap(u, v) for u in windows[a] for v in windows[b]), (a, b)
    for i in split["test"]:  # every test tile lies east of the line
        t = ds.tile_grid(i).transform
        assert t.c >= -105.5
    record = group_record(ds, split)
    assert record["groups"]["test"] == ["r0:region:test"]
    assert record["fixed"] == {"r0:region:test": "test"}
    assert "-105.5" in record["regions"]["_regions"]["0:test"]
    assert split == split_dataset(ds, {"train": 0.7, "valid": 0.3}, seed=0)


def test_core_group_splitter_protocol():
    from thelper.data.splits import split_dataset, split_groups, split_indices

    groups = [f"g{i // 10}" for i in range(200)]
    out = split_groups(groups, {"train": 0.6, "valid": 0.2, "test": 0.2}, seed=1)
    seen = {}
    for s, idx in out.items():
        for i in idx:
            assert seen.setdefault(groups[i], s) == s  # a group never straddles splits
    assert sorted(i for v in out.values() for i in v) == list(range(200))
    assert [len(v) for v in out.values()] == [120, 40, 40]
    fixed = split_groups(groups, {"train": 0.5}, seed=1, fixed={"g0": "test"})
    assert fixed["test"] == list(range(10)) and len(fixed["train"]) in (90, 100)  # whole groups

    class Plain:  # no groups: the index split, unchanged
        task = None

        def __len__(self):
            return 50

    assert split_dataset(Plain(), {"train": 0.8}, 0) == split_indices(50, {"train": 0.8}, 0)

    class Bad(Plain):
        groups = ["a"] * 3

    with pytest.raises(DataError, match="one per sample"):
        split_dataset(Bad(), {"train": 0.8}, 0)


def test_coordinate_helpers(rgb_path):
    import rasterio
    from shapely import Point

    from thelper_geo.coords import (
        geo_to_pixel,
        pixel_to_geo,
        raster_extent,
        reproject_coords,
        reproject_geometries,
    )

    with rasterio.open(rgb_path) as src:
        xs, ys = pixel_to_geo(src.transform, [0, 10], [0, 20])
        assert xs[0] == pytest.approx(src.bounds.left + 0.0015 / 2)
        rows, cols = geo_to_pixel(src.transform, xs, ys)
        assert rows.tolist() == [0, 10] and cols.tolist() == [0, 20]
        (x0, y0, x1, y1), wkt = raster_extent(str(rgb_path))
        assert (x0, y1) == pytest.approx((src.bounds.left, src.bounds.top)) and "WGS 84" in wkt
    e, n = reproject_coords([-105.0], [40.0], "EPSG:4326", "EPSG:32613")
    assert e[0] == pytest.approx(500000.0, abs=1e-3)  # -105° is zone 13's central meridian
    assert n[0] == pytest.approx(4427757.2, abs=1.0)
    p = reproject_geometries(Point(-105.0, 40.0), "EPSG:4326", "EPSG:32613")
    assert p.x == pytest.approx(e[0])


def test_r2_metric_and_dense_cnn():
    from sklearn.metrics import r2_score

    from thelper.tasks import Regression
    from thelper_geo.metrics import R2
    from thelper_geo.models import dense_cnn

    rng = np.random.default_rng(0)
    y = rng.normal(3000, 300, (8, 1, 5, 5))
    p = y + rng.normal(0, 100, y.shape)
    m = R2()
    m.update(torch.tensor(p[:4]), torch.tensor(y[:4]))
    m.update(torch.tensor(p[4:]), torch.tensor(y[4:]))
    assert m.compute() == pytest.approx(r2_score(y.ravel(), p.ravel()), abs=1e-9)
    net = dense_cnn(task=Regression(target_shape=(1, 16, 16)), in_channels=3)
    assert net(torch.zeros(2, 3, 16, 16)).shape == (2, 1, 16, 16)
