"""Write the coins detection data set: image crops and COCO-format box annotations.

Source: scikit-image's ``data.coins()`` (303x384 grey photograph of 24 Greco-Roman coins,
Pompeii collection, Brooklyn Museum; shipped inside scikit-image). No package ships boxes
for it, so they are derived by a classical method:

1. coin mask by the region-based segmentation of the scikit-image gallery ("Comparing
   edge-based and region-based segmentation"): watershed of the Sobel gradient from
   markers (intensity < 30: background, > 150: coin), holes filled, components under
   100 px removed;
2. one box per connected component (``scipy.ndimage.label`` +
   ``scipy.ndimage.find_objects``), class ``coin``.

Split by rows of coins, so that no coin is in two splits: rows 1-3 (y < 225, 18 coins)
give 36 training crops of 128x128 every 32 px (a coin cut by a crop keeps its clipped box
when at least half of it is visible, and is dropped otherwise); the loader keeps 15 % of
them for validation. Row 4 (y >= 225, 6 coins) is the test image, padded at the bottom to
128 rows with the background's median grey so that the detector sees it at the training
scale (its shorter side is resized to ``min_size: 128``).

Usage (from the repository root)::

    uv run python examples/coins-detection/prepare.py [OUT_DIR]

writes ``OUT_DIR/{train,test}/images/*.png`` and ``OUT_DIR/{train,test}/annotations.json``
(default: ``data/`` beside this file).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_Y = 225  # between the third and the fourth row of coins
CROP, STRIDE = 128, 32
MIN_VISIBLE = 0.5


def coin_boxes(image: np.ndarray) -> np.ndarray:
    """``(K, 4)`` XYXY boxes of the coins (float, pixels; exclusive max corner)."""
    from scipy import ndimage as ndi
    from skimage import filters, segmentation

    elevation = filters.sobel(image)
    markers = np.zeros_like(image, dtype=np.uint8)
    markers[image < 30] = 1
    markers[image > 150] = 2
    mask = ndi.binary_fill_holes(segmentation.watershed(elevation, markers) == 2)
    labels, _ = ndi.label(mask)
    sizes = np.bincount(labels.ravel())
    boxes = []
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is not None and sizes[i] >= 100:
            boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
    return np.asarray(boxes, dtype=np.float64)


def _crop_boxes(boxes: np.ndarray, x0: int, y0: int, w: int, h: int) -> list[list[float]]:
    out = []
    for x1, y1, x2, y2 in boxes:
        cx1, cy1 = max(x1, x0), max(y1, y0)
        cx2, cy2 = min(x2, x0 + w), min(y2, y0 + h)
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        if (cx2 - cx1) * (cy2 - cy1) >= MIN_VISIBLE * (x2 - x1) * (y2 - y1):
            out.append([cx1 - x0, cy1 - y0, cx2 - x0, cy2 - y0])
    return out


def _write(folder: Path, items: list[tuple[str, np.ndarray, list[list[float]]]]) -> int:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    coco: dict = {"images": [], "annotations": [],
                  "categories": [{"id": 1, "name": "coin"}]}
    for image_id, (name, pixels, boxes) in enumerate(items, start=1):
        Image.fromarray(pixels).save(folder / "images" / f"{name}.png")
        coco["images"].append({"id": image_id, "file_name": f"{name}.png",
                               "height": int(pixels.shape[0]), "width": int(pixels.shape[1])})
        for x1, y1, x2, y2 in boxes:
            coco["annotations"].append({
                "id": len(coco["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": 0})
    (folder / "annotations.json").write_text(json.dumps(coco, indent=1))
    return len(coco["annotations"])


def prepare(out: Path) -> dict[str, int]:
    """Write the crops and annotations under ``out``; return image and box counts."""
    from skimage import data

    image = data.coins()
    h, w = image.shape
    boxes = coin_boxes(image)
    train_boxes = boxes[boxes[:, 3] <= SPLIT_Y]
    test_boxes = boxes[boxes[:, 1] >= SPLIT_Y]
    assert len(train_boxes) + len(test_boxes) == len(boxes), "a coin crosses the split"
    train = []
    for y in range(0, SPLIT_Y - CROP + 1, STRIDE):
        for x in range(0, w - CROP + 1, STRIDE):
            train.append((f"coins_y{y:03d}_x{x:03d}", image[y:y + CROP, x:x + CROP],
                          _crop_boxes(train_boxes, x, y, CROP, CROP)))
    strip = image[SPLIT_Y:h]
    background = int(np.median(image[image < 30])) if (image < 30).any() else 0
    test_pixels = np.full((CROP, w), background, dtype=np.uint8)
    test_pixels[:strip.shape[0]] = strip
    test = [("coins_row4", test_pixels, _crop_boxes(test_boxes, 0, SPLIT_Y, w, h - SPLIT_Y))]
    return {"train_images": len(train), "train_boxes": _write(out / "train", train),
            "test_images": len(test), "test_boxes": _write(out / "test", test)}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    counts = prepare(target)
    print(f"wrote {target}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
