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


def _coin_mask(image: np.ndarray) -> np.ndarray:
    """Coins vs background: Otsu threshold, holes filled, components under 100 px removed."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    mask = ndi.binary_fill_holes(image > threshold_otsu(image))
    labels, _ = ndi.label(mask)
    keep = np.bincount(labels.ravel()) >= 100
    keep[0] = False
    return keep[labels].astype(np.uint8)


@pytest.fixture(scope="session")
def coins_segmentation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/{images,masks}/<tile>.png``: four 64x64 tiles of scikit-image's coins photo and
    their coin masks (0 background, 1 coin; Otsu threshold); one mask pixel is 255
    (ignored)."""
    from PIL import Image
    from skimage import data

    coins = data.coins()
    mask = _coin_mask(coins)
    root = tmp_path_factory.mktemp("coins_seg")
    (root / "images").mkdir()
    (root / "masks").mkdir()
    for i, (y, x) in enumerate([(16, 16), (16, 128), (96, 16), (160, 192)]):
        tile = mask[y:y + 64, x:x + 64].copy()
        if i == 0:
            tile[0, 0] = 255
        Image.fromarray(coins[y:y + 64, x:x + 64]).save(root / "images" / f"t{i}.png")
        Image.fromarray(tile).save(root / "masks" / f"t{i}.png")
    return root


@pytest.fixture(scope="session")
def coins_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/images/*.png`` (two 96x128 crops of the coins photo) and
    ``root/annotations.json`` (COCO: one ``coin`` box per connected component of the
    Otsu mask fully inside a crop)."""
    import json

    from PIL import Image
    from scipy import ndimage as ndi
    from skimage import data

    coins = data.coins()
    labels, _ = ndi.label(_coin_mask(coins))
    boxes = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
             for sl in ndi.find_objects(labels) if sl is not None]
    root = tmp_path_factory.mktemp("coins_coco")
    (root / "images").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 7, "name": "coin"}]}
    for image_id, (y, x) in enumerate([(0, 0), (90, 120)], start=1):
        Image.fromarray(coins[y:y + 96, x:x + 128]).save(root / "images" / f"c{image_id}.png")
        coco["images"].append({"id": image_id, "file_name": f"c{image_id}.png"})
        for x1, y1, x2, y2 in boxes:
            if x1 >= x and y1 >= y and x2 <= x + 128 and y2 <= y + 96:
                coco["annotations"].append({
                    "id": len(coco["annotations"]) + 1, "image_id": image_id,
                    "category_id": 7, "bbox": [x1 - x, y1 - y, x2 - x1, y2 - y1]})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.fixture(scope="session")
def grey_photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``root/*.png``: scikit-image's camera (downsized to 64x64) and a 64x64 coins crop."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("grey_photos")
    Image.fromarray(data.camera()).resize((64, 64)).save(root / "camera.png")
    Image.fromarray(data.coins()[:64, 16:80]).save(root / "coins.png")
    return root
