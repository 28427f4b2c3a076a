"""Fixtures of the GUI tests: configs over scikit-image's coins written as image files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml


def write_png(path: Path, image: np.ndarray) -> Path:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


@pytest.fixture
def coins_images(tmp_path: Path) -> Path:
    """scikit-image's coins (303x384 grey) as ``images/coins.png`` plus its two halves
    (``coins_left.png``, ``coins_right.png``): a folder of three real images."""
    from skimage import data

    coins = data.coins()
    folder = tmp_path / "images"
    write_png(folder / "coins.png", coins)
    write_png(folder / "coins_left.png", np.ascontiguousarray(coins[:, :192]))
    write_png(folder / "coins_right.png", np.ascontiguousarray(coins[:, 192:]))
    return folder


def session_config(name: str, datasets: dict[str, Any], annotator: dict[str, Any],
                   model: dict[str, Any], metrics: dict[str, Any], monitor: str,
                   epochs: int = 1, batch_size: int = 2) -> dict[str, Any]:
    first = next(iter(datasets))
    return {
        "name": name,
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": datasets,
        "loaders": {"batch_size": batch_size, "train_split": {first: 1.0},
                    "base_transforms": [{"type": "to_float"}]},
        "model": model,
        "trainer": {"epochs": epochs, "device": "cpu", "progress": False, "monitor": monitor,
                    "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                    "metrics": metrics},
        "annotator": annotator,
    }


@pytest.fixture
def seg_config(tmp_path: Path, coins_images: Path):
    """Write a segmentation annotation config over ``coins_images``; returns its path."""

    def make(params: dict[str, Any] | None = None, name: str = "coins-annot") -> Path:
        cfg = session_config(
            name,
            {"coins": {"type": "image_files", "params": {"root": str(coins_images),
                                                           "mode": "L"},
                       "task": {"type": "segmentation",
                                "params": {"class_names": ["background", "coin", "edge"]}}}},
            {"type": "segmentation", "params": {
                "window_name": f"annot-{name}",
                "labels": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                           {"id": 1, "name": "coin", "color": [255, 170, 0]},
                           {"id": 2, "name": "edge", "color": [0, 0, 255]}],
                "default_brush_radius": 5, **(params or {})}},
            {"type": "unet", "params": {"in_channels": 1, "base_channels": 4, "depth": 2}},
            {"miou": {"type": "miou"}}, "miou")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make


@pytest.fixture
def photo_images(tmp_path: Path) -> Path:
    """Four real photos as PNG files, sorted: scikit-image's ``chelsea`` (a cat, 300x451)
    and ``coffee`` (400x600), scikit-learn's ``china`` and ``flower`` (427x640 each)."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = load_sample_images().images
    folder = tmp_path / "photos"
    for name, rgb in (("chelsea", data.chelsea()), ("china", china), ("coffee", data.coffee()),
                      ("flower", flower)):
        write_png(folder / f"{name}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


@pytest.fixture
def cls_config(tmp_path: Path, photo_images: Path):
    """Write a classification annotation config over ``photo_images``; returns its path."""

    def make(params: dict[str, Any] | None = None, name: str = "photos-annot") -> Path:
        cfg = session_config(
            name,
            {"photos": {"type": "image_files", "params": {"root": str(photo_images)},
                        "task": {"type": "classification", "params": {
                            "class_names": ["cat", "flower", "landscape", "drink"]}}}},
            {"type": "classification", "params": {"window_name": f"annot-{name}",
                                                  **(params or {})}},
            {"type": "simple_cnn", "params": {"in_channels": 3}},
            {"accuracy": {"type": "accuracy"}}, "accuracy")
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    return make
