"""Model-assisted annotation: a trained session's predictions as pre-fills, and the order of
review (most disputed samples first).

Predictions go through the core :class:`thelper.predict.Predictor`: a sample read from a
file is decoded and preprocessed exactly as the session's training data was
(:meth:`~thelper.predict.Predictor.predict_files`); a sample without a file (e.g. sklearn
data) has its stored image passed through the session's base transforms.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from thelper.exceptions import ConfigError

__all__ = ["load_predictor", "predict_samples", "disagreement", "review_order", "box_iou"]

log = logging.getLogger("thelper.gui")

#: annotator type -> the task type its predictions must come from
TASKS = {"segmentation": "segmentation", "classification": "classification",
         "boxes": "detection"}


def load_predictor(source: str, kind: str, device: str = "cpu") -> Any:
    """The :class:`~thelper.predict.Predictor` of a session, checkpoint or export, checked
    against the annotator type.

    Raises:
        ConfigError: Its task does not fit the annotator (e.g. a classifier for masks).
        CheckpointError: Nothing loadable there.
    """
    from thelper.predict import Predictor

    predictor = Predictor.load(source, device=device)
    want = TASKS[kind]
    have = getattr(predictor.task, "type_name", "")
    if have != want:
        trained = have or "an unknown task"
        raise ConfigError(f"--from {source}: the model was trained for {trained}, the {kind} "
                          f"annotator needs a {want} model")
    return predictor


def _predict_one(predictor: Any, sample: dict[str, Any], source: Any) -> Any:
    path = source.path_of(sample)
    if path is not None:
        _, predictions = next(iter(predictor.predict_files([path])))
    else:
        value = sample.get(source.input_key)
        if isinstance(value, dict):
            value = value.get("image")
        if predictor.transform is not None:
            value = predictor.transform(value)
        x = predictor.collate([{predictor.task.input_key: value}])
        predictions = predictor.predict(x)
    return predictions[0]


def convert(kind: str, prediction: Any, predictor: Any, labels: Sequence[Any],
            min_score: float = 0.5) -> Any:
    """A model prediction in the annotator's terms.

    Returns:
        segmentation: ``(H, W)`` uint8 label ids (class index ``i`` -> ``labels[i]["id"]``);
        classification: ``(class name or None, probabilities {name: p})``;
        boxes: ``[{"bbox": [x, y, w, h], "label": class index, "score"}]`` (score >=
        ``min_score``, classes matched by name).
    """
    names = list(getattr(predictor.task, "class_names", None) or [])
    if kind == "segmentation":
        index = np.asarray(prediction, dtype=np.int64)
        lut = np.zeros(max(len(names), len(labels), int(index.max(initial=0)) + 1), np.uint8)
        for i, label in enumerate(labels):
            lut[i] = int(label["id"])
        return lut[np.clip(index, 0, len(lut) - 1)]
    if kind == "classification":
        probs = np.asarray(prediction, dtype=np.float64)
        by_name = {n: float(p) for n, p in zip(names, probs, strict=False)}
        best = max(by_name, key=by_name.__getitem__) if by_name else None
        return (best if best in labels else None), by_name
    out = []
    boxes = np.asarray(prediction["boxes"], dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(prediction.get("scores", np.ones(len(boxes))), dtype=np.float64)
    classes = np.asarray(prediction["labels"], dtype=np.int64)
    for (x0, y0, x1, y1), s, c in zip(boxes, scores, classes, strict=False):
        name = names[int(c)] if 0 <= int(c) < len(names) else None
        if s < min_score or name not in labels:
            continue
        out.append({"bbox": [round(x0), round(y0), round(x1 - x0), round(y1 - y0)],
                    "label": list(labels).index(name), "score": float(s)})
    return out


def predict_samples(predictor: Any, source: Any, kind: str, labels: Sequence[Any],
                    min_score: float = 0.5) -> dict[str, Any]:
    """``{sample key: converted prediction}`` for every sample of ``source``.

    Raises:
        DataError: The model fails on a sample (the message names it).
    """
    out = {}
    for pos, ref in enumerate(source.refs):
        sample = source.sample(pos)
        out[ref.key] = convert(kind, _predict_one(predictor, sample, source), predictor,
                               labels, min_score)
        if pos % 50 == 49:
            log.info("predicted %d/%d samples", pos + 1, len(source))
    return out


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``[x, y, w, h]`` boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    total = a[2] * a[3] + b[2] * b[3] - inter
    return inter / total if total > 0 else 0.0


def disagreement(kind: str, prediction: Any, saved: Any) -> float:
    """How much the model disputes a saved annotation, in ``[0, 1]``.

    segmentation: fraction of pixels whose predicted label differs; classification:
    ``1 - p(saved class)``; boxes: ``1 -`` the mean IoU of a greedy same-class matching
    over the larger of the two box lists (1 when exactly one list is empty).
    """
    if kind == "segmentation":
        return float(np.mean(np.asarray(prediction) != np.asarray(saved)))
    if kind == "classification":
        _, probs = prediction
        return 1.0 - float(probs.get(saved, 0.0)) if saved is not None else 0.0
    pred, true = list(prediction), list(saved)
    if not pred and not true:
        return 0.0
    used: set[int] = set()
    total = 0.0
    for t in true:
        best, best_j = 0.0, -1
        for j, p in enumerate(pred):
            if j not in used and p["label"] == t["label"]:
                iou = box_iou(p["bbox"], t["bbox"])
                if iou > best:
                    best, best_j = iou, j
        if best_j >= 0:
            used.add(best_j)
        total += best
    return 1.0 - total / max(len(pred), len(true))


def review_order(kind: str, source: Any, store: Any, predictions: dict[str, Any]
                 ) -> list[int]:
    """Positions of the annotated samples, most disputed first (ties: dataset order).

    Raises:
        ConfigError: Nothing annotated yet.
    """
    scored = []
    for pos, ref in enumerate(source.refs):
        saved = _saved(kind, store, ref.key)
        if saved is _NONE or ref.key not in predictions:
            continue
        scored.append((-disagreement(kind, predictions[ref.key], saved), pos))
    if not scored:
        raise ConfigError(f"--review: {store.root} holds no annotation yet; annotate first")
    return [pos for _, pos in sorted(scored)]


_NONE = object()


def _saved(kind: str, store: Any, key: str) -> Any:
    if kind == "segmentation":
        return store.mask(key) if store.saved(key) else _NONE
    if kind == "classification":
        return store.labels.get(key, _NONE) if key in store.labels else _NONE
    return store.boxes[key] if key in store.boxes else _NONE
