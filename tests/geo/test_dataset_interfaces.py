"""The BigEarthNet and Agriculture-Vision interfaces on miniature replicas of their on-disk
layouts, written by the tests (rasterio GeoTIFFs, PIL JPEG/PNG); nothing is downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.geo.conftest import run_thelper
from thelper.exceptions import DataError

BANDS_10M = ("B02", "B03", "B04", "B08")
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")
BANDS_60M = ("B01", "B09")
TILES = ("S2A_MSIL2A_20170613T101031", "S2B_MSIL2A_20180204T094161",
         "S2A_MSIL2A_20171208T093351")
# 43-class labels per patch (cycled): water, forest, mixed with a label the 19-class set drops
PATCH_LABELS = (["Water bodies"], ["Coniferous forest", "Pastures"],
                ["Continuous urban fabric", "Rice fields", "Bare rock"],
                ["Sea and ocean", "Coniferous forest"])


def _write_band(path: Path, data: np.ndarray, x0: float, y0: float, res: float) -> None:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0],
                       count=1, dtype="uint16", crs="EPSG:32632",
                       transform=from_origin(x0, y0, res, res)) as dst:
        dst.write(data, 1)


def write_bigearthnet(root: Path, seed: int = 0) -> list[str]:
    """12 patches (3 tile acquisitions × 4) in BigEarthNet-S2 v1.0's layout: 12 uint16 band
    files per patch at 10/20/60 m (120², 60², 20² px over the same 1.2 km square, UTM 32N)
    and ``<patch>_labels_metadata.json``. Water patches are dark in the NIR (B08)."""
    rng = np.random.default_rng(seed)
    names = []
    for t, tile in enumerate(TILES):
        for k in range(4):
            row, col = t, k
            name = f"{tile}_{row}_{col}"
            folder = root / name
            folder.mkdir(parents=True)
            x0, y0 = 500_000.0 + 1200 * col, 5_100_000.0 - 1200 * row
            labels = PATCH_LABELS[k]
            water = any(x in ("Water bodies", "Sea and ocean") for x in labels)
            for bands, res in ((BANDS_10M, 10), (BANDS_20M, 20), (BANDS_60M, 60)):
                n = 1200 // res
                for band in bands:
                    level = 300 if water and band in ("B08", "B8A") else 2500
                    data = (level + rng.integers(0, 400, (n, n))).astype(np.uint16)
                    _write_band(folder / f"{name}_{band}.tif", data, x0, y0, res)
            meta = {"labels": labels, "coordinates": {"ulx": x0, "uly": y0, "lrx": x0 + 1200,
                                                      "lry": y0 - 1200},
                    "projection": "EPSG:32632", "tile_source": tile,
                    "acquisition_date": "2017-06-13 10:10:31"}
            (folder / f"{name}_labels_metadata.json").write_text(json.dumps(meta))
            names.append(name)
    return names


@pytest.fixture(scope="module")
def ben_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ben") / "BigEarthNet-v1.0"
    write_bigearthnet(root)
    return root


# ------------------------------------------------------------------------- BigEarthNet
def test_bigearthnet_reads_every_band_onto_the_10m_grid(ben_root):
    import rasterio

    from thelper_geo.bigearthnet import LABELS_19, BigEarthNet

    ds = BigEarthNet(str(ben_root), resampling="nearest", scale=1.0)
    assert len(ds) == 12 and ds.task.type_name == "multilabel_classification"
    assert ds.task.class_names == list(LABELS_19)
    sample = ds[2]
    name = sample["patch"]
    assert sample["input"].shape == (12, 120, 120) and sample["input"].dtype == torch.float32
    with rasterio.open(ben_root / name / f"{name}_B01.tif") as b01, \
            rasterio.open(ben_root / name / f"{name}_B8A.tif") as b8a, \
            rasterio.open(ben_root / name / f"{name}_B02.tif") as b02:
        # nearest onto 120x120: each 60 m pixel becomes 6x6 pixels, each 20 m pixel 2x2
        assert np.array_equal(sample["input"][0].numpy(),
                              np.kron(b01.read(1), np.ones((6, 6))).astype(np.float32))
        assert np.array_equal(sample["input"][8].numpy(),
                              np.kron(b8a.read(1), np.ones((2, 2))).astype(np.float32))
        assert np.array_equal(sample["input"][1].numpy(), b02.read(1).astype(np.float32))
        t = b02.transform
        assert sample["transform"].tolist() == [t.a, t.b, t.c, t.d, t.e, t.f]
        assert rasterio.crs.CRS.from_wkt(sample["crs"]) == b02.crs


def test_bigearthnet_labels_in_both_nomenclatures(ben_root):
    from thelper_geo.bigearthnet import LABELS_19, LABELS_43, BigEarthNet

    ds19 = BigEarthNet(str(ben_root), bands=["B04", "B08"])
    ds43 = BigEarthNet(str(ben_root), bands=["B04", "B08"], nomenclature=43)
    i = [p.endswith("_0_2") for p in ds19.patches].index(True)  # urban, rice, bare rock
    on19 = [LABELS_19[j] for j in np.flatnonzero(ds19.labels[i].numpy())]
    on43 = [LABELS_43[j] for j in np.flatnonzero(ds43.labels[i].numpy())]
    assert on19 == ["Urban fabric", "Arable land"]  # bare rock has no 19-class counterpart
    assert on43 == ["Continuous urban fabric", "Rice fields", "Bare rock"]
    assert ds19[i]["input"].shape == (2, 120, 120)
    assert ds19[i]["label"].dtype == torch.float32
    # bilinear upsampling of the 20 m/60 m bands stays within the band's range
    x = BigEarthNet(str(ben_root), bands=["B09"], scale=1.0)[0]["input"]
    assert 2500 <= float(x.min()) and float(x.max()) <= 2900


def test_bigearthnet_lists_groups_and_errors(ben_root, tmp_path):
    from thelper_geo.bigearthnet import BigEarthNet

    names = sorted(p.name for p in ben_root.iterdir())
    listed = tmp_path / "train.csv"
    listed.write_text("\n".join(names[:6]) + "\n")
    cloudy = tmp_path / "patches_with_cloud_and_shadow.csv"
    cloudy.write_text(names[0] + "\n")
    ds = BigEarthNet(str(ben_root), patches=str(listed), exclude=[str(cloudy)])
    assert ds.patches == names[1:6]
    assert len(set(ds.groups())) == 2 and all(g in TILES for g in ds.groups())
    assert BigEarthNet(str(ben_root), group_by_tile=False).groups() is None
    with pytest.raises(DataError, match="is not a folder"):
        BigEarthNet(str(tmp_path / "nope"))
    listed.write_text("S2A_MSIL2A_20990101T000000_9_9\n")
    with pytest.raises(DataError, match="listed in .* is not a folder"):
        BigEarthNet(str(ben_root), patches=str(listed))
    # FIFOs (a list or a label file) are refused at once instead of blocking the reader
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"bigearthnet patches list.*list\.csv' is a FIFO"):
        BigEarthNet(str(ben_root), patches=str(fifo))
    with pytest.raises(DataError, match=r"bigearthnet exclude list.*list\.csv' is a FIFO"):
        BigEarthNet(str(ben_root), exclude=[str(fifo)])
    label = ben_root / names[0] / f"{names[0]}_labels_metadata.json"
    saved = label.read_bytes()
    label.unlink()
    os.mkfifo(label)
    try:
        assert names[0] not in BigEarthNet(str(ben_root)).patches  # found: not a file
        listed.write_text("\n".join(names[:2]) + "\n")
        with pytest.raises(DataError, match=r"labels_metadata\.json' is unreadable.*FIFO"):
            BigEarthNet(str(ben_root), patches=str(listed))
    finally:
        label.unlink()
        label.write_bytes(saved)


def test_bigearthnet_refuses_bad_labels_and_misplaced_bands(tmp_path):
    from thelper_geo.bigearthnet import BigEarthNet

    root = tmp_path / "ben"
    names = write_bigearthnet(root, seed=1)
    bad = root / names[0] / f"{names[0]}_labels_metadata.json"
    bad.write_text(json.dumps({"labels": ["Glaciers and perpetual snow"]}))
    with pytest.raises(DataError, match="not one of BigEarthNet's 43"):
        BigEarthNet(str(root))
    bad.write_text(json.dumps({"labels": ["Water bodies"]}))
    name = names[1]
    # a 20 m band shifted by one pixel: it no longer covers the patch's square
    _write_band(root / name / f"{name}_B05.tif", np.zeros((60, 60), np.uint16),
                500_000.0 + 1200 + 20, 5_100_000.0, 20)
    ds = BigEarthNet(str(root))
    with pytest.raises(DataError, match="B05.tif.*must cover the same"):
        ds[1]
    (root / name / f"{name}_B11.tif").unlink()
    with pytest.raises(DataError, match="B05.tif"):  # bands are read in order
        ds[1]
    with pytest.raises(DataError, match="B11.tif' cannot be opened: .*No such file"):
        BigEarthNet(str(root), bands=["B11"])[1]


def _session(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_thelper("run", str(path), "--save-dir", str(tmp_path / "sessions"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / "sessions" / cfg["name"]


def test_thelper_run_on_bigearthnet_replica(ben_root, tmp_path):
    cfg = {
        "name": "ben-tiny",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"ben": {"type": "bigearthnet",
                             "params": {"root": str(ben_root), "bands": ["B04", "B08", "B11"]}}},
        "loaders": {"batch_size": 4, "train_split": {"ben": 0.34},
                    "valid_split": {"ben": 0.33}, "test_split": {"ben": 0.33}},
        "model": {"type": "simple_cnn", "params": {"in_channels": 3, "channels": [8],
                                                   "hidden": 16}},
        "trainer": {"epochs": 1, "device": "cpu", "progress": False, "monitor": "map",
                    "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                    "metrics": {"map": {"type": "multilabel_map"},
                                "f1": {"type": "multilabel_f1"}}},
    }
    session = _session(tmp_path, cfg)
    splits = json.loads((session / "logs" / "splits.json").read_text())
    record = json.dumps(splits)
    groups = {s: set(g) for s, g in splits["groups"]["ben"]["groups"].items()}
    assert set().union(*groups.values()) == set(TILES), record
    assert not groups["train"] & (groups.get("valid", set()) | groups.get("test", set()))
    run = json.loads((session / "run.json").read_text())
    assert run["status"] == "completed", run.get("status")
    assert "map" in json.dumps(run["metrics"])


# -------------------------------------------------------------------- Agriculture-Vision
AV_CLASSES = ("double_plant", "waterway", "weed_cluster")


def write_agriculture_vision(root: Path, split: str = "train", labels: bool = True,
                             size: int = 64) -> list[str]:
    """6 field crops (3 field ids × 2 overlapping crops) in Agriculture-Vision's layout:
    RGB and NIR JPEGs, one PNG per class under ``labels/``, ``boundaries/`` (the field: all
    but the 8 left columns) and ``masks/`` (valid: all but the 8 top rows). Waterways are
    dark in the NIR, weeds bright green."""
    from PIL import Image

    base = root / split
    for sub in ("images/rgb", "images/nir", "boundaries", "masks",
                *(f"labels/{c}" for c in AV_CLASSES if labels)):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    names = []
    for f, field in enumerate(("1AD76MIZT", "2B8KQXN4P", "9ZTQ3LMNR")):
        for k in range(2):
            x1, y1 = 1000 + 256 * k, 4000 + 100 * f
            name = f"{field}_{x1}-{y1}-{x1 + 512}-{y1 + 512}"
            rgb = rng.integers(90, 130, (size, size, 3)).astype(np.uint8)
            nir = rng.integers(150, 200, (size, size)).astype(np.uint8)
            classes = {c: np.zeros((size, size), np.uint8) for c in AV_CLASSES}
            classes["waterway"][20:40, :] = 255
            nir[20:40, :] = 30
            classes["weed_cluster"][30:50, 30:50] = 255  # overlaps the waterway on 30:40
            rgb[30:50, 30:50, 1] = 220
            classes["double_plant"][50:60, 10 + 10 * f:20 + 10 * f] = 255
            Image.fromarray(rgb).save(base / "images/rgb" / f"{name}.jpg", quality=95)
            Image.fromarray(nir).save(base / "images/nir" / f"{name}.jpg", quality=95)
            boundary = np.full((size, size), 255, np.uint8)
            boundary[:, :8] = 0
            valid = np.full((size, size), 255, np.uint8)
            valid[:8, :] = 0
            Image.fromarray(boundary).save(base / "boundaries" / f"{name}.png")
            Image.fromarray(valid).save(base / "masks" / f"{name}.png")
            if labels:
                for c, layer in classes.items():
                    Image.fromarray(layer).save(base / "labels" / c / f"{name}.png")
            names.append(name)
    return names


@pytest.fixture(scope="module")
def av_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("agvision") / "Agriculture-Vision"
    write_agriculture_vision(root, "train")
    write_agriculture_vision(root, "test", labels=False)
    return root


def test_agriculture_vision_masks_priorities_and_ignored_pixels(av_root):
    from PIL import Image

    from thelper_geo.agrivision import IGNORE_INDEX, AgricultureVision

    ds = AgricultureVision(str(av_root))
    assert ds.task.class_names == ["background", *AV_CLASSES]
    assert ds.task.ignore_index == IGNORE_INDEX
    sample = ds[0]
    image, mask = sample["input"]["image"], sample["input"]["mask"]
    assert image.shape == (4, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and mask.dtype == torch.int64
    m = mask.numpy()
    assert (m[:8, :] == IGNORE_INDEX).all() and (m[:, :8] == IGNORE_INDEX).all()
    assert (m[20:40, 8:] == 2).all()  # waterway, and it wins over weeds where they overlap
    assert (m[40:50, 30:50] == 3).all()  # weeds only
    assert (m[50:60, 10:20] == 1).all() and (m[10:20, 50:60] == 0).all()
    nir = np.asarray(Image.open(av_root / "train/images/nir" / f"{sample['field']}.jpg"))
    assert np.allclose(image[3].numpy(), nir / 255.0)
    # priority follows the listed order: weeds first now
    weeds_first = AgricultureVision(str(av_root), classes=["weed_cluster", "waterway"],
                                    nir=False)
    m2 = weeds_first[0]["input"]["mask"].numpy()
    assert weeds_first[0]["input"]["image"].shape[0] == 3
    assert (m2[30:40, 30:50] == 1).all() and (m2[20:30, 8:] == 2).all()
    assert len(set(ds.groups())) == 3
    # the test split has no labels: background inside the field, ignored outside
    test = AgricultureVision(str(av_root), split="test", classes=list(AV_CLASSES))
    tm = test[0]["input"]["mask"].numpy()
    assert set(np.unique(tm)) == {0, IGNORE_INDEX}


def test_agriculture_vision_errors(av_root, tmp_path):
    from thelper_geo.agrivision import AgricultureVision

    with pytest.raises(DataError, match="images/rgb' is not a folder"):
        AgricultureVision(str(av_root), split="val")
    with pytest.raises(DataError, match="no label folder 'cloud_shadow'"):
        AgricultureVision(str(av_root), classes=["cloud_shadow"])
    root = tmp_path / "av"
    names = write_agriculture_vision(root)
    (root / "train/labels/waterway" / f"{names[1]}.png").unlink()
    with pytest.raises(DataError, match=f"waterway/{names[1]}.png' cannot be read"):
        AgricultureVision(str(root))[1]


def test_thelper_run_on_agriculture_vision_replica(av_root, tmp_path):
    cfg = {
        "name": "agvision-tiny",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"fields": {"type": "agriculture_vision", "params": {"root": str(av_root)}}},
        "loaders": {"batch_size": 2, "train_split": {"fields": 0.34},
                    "valid_split": {"fields": 0.33}, "test_split": {"fields": 0.33},
                    "train_augments": [{"type": "random_horizontal_flip"}]},
        "model": {"type": "unet", "params": {"in_channels": 4, "base_channels": 4,
                                             "depth": 2}},
        "trainer": {"epochs": 1, "device": "cpu", "progress": False, "monitor": "miou",
                    "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                    "metrics": {"miou": {"type": "miou"}}},
    }
    session = _session(tmp_path, cfg)
    splits = json.loads((session / "logs" / "splits.json").read_text())
    groups = {s: set(g) for s, g in splits["groups"]["fields"]["groups"].items()}
    assert len(groups) == 3 and set().union(*groups.values()) == {
        "1AD76MIZT", "2B8KQXN4P", "9ZTQ3LMNR"}  # one field per split: no overlapping crops
    run = json.loads((session / "run.json").read_text())
    assert run["status"] == "completed", run.get("status")


def test_interfaces_validate_without_importing_rasterio(tmp_path):
    """``thelper config validate`` on an interface config imports neither rasterio nor
    torch, and a bad band name is a one-line config error (exit 2)."""
    import subprocess
    import sys

    cfg = {"name": "v", "datasets": {"ben": {"type": "bigearthnet",
                                             "params": {"root": str(tmp_path),
                                                        "bands": ["B10"]}}},
           "loaders": {"batch_size": 4, "train_split": {"ben": 1.0}},
           "model": {"type": "simple_cnn"},
           "trainer": {"epochs": 1, "optimization": {"optimizer": {"type": "adam"}}}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = run_thelper("config", "validate", str(path))
    assert proc.returncode == 2 and "unknown band 'B10'" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    cfg["datasets"]["ben"]["params"]["bands"] = ["B02"]
    path.write_text(yaml.safe_dump(cfg))
    code = ("import sys; from thelper.cli import main; rc = main(['config', 'validate', "
            f"{str(path)!r}]); print('HEAVY', sorted(m for m in ('rasterio', 'torch', 'PIL') "
            "if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "HEAVY []" in proc.stdout
