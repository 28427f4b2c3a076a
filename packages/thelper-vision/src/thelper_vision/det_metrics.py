"""Detection metrics: mean average precision, COCO style.

Outputs are torchvision-style detections ``[{"boxes": (D, 4) XYXY, "scores": (D,), "labels":
(D,)}]`` and targets ``[{"boxes": (G, 4), "labels": (G,)}]``, one dict per image (what
:class:`thelper_vision.detection.Detection` gives the metrics on evaluation splits; training
steps give ``None`` outputs, which are skipped).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thelper.metrics import Metric, Report

__all__ = ["MeanAveragePrecision", "average_precision", "box_ious", "match_detections",
           "COCO_IOUS"]

#: The IoU thresholds of the COCO benchmark: 0.50, 0.55, ..., 0.95, computed as
#: ``pycocotools`` does (``np.linspace``; its 0.90 is 0.8999999999999999), so that an IoU
#: falling exactly on a threshold is matched the same way.
COCO_IOUS: tuple[float, ...] = tuple(float(t) for t in np.linspace(0.5, 0.95, 10))
#: Recall points of the interpolated precision: 0, 0.01, ..., 1.
_RECALLS = np.linspace(0.0, 1.0, 101)


def box_ious(boxes: np.ndarray, gt_boxes: np.ndarray,
             crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of detections with ground-truth boxes, as the COCO evaluation computes it.

    For a crowd region the denominator is the detection's area instead of the union
    (``pycocotools.mask.iou`` with ``iscrowd``): a detection inside a crowd has IoU 1.

    Args:
        boxes: ``(D, 4)`` XYXY detections (pixels, float64).
        gt_boxes: ``(G, 4)`` XYXY ground truth.
        crowd: ``(G,)`` bool, True for crowd regions (``iscrowd``); ``None``: none.

    Returns:
        ``(D, G)`` float64 in ``[0, 1]``.
    """
    d = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    g = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    w = np.minimum(d[:, None, 2], g[None, :, 2]) - np.maximum(d[:, None, 0], g[None, :, 0])
    h = np.minimum(d[:, None, 3], g[None, :, 3]) - np.maximum(d[:, None, 1], g[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    area_d = ((d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1]))[:, None]
    area_g = ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]))[None, :]
    union = area_d + area_g - inter
    if crowd is not None and len(crowd):
        union = np.where(np.asarray(crowd, dtype=bool)[None, :], area_d, union)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(union > 0, inter / union, 0.0)
    return out


def match_detections(ious: np.ndarray, thresholds: np.ndarray,
                     crowd: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of score-sorted detections to ground-truth boxes of one class in one
    image, as in the COCO evaluation (``pycocotools`` ``COCOeval.evaluateImg``): each
    detection, best score first, takes the unmatched ground truth of highest IoU at or
    above the threshold (the last one on ties); crowd regions come after the other boxes,
    are tried only when no other box matched, may take any number of detections, and the
    detections they take are ignored (neither true nor false positives).

    Args:
        ious: ``(D, G)`` IoU of each detection (sorted by decreasing score) with each
            ground-truth box (:func:`box_ious`).
        thresholds: ``(T,)`` IoU thresholds.
        crowd: ``(G,)`` bool, True for crowd regions; ``None``: none.

    Returns:
        ``(tp, ignored)``: ``(T, D)`` bool each, True where the detection is a true
        positive, and where it matched a crowd region.
    """
    d, g = ious.shape
    is_crowd = np.zeros(g, dtype=bool) if crowd is None else np.asarray(crowd, dtype=bool)
    order = np.argsort(is_crowd, kind="mergesort")  # crowds last, as pycocotools sorts them
    tp = np.zeros((len(thresholds), d), dtype=bool)
    ignored = np.zeros((len(thresholds), d), dtype=bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(g, dtype=bool)
        for di in range(d):
            best, match = min(float(t), 1 - 1e-10), -1
            for gi in order:
                if taken[gi] and not is_crowd[gi]:
                    continue
                if match >= 0 and not is_crowd[match] and is_crowd[gi]:
                    break
                if ious[di, gi] < best:
                    continue
                best, match = ious[di, gi], gi
            if match >= 0:
                taken[match] = True
                if is_crowd[match]:
                    ignored[ti, di] = True
                else:
                    tp[ti, di] = True
    return tp, ignored


def average_precision(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> float:
    """Average precision of one class at one IoU threshold, 101-point interpolated (COCO).

    Detections of every image are sorted by decreasing score; precision is made
    monotonically decreasing (the precision envelope) and read at recalls
    ``0, 0.01, ..., 1`` (0 beyond the highest recall reached); AP is their mean. Lin et al.,
    "Microsoft COCO: Common Objects in Context", ECCV 2014; the PASCAL VOC 2007 11-point
    variant of Everingham et al., IJCV 2010 reads 11 recalls instead.

    Detections that matched a crowd region are left out beforehand (they would add the
    same precision and recall as their predecessor: the result is the same as COCO's).

    Args:
        scores: ``(D,)`` detection scores.
        tp: ``(D,)`` True for true positives.
        num_gt: Number of ground-truth boxes of the class, crowd regions excluded (> 0).
    """
    order = np.argsort(-scores, kind="mergesort")
    hits = tp[order]
    tps = np.cumsum(hits)
    fps = np.cumsum(~hits)
    recall = tps / num_gt
    precision = tps / np.maximum(tps + fps, np.finfo(np.float64).eps)
    if len(precision):
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALLS, side="left")
    q = np.zeros(len(_RECALLS))
    found = idx < len(precision)
    q[found] = precision[idx[found]]
    return float(np.mean(q))


class MeanAveragePrecision(Metric):
    """Mean average precision (mAP) of detections; in ``[0, 1]``, higher is better.

    AP per class and IoU threshold by :func:`average_precision` (101-point interpolation,
    greedy matching by score as in the COCO evaluation, at most ``max_detections`` per image
    and class), averaged over classes that have ground truth and over the thresholds:
    ``iou: 0.5`` gives mAP@0.5 (PASCAL VOC's criterion), no ``iou`` gives the COCO primary
    metric mAP@[.5:.95]. Boxes are XYXY pixels; IoUs come from :func:`box_ious`.
    All images count as one "all areas" range. Targets may hold ``iscrowd`` ``(G,)``
    (bool or 0/1): crowd regions are matched as in the COCO evaluation (see
    :func:`match_detections`) and do not count as ground truth. Checked against
    ``pycocotools`` to 1e-9 (``tests/vision/test_map_reference.py``).

    The report writes ``<stem>.json``: AP per class at each threshold, mAP@0.5, mAP@0.75
    and mAP@[.5:.95].

    Args:
        iou: One IoU threshold, or ``None`` for ``0.50:0.05:0.95``.
        max_detections: Highest-scoring detections kept per image and class.
        task: The detection task (class names).
    """

    goal = "max"

    def __init__(self, iou: float | None = None, max_detections: int = 100,
                 task: Any = None) -> None:
        self.thresholds = np.asarray(COCO_IOUS if iou is None else (float(iou),))
        self.max_detections = int(max_detections)
        self.class_names = list(getattr(task, "class_names", None) or [])
        # one dict of (detached, on-device) tensors per image, in evaluation order; "cat"
        # concatenates the ranks' lists, so every image keeps its own dict after a merge
        self.add_state("_preds", [], "cat")  # {"boxes", "scores", "labels"}
        self.add_state("_targets", [], "cat")  # {"boxes", "labels"[, "iscrowd"]}

    def update(self, outputs: Any, targets: Any) -> None:
        if outputs is None:  # training steps of detectors give no predictions
            return
        for o, t in zip(outputs, targets, strict=True):
            self._preds.append({k: o[k].detach() for k in ("boxes", "scores", "labels")})
            target = {k: t[k].detach() for k in ("boxes", "labels")}
            if t.get("iscrowd") is not None:
                target["iscrowd"] = torch.as_tensor(t["iscrowd"]).detach().bool()
            self._targets.append(target)

    def _table(self, thresholds: np.ndarray) -> tuple[np.ndarray, list[int]]:
        """AP ``(T, K)`` (NaN for classes without ground truth) and the class indices."""
        preds = [{k: v.cpu() for k, v in p.items()} for p in self._preds]
        gts = [{k: v.cpu() for k, v in t.items()} for t in self._targets]
        classes = sorted({int(c) for t in gts for c in t["labels"].tolist()} |
                         {int(c) for p in preds for c in p["labels"].tolist()})
        table = np.full((len(thresholds), len(classes)), np.nan)
        for ci, c in enumerate(classes):
            all_scores, all_tp, all_ignored, num_gt = [], [], [], 0
            for p, t in zip(preds, gts, strict=True):
                in_class = t["labels"] == c
                gt_boxes = t["boxes"][in_class].double().numpy()
                crowd = t["iscrowd"][in_class].numpy() if "iscrowd" in t else \
                    np.zeros(len(gt_boxes), dtype=bool)
                keep = p["labels"] == c
                scores = p["scores"][keep].double()
                order = torch.argsort(scores, descending=True, stable=True)
                order = order[:self.max_detections]
                boxes = p["boxes"][keep].double()[order].numpy()
                scores = scores[order]
                num_gt += int((~crowd).sum())
                if boxes.shape[0] == 0:
                    continue
                tp, ignored = match_detections(box_ious(boxes, gt_boxes, crowd), thresholds,
                                               crowd)
                all_tp.append(tp)
                all_ignored.append(ignored)
                all_scores.append(scores.numpy())
            if num_gt == 0:
                continue
            if not all_scores:
                table[:, ci] = 0.0
                continue
            s = np.concatenate(all_scores)
            tp = np.concatenate(all_tp, axis=1)
            ignored = np.concatenate(all_ignored, axis=1)
            for ti in range(len(thresholds)):
                kept = ~ignored[ti]
                table[ti, ci] = average_precision(s[kept], tp[ti][kept], num_gt)
        return table, classes

    def compute(self) -> float | None:
        if not self._targets:
            return None
        table, _ = self._table(self.thresholds)
        valid = ~np.isnan(table)
        return float(table[valid].mean()) if valid.any() else None

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._targets:
            return None
        table, classes = self._table(np.asarray(COCO_IOUS))
        names = [self.class_names[c] if 0 <= c < len(self.class_names) else str(c)
                 for c in classes]

        def mean(rows: np.ndarray) -> float | None:
            valid = ~np.isnan(rows)
            return float(rows[valid].mean()) if valid.any() else None

        data = {
            "map": mean(table), "map_50": mean(table[0]), "map_75": mean(table[5]),
            "per_class": {n: {f"{t:.2f}": (None if np.isnan(v) else float(v))
                              for t, v in zip(COCO_IOUS, table[:, i], strict=True)}
                          for i, n in enumerate(names)},
            "images": len(self._targets),
        }
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(data, indent=2))
        return Report([path])
