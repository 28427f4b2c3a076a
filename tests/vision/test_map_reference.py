"""mAP of ``mean_average_precision`` against the reference, ``pycocotools``' ``COCOeval``.

Both evaluate the same detections: (a) the coins detection example's ground truth (written
by ``examples/coins-detection/prepare.py``) with predictions generated from it, real coin
boxes moved by a seeded jitter, duplicated, and mixed with false positives; (b) generated
scenes with crowds of overlapping boxes, three classes, tied scores, images without ground
truth or without detections, a class never detected, a class never present, and crowd
regions (``iscrowd``). mAP@[.5:.95], mAP@.5 and mAP@.75 must agree to 1e-9 (COCO's
``stats[0:3]``: area range "all", 100 detections per image).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")
from pycocotools.coco import COCO  # noqa: E402
from pycocotools.cocoeval import COCOeval  # noqa: E402

from thelper_vision.det_metrics import MeanAveragePrecision, box_ious, match_detections  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOL = 1e-9


def _coco_stats(images: list[dict], detections: list[list[dict]], num_classes: int
                ) -> tuple[float, float, float]:
    """COCOeval's mAP@[.5:.95], mAP@.5, mAP@.75 (``-1`` where COCO finds no ground truth).

    ``images``: per image ``{"boxes": (G, 4) XYXY, "labels": (G,), "iscrowd": (G,)}``;
    ``detections``: per image ``[{"box": XYXY, "label": int, "score": float}]``.
    """
    gt = {"images": [{"id": i + 1, "width": 512, "height": 512} for i in range(len(images))],
          "categories": [{"id": c + 1, "name": f"c{c}"} for c in range(num_classes)],
          "annotations": []}
    for i, img in enumerate(images):
        crowd = img.get("iscrowd", np.zeros(len(img["labels"]), dtype=int))
        for (x1, y1, x2, y2), label, is_crowd in zip(img["boxes"], img["labels"], crowd,
                                                     strict=True):
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": i + 1,
                "category_id": int(label) + 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float((x2 - x1) * (y2 - y1)), "iscrowd": int(is_crowd)})
    results = [{"image_id": i + 1, "category_id": d["label"] + 1, "score": d["score"],
                "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0],
                         d["box"][3] - d["box"][1]]}
               for i, dets in enumerate(detections) for d in dets]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return tuple(float(x) for x in evaluator.stats[:3])


def _ours(images: list[dict], detections: list[list[dict]], tmp_path: Path
          ) -> tuple[float, float, float]:
    metric = MeanAveragePrecision()
    at_50 = MeanAveragePrecision(iou=0.5)
    outputs, targets = [], []
    for img, dets in zip(images, detections, strict=True):
        outputs.append({
            "boxes": torch.tensor([d["box"] for d in dets], dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([d["score"] for d in dets], dtype=torch.float32),
            "labels": torch.tensor([d["label"] for d in dets], dtype=torch.int64)})
        target = {"boxes": torch.tensor(np.asarray(img["boxes"]), dtype=torch.float32
                                        ).reshape(-1, 4),
                  "labels": torch.tensor(np.asarray(img["labels"]), dtype=torch.int64)}
        if "iscrowd" in img:
            target["iscrowd"] = torch.tensor(np.asarray(img["iscrowd"]), dtype=torch.bool)
        targets.append(target)
    for m in (metric, at_50):
        m.update(outputs[:3], targets[:3])  # several updates, as batches arrive
        m.update(outputs[3:], targets[3:])
    report = metric.report(tmp_path, "map")
    assert report is not None
    data = json.loads((tmp_path / "map.json").read_text())
    assert data["map"] == pytest.approx(metric.compute(), abs=1e-12)
    assert data["map_50"] == pytest.approx(at_50.compute(), abs=1e-12)
    return data["map"], data["map_50"], data["map_75"]


def _quarter(x: np.ndarray) -> np.ndarray:
    """Round to quarter pixels: exact in float32 and float64, so both sides compute the
    same IoUs bit for bit (boxes are converted to XYWH for COCO and back)."""
    return np.round(np.asarray(x, dtype=np.float64) * 4) / 4


def _jittered(rng: np.random.Generator, box: np.ndarray, scale: float) -> list[float]:
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    moved = box + rng.normal(0, scale, 4) * np.array([w, h, w, h])
    moved[2] = max(moved[2], moved[0] + 1)
    moved[3] = max(moved[3], moved[1] + 1)
    return _quarter(moved).tolist()


# ------------------------------------------------------------------ (a) coins predictions

def _coins_ground_truth(tmp_path: Path) -> list[dict]:
    spec = importlib.util.spec_from_file_location(
        "coins_prepare", ROOT / "examples" / "coins-detection" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.prepare(tmp_path / "coins")
    images = []
    for split in ("train", "test"):
        coco = json.loads((tmp_path / "coins" / split / "annotations.json").read_text())
        for info in coco["images"]:
            anns = [a for a in coco["annotations"] if a["image_id"] == info["id"]]
            boxes = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)]
            images.append({"boxes": _quarter(np.asarray(boxes).reshape(-1, 4)),
                           "labels": np.zeros(len(anns), dtype=int)})
    return images


def _coins_detections(images: list[dict], seed: int) -> list[list[dict]]:
    """Per coin: a jittered box (scale 3 % to 25 % of its size: many fall between the IoU
    thresholds), sometimes a duplicate; per image a few false positives; scores in steps
    of 0.05 so that many tie."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        dets = []
        for box in img["boxes"]:
            if rng.random() < 0.1:
                continue  # a missed coin
            dets.append({"box": _jittered(rng, box, rng.uniform(0.03, 0.25)), "label": 0,
                         "score": round(float(rng.uniform(0.3, 1.0)) * 20) / 20})
            if rng.random() < 0.2:
                dets.append({"box": _jittered(rng, box, 0.1), "label": 0,
                             "score": round(float(rng.uniform(0.0, 0.6)) * 20) / 20})
        for _ in range(rng.integers(0, 4)):
            x, y = rng.uniform(0, 100, 2)
            size = rng.uniform(10, 40)
            dets.append({"box": _quarter([x, y, x + size, y + size]).tolist(), "label": 0,
                         "score": round(float(rng.uniform(0.0, 0.8)) * 20) / 20})
        out.append(dets)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_coins_predictions_match_pycocotools(tmp_path, seed):
    images = _coins_ground_truth(tmp_path)
    assert len(images) == 37 and sum(len(i["labels"]) for i in images) > 60
    detections = _coins_detections(images, seed)
    reference = _coco_stats(images, detections, num_classes=1)
    ours = _ours(images, detections, tmp_path)
    assert 0.05 < reference[0] < 0.95  # a case that discriminates: neither 0 nor perfect
    assert ours == pytest.approx(reference, abs=TOL)


# ------------------------------------------------------------------ (b) generated crowds

def _crowded_scene(seed: int, *, crowd: bool) -> tuple[list[dict], list[list[dict]]]:
    rng = np.random.default_rng(seed)
    images, detections = [], []
    for i in range(12):
        boxes, labels, flags = [], [], []
        if i % 5 != 4:  # every fifth image has no ground truth at all
            for _ in range(rng.integers(1, 4)):  # clusters of heavily overlapping boxes
                cx, cy = rng.uniform(60, 450, 2)
                for _ in range(rng.integers(2, 7)):
                    w, h = rng.uniform(20, 90, 2)
                    x, y = cx + rng.normal(0, 8), cy + rng.normal(0, 8)
                    boxes.append(_quarter([x - w / 2, y - h / 2, x + w / 2, y + h / 2]))
                    labels.append(int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2])))
                    flags.append(0)
            if crowd and rng.random() < 0.5:  # a crowd region over one cluster
                x, y = rng.uniform(40, 300, 2)
                boxes.append(_quarter([x, y, x + 150, y + 120]))
                labels.append(int(rng.integers(0, 3)))
                flags.append(1)
        img = {"boxes": np.asarray(boxes).reshape(-1, 4), "labels": np.asarray(labels, int)}
        if crowd:
            img["iscrowd"] = np.asarray(flags, dtype=int)
        dets = []
        if i % 6 != 5:  # every sixth image has no detection
            for box, label in zip(img["boxes"], img["labels"], strict=True):
                for _ in range(rng.integers(0, 3)):  # 0, 1 or 2 detections per box
                    wrong = rng.random() < 0.1
                    dets.append({"box": _jittered(rng, box, rng.uniform(0.0, 0.2)),
                                 "label": int((label + 1) % 3) if wrong else int(label),
                                 "score": float(rng.choice([0.9, 0.75, 0.5, 0.5, 0.3]))})
            for _ in range(rng.integers(0, 5)):  # false positives, also of class 3 (absent)
                x, y = rng.uniform(0, 450, 2)
                dets.append({"box": _quarter([x, y, x + 40, y + 30]).tolist(),
                             "label": int(rng.integers(0, 4)),
                             "score": float(rng.choice([0.9, 0.5, 0.1]))})
        images.append(img)
        detections.append(dets)
    return images, detections


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("crowd", [False, True], ids=["no-crowd", "iscrowd"])
def test_generated_crowds_match_pycocotools(tmp_path, seed, crowd):
    images, detections = _crowded_scene(seed, crowd=crowd)
    reference = _coco_stats(images, detections, num_classes=4)
    ours = _ours(images, detections, tmp_path)
    assert reference[0] > 0
    assert ours == pytest.approx(reference, abs=TOL)


def test_more_than_100_detections_per_image_are_cut_like_coco(tmp_path):
    """COCO keeps the 100 best detections per image and class: 150 detections of one
    class on a crowd of 150 boxes, scores decreasing, recall stops at 100/150."""
    rng = np.random.default_rng(3)
    xs = np.arange(150) * 3.0
    boxes = np.stack([xs, xs * 0, xs + 10, xs * 0 + 10], axis=1)
    images = [{"boxes": boxes, "labels": np.zeros(150, int)}]
    order = rng.permutation(150)
    detections = [[{"box": boxes[j].tolist(), "label": 0, "score": 1 - k / 200}
                   for k, j in enumerate(order)]]
    images.append({"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int)})
    detections.append([])
    reference = _coco_stats(images, detections, num_classes=1)
    ours = _ours(images, detections, tmp_path)
    assert ours == pytest.approx(reference, abs=TOL)
    assert ours[1] == pytest.approx(67 / 101, abs=1e-12)  # recall points 0..0.66 reached


def test_crowd_iou_and_matching_rules():
    """A detection inside a crowd region has IoU 1 with it (intersection over the
    detection's area) and is ignored; crowd regions are tried only after the others."""
    crowd = np.array([False, True])
    gt = np.array([[0, 0, 10, 10], [0, 0, 100, 100]], dtype=float)
    dets = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=float)
    ious = box_ious(dets, gt, crowd)
    assert ious[2, 1] == 1.0 and ious[2, 0] == 0.0
    tp, ignored = match_detections(ious, np.array([0.5]), crowd)
    # first: the box; second: overlaps the taken box (IoU 0.68) -> the crowd (ignored);
    # third: inside the crowd only -> ignored
    assert tp.tolist() == [[True, False, False]]
    assert ignored.tolist() == [[False, True, True]]
