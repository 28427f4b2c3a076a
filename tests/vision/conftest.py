"""Fixtures of the thelper-vision tests: real images written to temporary class folders.

Data: scikit-learn's ``load_digits`` (UCI optical digits, 8x8 grey) and ``load_sample_images``
(two JPEG photos), scikit-image's ``data.astronaut`` (512x512 RGB); all ship with the
packages, nothing is downloaded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

DIGITS_PER_CLASS = 4
DIGITS_UPSCALE = 4  # 8x8 -> 32x32


@pytest.fixture(scope="session")
def registry():
    """The registry of a fresh plugin manager (core built-ins + installed plugins)."""
    from thelper.plugins import ThelperPluginManager

    return ThelperPluginManager().registry


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/<digit>/<index>.png``: the first 4 digits of each class, uint8 32x32 grey PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits")
    for label in range(10):
        indices = np.flatnonzero(digits.target == label)[:DIGITS_PER_CLASS]
        folder = root / str(label)
        folder.mkdir()
        for i in indices:
            pixels = np.round(digits.images[i] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize(
                (8 * DIGITS_UPSCALE, 8 * DIGITS_UPSCALE), Image.Resampling.NEAREST)
            image.save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="session")
def photos_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{china,flower}/``: scikit-learn's two sample JPEGs, plus a BMP and RGBA PNG copy."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    root = tmp_path_factory.mktemp("photos")
    for filename in load_sample_images().filenames:
        path = Path(filename)
        folder = root / path.stem
        folder.mkdir()
        shutil.copy(path, folder / path.name)
        with Image.open(path) as image:
            small = image.convert("RGB").resize((64, 43))
            small.save(folder / f"{path.stem}_small.BMP")
            small.convert("RGBA").save(folder / f"{path.stem}_rgba.png")
    return root


@pytest.fixture(scope="session")
def astronaut():
    """scikit-image's astronaut photo as a uint8 tensor ``(3, 512, 512)``."""
    import torch
    from skimage import data

    return torch.from_numpy(np.ascontiguousarray(data.astronaut().transpose(2, 0, 1)))
