"""Write the coins segmentation data set: image tiles and class-index masks.

Source: scikit-image's ``data.coins()`` (303x384 grey photograph of 24 Greco-Roman coins,
Pompeii collection, Brooklyn Museum; shipped inside scikit-image). No package ships masks for
it, so they are derived by a classical method, the region-based segmentation of the
scikit-image gallery ("Comparing edge-based and region-based segmentation"):

1. elevation map: Sobel gradient magnitude of the image;
2. markers: background where intensity < 30, coin where intensity > 150;
3. watershed of the elevation map from those markers;
4. holes filled (``scipy.ndimage.binary_fill_holes``), components under 100 px removed.

Split by rows of coins, so that no coin is in two splits: rows 1-3 (y < 225, 18 coins) give
the training tiles (64x64 every 32 px; the loader keeps 15 % of them for validation), row 4
(y >= 225, 6 coins) the test tiles (78x64, no overlap).

Usage (from the repository root)::

    uv run python examples/coins-segmentation/prepare.py [OUT_DIR]

writes ``OUT_DIR/{train,test}/{images,masks}/*.png`` (default: ``data/`` beside this file)
and prints the majority-class (all background) baseline of the test tiles.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_Y = 225  # between the third and the fourth row of coins
TRAIN_TILE, TRAIN_STRIDE = 64, 32
TEST_TILE_W = 64


def coin_mask(image: np.ndarray) -> np.ndarray:
    """Binary coin mask (uint8, 1 = coin) by the watershed method described above."""
    from scipy import ndimage as ndi
    from skimage import filters, segmentation

    elevation = filters.sobel(image)
    markers = np.zeros_like(image, dtype=np.uint8)
    markers[image < 30] = 1
    markers[image > 150] = 2
    regions = segmentation.watershed(elevation, markers)
    mask = ndi.binary_fill_holes(regions == 2)
    labels, _ = ndi.label(mask)
    keep = np.bincount(labels.ravel()) >= 100
    keep[0] = False
    return keep[labels].astype(np.uint8)


def _save(folder: Path, name: str, image: np.ndarray, mask: np.ndarray) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / "images" / f"{name}.png")
    Image.fromarray(mask).save(folder / "masks" / f"{name}.png")


def prepare(out: Path) -> dict[str, float]:
    """Write the tiles under ``out``; return the test baseline figures."""
    from skimage import data

    image = data.coins()
    mask = coin_mask(image)
    h, w = image.shape
    for y in range(0, SPLIT_Y - TRAIN_TILE + 1, TRAIN_STRIDE):
        for x in range(0, w - TRAIN_TILE + 1, TRAIN_STRIDE):
            sl = np.s_[y:y + TRAIN_TILE, x:x + TRAIN_TILE]
            _save(out / "train", f"coins_y{y:03d}_x{x:03d}", image[sl], mask[sl])
    for x in range(0, w - TEST_TILE_W + 1, TEST_TILE_W):
        sl = np.s_[SPLIT_Y:h, x:x + TEST_TILE_W]
        _save(out / "test", f"coins_y{SPLIT_Y:03d}_x{x:03d}", image[sl], mask[sl])
    test = mask[SPLIT_Y:h, :w - w % TEST_TILE_W]
    background = float((test == 0).mean())
    # predicting the majority class (background) everywhere: IoU_bg = share of background
    # pixels, IoU_coin = 0
    return {"test_pixels": int(test.size), "coin_fraction": 1 - background,
            "majority_pixel_accuracy": background, "majority_miou": background / 2}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    figures = prepare(target)
    print(f"wrote {target}; test baseline (all background): " +
          ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                    for k, v in figures.items()))
