"""The vision task family's examples, trained by ``thelper run`` on real images.

Each example prepares its data (``prepare.py`` in the example folder, written to a temporary
folder here), trains, and must beat its naive baseline on held-out data: mIoU above the
majority class, mAP@0.5 >= 0.5, PSNR above bicubic upsampling, MAE below predicting the
training mean, reconstruction error below the training mean image. The quick tests shorten
training; the slow ones run the examples as shipped and check the README's figures.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from thelper.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _prepare_module(example: str) -> Any:
    path = EXAMPLES / example / "prepare.py"
    spec = importlib.util.spec_from_file_location(f"prepare_{example.replace('-', '_')}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(example: str, save_dir: Path, sets: list[str]) -> dict[str, Any]:
    """``thelper run`` the example; return its ``run.json``."""
    args = ["run", str(EXAMPLES / example / "config.yaml"), "--save-dir", str(save_dir),
            "--set", "trainer.device=cpu", "--set", "trainer.progress=false"]
    for item in sets:
        args += ["--set", item]
    assert main(args) == 0
    run = json.loads((save_dir / example / "run.json").read_text())
    assert run["status"] == "completed"
    return run


# ----------------------------------------------------------------------- segmentation
def _segmentation(tmp_path: Path, sets: list[str]) -> tuple[dict, dict]:
    data = tmp_path / "data"
    baseline = _prepare_module("coins-segmentation").prepare(data)
    paths = [f"datasets.coins_{s}.params.{k}={data / s / k}" for s in ("train", "test")
             for k in ("images", "masks")]
    return _run("coins-segmentation", tmp_path / "runs", paths + sets), baseline


def test_coins_segmentation_beats_majority_class(tmp_path):
    run, baseline = _segmentation(tmp_path, ["trainer.epochs=8", "trainer.optimization."
                                             "scheduler.params.T_max=8"])
    assert baseline["majority_miou"] == pytest.approx(0.3085, abs=1e-3)
    assert run["test"]["miou"] > baseline["majority_miou"] + 0.3, run["test"]
    assert run["test"]["pixel_accuracy"] > baseline["majority_pixel_accuracy"]
    masks = tmp_path / "runs" / "coins-segmentation" / "output" / "coins-segmentation" / \
        "test" / "masks"
    assert (masks / "0000_pred.png").is_file() and (masks / "grid.png").is_file()
    # the trained segmentation model exports (verified) and predicts PNG masks
    from thelper.tools.export import export_model
    from thelper.tools.infer import infer

    session = tmp_path / "runs" / "coins-segmentation"
    result = export_model(session, "onnx", tmp_path / "seg.onnx")
    assert result.max_abs_diff <= 1e-4
    out = infer(session, [], tmp_path / "pred", split="test")
    assert len(list((out / "masks").glob("*.png"))) == 6


@pytest.mark.slow
def test_coins_segmentation_as_shipped(tmp_path):
    run, baseline = _segmentation(tmp_path, [])
    assert run["test"]["miou"] >= 0.95, run["test"]  # README: 0.973 (baseline 0.309)


# -------------------------------------------------------------------------- detection
def _detection(tmp_path: Path, sets: list[str]) -> dict:
    data = tmp_path / "data"
    counts = _prepare_module("coins-detection").prepare(data)
    assert counts == {"train_images": 36, "train_boxes": 138, "test_images": 1,
                      "test_boxes": 6}
    paths = []
    for s in ("train", "test"):
        paths += [f"datasets.coins_{s}.params.images={data / s / 'images'}",
                  f"datasets.coins_{s}.params.annotations={data / s / 'annotations.json'}"]
    return _run("coins-detection", tmp_path / "runs", paths + sets)


def test_coins_detection_reaches_map50(tmp_path):
    run = _detection(tmp_path, ["trainer.epochs=8",
                                "trainer.optimization.scheduler.params.T_max=8"])
    assert run["test"]["map_50"] >= 0.5, run["test"]
    out = tmp_path / "runs" / "coins-detection" / "output" / "coins-detection" / "test"
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 1 and len(detections[0]["targets"]) == 6
    assert (out / "overlays" / "0000.png").is_file()


@pytest.mark.slow
def test_coins_detection_as_shipped(tmp_path):
    run = _detection(tmp_path, [])
    assert run["test"]["map_50"] >= 0.9, run["test"]  # README: 1.0 and mAP 0.89
    assert run["test"]["map"] >= 0.7, run["test"]


# ------------------------------------------------------------------- super-resolution
def _super_resolution(tmp_path: Path, sets: list[str]) -> tuple[dict, dict]:
    data = tmp_path / "data"
    module = _prepare_module("super-resolution")
    module.prepare(data)
    baseline = module.bicubic_baseline(data / "test")
    paths = [f"datasets.photos.params.root={data / 'train'}",
             f"datasets.held_out.params.root={data / 'test'}"]
    return _run("super-resolution", tmp_path / "runs", paths + sets), baseline


def test_super_resolution_beats_bicubic(tmp_path):
    run, baseline = _super_resolution(tmp_path, ["trainer.epochs=3",
                                                 "trainer.optimization.scheduler.params.T_max=3"])
    assert baseline["bicubic_psnr"] == pytest.approx(29.82, abs=0.01)
    assert run["test"]["psnr"] > baseline["bicubic_psnr"], (run["test"], baseline)


@pytest.mark.slow
def test_super_resolution_as_shipped(tmp_path):
    run, baseline = _super_resolution(tmp_path, [])
    assert run["test"]["psnr"] > baseline["bicubic_psnr"] + 0.5, (run["test"], baseline)
    assert run["test"]["ssim"] > baseline["bicubic_ssim"], (run["test"], baseline)


# ------------------------------------------------------------ regression, autoencoder
def _split(run_dir: Path, dataset: str) -> dict[str, list[int]]:
    return json.loads((run_dir / "logs" / "splits.json").read_text()
                      )["datasets"][dataset]["indices"]


def test_diabetes_regression_beats_the_mean(tmp_path):
    from sklearn.datasets import load_diabetes

    run = _run("diabetes-regression", tmp_path, [])
    idx = _split(tmp_path / "diabetes-regression", "diabetes")
    y = load_diabetes().target
    baseline = float(np.abs(y[idx["test"]] - y[idx["train"]].mean()).mean())
    assert baseline == pytest.approx(58.38, abs=0.01)
    assert run["test"]["mae"] < baseline - 8, (run["test"], baseline)  # README: 44.4
    predictions = tmp_path / "diabetes-regression" / "output" / "diabetes-regression" / \
        "test" / "predictions.csv"
    assert len(predictions.read_text().splitlines()) == len(idx["test"]) + 1


def test_digits_autoencoder_beats_the_mean_image(tmp_path):
    from sklearn.datasets import load_digits

    run = _run("digits-autoencoder", tmp_path, ["trainer.epochs=12",
                                                "trainer.optimization.scheduler.params.T_max=12"])
    idx = _split(tmp_path / "digits-autoencoder", "digits")
    x = load_digits().images / 16.0
    baseline = float(((x[idx["test"]] - x[idx["train"]].mean(axis=0)) ** 2).mean())
    assert baseline == pytest.approx(0.0742, abs=1e-4)
    assert run["test"]["mse"] < baseline / 3, (run["test"], baseline)  # README: 0.0078
