"""`thelper split` archives, `thelper export` (verified) and `thelper infer`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from thelper.cli import main
from thelper.config import document_from_dict
from thelper.exceptions import DataError
from thelper.runner import run_session
from thelper.tools.export import ExportError, export_model
from thelper.tools.loading import session_data


@pytest.fixture(scope="module")
def digits_pngs(tmp_path_factory):
    """scikit-learn digits as 8-bit PNG class folders (real images, written by the test)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path_factory.mktemp("pngs") / "digits"
    for i in range(400):
        folder = root / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        img = (d.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(np.kron(img, np.ones((2, 2), dtype=np.uint8))).save(
            folder / f"{i:04d}.png")
    return root


def png_config(root: Path) -> dict:
    return {
        "name": "png-digits",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"pngs": {"type": "image_folder", "params": {"root": str(root),
                                                                  "mode": "L"}}},
        "loaders": {"batch_size": 32, "train_split": {"pngs": 0.7}, "valid_split": {"pngs": 0.15},
                    "test_split": {"pngs": 0.15}, "base_transforms": [{"type": "to_float"}]},
        "model": {"type": "mlp", "params": {"in_features": 256, "hidden": [64]}},
        "trainer": {"epochs": 8, "device": "cpu", "progress": False, "monitor": "accuracy",
                    "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                    "metrics": {"accuracy": {"type": "accuracy"}}},
    }


@pytest.fixture(scope="module")
def png_session(tmp_path_factory, digits_pngs):
    save = tmp_path_factory.mktemp("png-runs")
    return run_session(document_from_dict(png_config(digits_pngs)), save)


@pytest.mark.parametrize("encode", ["none", "png"])
def test_split_archive_reproduces_every_split(tmp_path, digits_pngs, write_config, encode):
    cfg = png_config(digits_pngs)
    path = write_config(cfg)
    out = tmp_path / "digits.h5"
    assert main(["split", str(path), "--out", str(out), "--encode", encode,
                 "--key-compression", "label=none"]) == 0
    assert not out.with_name(out.name + ".partial").exists()
    with h5py.File(out) as f:
        assert bool(f.attrs["complete"])
        assert json.loads(f.attrs["class_names"]) == [str(i) for i in range(10)]
        assert json.loads(f.attrs["seeds"])["split"] == 0
        assert "thelper_version" in f.attrs
    # a session on the archive sees exactly the samples of the session that wrote it
    original = session_data({"config": cfg, "seeds": cfg["seeds"]})
    archived_cfg = dict(cfg, name="from-archive")
    archived_cfg["datasets"] = {s: {"type": "hdf5", "params": {"path": str(out), "split": s}}
                                for s in ("train", "valid", "test")}
    archived_cfg["loaders"] = dict(cfg["loaders"], train_split={"train": 1.0},
                                   valid_split={"valid": 1.0}, test_split={"test": 1.0})
    archived = session_data({"config": archived_cfg, "seeds": cfg["seeds"]})
    for split in ("train", "valid", "test"):
        a, b = original.splits[split], archived.splits[split]
        assert len(a) == len(b) > 0
        for i in range(len(a)):
            sa, sb = a[i], b[i]
            assert torch.equal(sa["input"], sb["input"]), (split, i)
            assert int(sa["label"]) == int(sb["label"]) and sa["path"] == sb["path"]


def test_interrupted_archive_write_leaves_nothing(tmp_path, mlp_config, monkeypatch):
    import thelper.tools.archive as archive

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    data = session_data({"config": mlp_config, "seeds": mlp_config["seeds"]})
    monkeypatch.setattr(archive, "_write_split", boom)
    out = tmp_path / "x.h5"
    with pytest.raises(KeyboardInterrupt):
        archive.write_archive(data, out)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    with pytest.raises(DataError, match="does not exist"):
        archive.Hdf5Dataset(str(out))


@pytest.mark.parametrize("fmt", ["torchscript", "exported-program", "onnx"])
def test_export_is_verified_and_carries_metadata(png_session, tmp_path, fmt):
    out = tmp_path / f"model.{fmt}"
    result = export_model(png_session.session_dir, fmt, out)
    assert result.max_abs_diff <= 1e-4 and result.path.is_file()
    meta = torch.load(result.meta_path, weights_only=True)
    assert meta["task"]["params"]["class_names"] == [str(i) for i in range(10)]
    assert meta["input_shape"] == [1, 16, 16] and meta["format"] == fmt
    assert meta["base_transforms"] == [{"type": "to_float", "params": {}}] or \
        meta["base_transforms"][0]["type"] == "to_float"


def test_export_fails_beyond_tolerance(png_session, tmp_path):
    with pytest.raises(ExportError, match="tolerance"):
        export_model(png_session.session_dir, "onnx", tmp_path / "m.onnx", tolerance=-1.0)


def test_export_cli_with_input_shape(png_session, tmp_path, capsys):
    assert main(["export", str(png_session.session_dir), "--format", "torchscript",
                 "--out", str(tmp_path / "m.ts.pt"), "--input-shape", "1,16,16"]) == 0
    assert "max |difference|" in capsys.readouterr().out


def test_infer_on_images_and_split(png_session, digits_pngs, tmp_path):
    out = tmp_path / "pred"
    assert main(["infer", str(png_session.session_dir), str(digits_pngs / "3"),
                 str(digits_pngs / "7"), "--out", str(out), "--top-k", "2"]) == 0
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    n = len(list((digits_pngs / "3").glob("*.png"))) + len(list((digits_pngs / "7").glob("*.png")))
    assert len(rows) == n
    assert set(rows[0]) >= {"input", "prediction", "score", "top1", "top2", "top2_score"}
    correct = sum(r["prediction"] == Path(r["input"]).parent.name for r in rows)
    assert correct / n > 0.7  # 8 short epochs on 280 images
    assert yaml.safe_load((out / "inference.yaml").read_text())["top_k"] == 2
    assert yaml.safe_load((out / "training-config.yaml").read_text())["name"] == "png-digits"
    # the exported model gives the same predictions
    export_model(png_session.session_dir, "onnx", tmp_path / "m.onnx")
    out2 = tmp_path / "pred2"
    assert main(["infer", str(tmp_path / "m.onnx"), str(digits_pngs / "3"),
                 str(digits_pngs / "7"), "--out", str(out2), "--top-k", "2"]) == 0
    rows2 = list(csv.DictReader((out2 / "predictions.csv").open()))
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in rows2]
    out3 = tmp_path / "pred3"
    assert main(["infer", str(png_session.session_dir), "--split", "test", "--out",
                 str(out3)]) == 0
    assert len(list(csv.DictReader((out3 / "predictions.csv").open()))) == 60


def test_infer_missing_input_is_a_clear_error(png_session, tmp_path, capsys):
    assert main(["infer", str(png_session.session_dir), str(tmp_path / "nope.png"),
                 "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------ issue 14: broken tool paths
def test_default_lz4_archive_trains_in_a_fresh_process(tmp_path, mlp_config, write_config):
    """`thelper split` compresses with LZ4 by default; a process that only reads the archive
    (here `thelper run` in a subprocess: this test process already registered the filter
    while writing) must register hdf5plugin's filter itself."""
    import subprocess
    import sys

    out = tmp_path / "digits.h5"
    assert main(["split", str(write_config(mlp_config)), "--out", str(out)]) == 0
    with h5py.File(out) as f:
        assert f["train/input"].id.get_create_plist().get_filter(0)[0] == 32004  # LZ4
    cfg = dict(mlp_config, name="lz4-archive")
    cfg["datasets"] = {s: {"type": "hdf5", "params": {"path": str(out), "split": s}}
                       for s in ("train", "valid")}
    cfg["loaders"] = dict(cfg["loaders"], train_split={"train": 1.0},
                          valid_split={"valid": 1.0}, test_split={})
    cfg["trainer"] = dict(cfg["trainer"], epochs=1, test_metrics={})
    path = write_config(cfg, "archive.yaml")
    proc = subprocess.run([sys.executable, "-m", "thelper", "run", str(path), "--save-dir",
                           str(tmp_path / "runs")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "runs" / "lz4-archive" / "checkpoints" / "ckpt.best.pt").is_file()


def test_every_format_exported_to_the_default_folder_infers_the_same(png_session, digits_pngs,
                                                                     tmp_path):
    session = png_session.session_dir
    images = [str(digits_pngs / "3"), str(digits_pngs / "7")]
    files = {"torchscript": "model.ts.pt", "onnx": "model.onnx",
             "exported-program": "model.pt2"}
    for fmt in files:  # one after the other into SESSION/export: none overwrites another
        assert main(["export", str(session), "--format", fmt]) == 0
    export = session / "export"
    assert not (export / "model.onnx.data").exists()  # small weights stay inside model.onnx
    assert main(["infer", str(session), *images, "--out", str(tmp_path / "ckpt")]) == 0
    expected = list(csv.DictReader((tmp_path / "ckpt" / "predictions.csv").open()))
    for fmt, name in files.items():
        meta = json.loads((export / f"{name}.meta.json").read_text())
        assert meta["format"] == fmt
        assert torch.load(export / f"{name}.meta.pt", weights_only=True)["format"] == fmt
        out = tmp_path / fmt
        assert main(["infer", str(export / name), *images, "--out", str(out)]) == 0, fmt
        rows = list(csv.DictReader((out / "predictions.csv").open()))
        assert [r["prediction"] for r in rows] == [r["prediction"] for r in expected], fmt
    # any file name works: the export is recognised by its own <file>.meta.pt
    custom = tmp_path / "digits.torchscript"
    export_model(session, "torchscript", custom)
    assert main(["infer", str(custom), *images, "--out", str(tmp_path / "custom")]) == 0
    rows = list(csv.DictReader((tmp_path / "custom" / "predictions.csv").open()))
    assert [r["prediction"] for r in rows] == [r["prediction"] for r in expected]


def test_metadata_of_another_format_is_refused_clearly(png_session, tmp_path):
    """A `<stem>.meta.pt` of an earlier version describing another format is not applied."""
    import shutil

    from thelper.tools.export import load_exported

    result = export_model(png_session.session_dir, "onnx", tmp_path / "model.onnx")
    _, meta = load_exported(result.path)
    assert meta["format"] == "onnx"
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(result.path, legacy / "model.onnx")
    torch.save(dict(meta, format="exported-program"), legacy / "model.meta.pt")
    with pytest.raises(ExportError, match="describes a exported-program export.*--format onnx"):
        load_exported(legacy / "model.onnx")
    torch.save(meta, legacy / "model.meta.pt")  # an earlier version's metadata still reads
    run, _ = load_exported(legacy / "model.onnx")
    assert run(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def _squares_detection(root: Path) -> dict:
    """Four 64x64 grey images with one white square each, as a COCO detection dataset."""
    from PIL import Image

    (root / "images").mkdir(parents=True)
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": 1, "name": "square"}]}
    for i, (x, y) in enumerate([(4, 8), (30, 12), (10, 36), (36, 36)]):
        img = np.zeros((64, 64), dtype=np.uint8)
        img[y:y + 20, x:x + 20] = 255
        Image.fromarray(img).save(root / "images" / f"s{i}.png")
        coco["images"].append({"id": i + 1, "file_name": f"s{i}.png"})
        coco["annotations"].append({"id": i + 1, "image_id": i + 1, "category_id": 1,
                                    "bbox": [x, y, 20, 20]})
    (root / "annotations.json").write_text(json.dumps(coco))
    return {
        "name": "squares",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"sq": {"type": "coco_detection", "params": {
            "images": str(root / "images"), "annotations": str(root / "annotations.json"),
            "mode": "L"}}},
        "loaders": {"batch_size": 2, "train_split": {"sq": 0.5}, "valid_split": {"sq": 0.5},
                    "base_transforms": [{"type": "to_float"}]},
        "model": {"type": "small_fasterrcnn",
                  "params": {"in_channels": 1, "min_size": 64, "max_size": 64}},
        "trainer": {"epochs": 1, "device": "cpu", "progress": False,
                    "optimization": {"optimizer": {"type": "adam"}}},
    }


def test_detection_export_is_refused_with_a_reason(tmp_path, capsys):
    pytest.importorskip("thelper_vision")
    cfg = _squares_detection(tmp_path / "data")
    session = run_session(document_from_dict(cfg), tmp_path / "runs").session_dir
    capsys.readouterr()
    for extra in ([], ["--input-shape", "1,64,64"]):
        assert main(["export", str(session), "--format", "onnx", *extra]) == 2
        err = capsys.readouterr().err
        assert "cannot export the detection model 'small_fasterrcnn'" in err
        assert "thelper infer" in err and len(err.strip().splitlines()) == 1
    assert not (session / "export").exists()


@pytest.mark.parametrize(("args", "names"), [
    (["--compression", "zstd"], ["--compression", "'zstd'", "none, gzip, lz4"]),
    (["--encode", "bogus"], ["--encode", "'bogus'", "none, png, jpeg"]),
    (["--key-compression", "label=zstd"], ["--key-compression", "zstd", "none, gzip, lz4"]),
    (["--key-compression", "label"], ["--key-compression", "KEY=CODEC"]),
])
def test_split_rejects_unknown_options_as_usage_errors(tmp_path, mlp_config, write_config,
                                                       capsys, args, names):
    out = tmp_path / "x.h5"
    assert main(["split", str(write_config(mlp_config)), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(n in err for n in names), err
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(("args", "names"), [
    (["--format", "tflite"], ["--format", "'tflite'", "torchscript, onnx, exported-program"]),
    (["--input-shape", "1,x"], ["--input-shape", "C,H,W"]),
])
def test_export_rejects_unknown_options_as_usage_errors(png_session, tmp_path, capsys, args,
                                                        names):
    out = tmp_path / "m.bin"
    assert main(["export", str(png_session.session_dir), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(n in err for n in names), err
    assert not out.exists()
