"""Object detection: the task, its collation and its step through torchvision detectors.

Boxes are ``XYXY`` in absolute pixels of the (transformed) image: ``(x_min, y_min, x_max,
y_max)`` float32, with ``x_max > x_min`` and ``y_max > y_min``. Labels are class indices
``0..K-1`` into ``class_names`` (no background class: the task adds 1 for torchvision's
detectors, whose label 0 is the background, and removes it from their predictions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from thelper.exceptions import ConfigError
from thelper.tasks import Task
from thelper_vision.joint import IMAGE, as_float_image, plain
from thelper_vision.tasks import class_palette, parse_color_map

__all__ = ["Detection", "DetectionCollate", "DetectionLoss", "to_xyxy"]


def to_xyxy(boxes: Any) -> torch.Tensor:
    """Plain float32 ``(K, 4)`` XYXY boxes from a ``tv_tensors.BoundingBoxes`` (any format)
    or a tensor/list already in XYXY."""
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    if isinstance(boxes, tv_tensors.BoundingBoxes):
        if boxes.format != tv_tensors.BoundingBoxFormat.XYXY:
            boxes = F.convert_bounding_box_format(boxes,
                                                  new_format=tv_tensors.BoundingBoxFormat.XYXY)
        return plain(boxes).float().reshape(-1, 4)
    return torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)


class DetectionCollate:
    """Collate detection samples into lists (images may differ in size, box counts vary).

    Batch: ``{input_key: [image (C, H, W) float32], label_key: [{"boxes": (K, 4) float32,
    "labels": (K,) int64}], meta_key: [value]}``. Boxes whose width or height is below
    ``min_box_size`` pixels (e.g. cropped away by a transform) are dropped with their labels.
    """

    def __init__(self, input_key: str, label_key: str, min_box_size: float = 1.0) -> None:
        self.input_key = input_key
        self.label_key = label_key
        self.min_box_size = min_box_size

    def _one(self, sample: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, Any], dict]:
        value = sample[self.input_key]
        rest = {k: v for k, v in sample.items() if k != self.input_key}
        if isinstance(value, Mapping):
            image = value[IMAGE]
            boxes, labels = value.get("boxes"), value.get("labels")
        else:
            image = value
            target = rest.pop(self.label_key, {}) or {}
            boxes, labels = target.get("boxes"), target.get("labels")
        boxes = to_xyxy(boxes if boxes is not None else torch.zeros(0, 4))
        labels = torch.as_tensor(plain(labels) if labels is not None else
                                 torch.zeros(0), dtype=torch.int64).reshape(-1)
        if labels.numel() != boxes.shape[0]:
            raise ValueError(f"{boxes.shape[0]} boxes but {labels.numel()} labels in a sample")
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh >= self.min_box_size).all(dim=1)
        return as_float_image(plain(image)), {"boxes": boxes[keep], "labels": labels[keep]}, rest

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        images, targets, metas = [], [], []
        for s in samples:
            if s is None:
                continue
            image, target, rest = self._one(s)
            images.append(image)
            targets.append(target)
            metas.append(rest)
        batch: dict[str, Any] = {self.input_key: images, self.label_key: targets}
        for key in (metas[0] if metas else {}):
            batch[key] = [m.get(key) for m in metas]
        return batch


class DetectionLoss:
    """Weighted sum of the loss dict a torchvision detector returns in training mode.

    Faster R-CNN returns ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``,
    ``loss_rpn_box_reg``; RetinaNet and FCOS ``classification`` and ``bbox_regression``
    (FCOS also ``bbox_ctrness``); SSD ``bbox_regression`` and ``classification``.

    Args:
        weights: ``{loss name: weight}``; unnamed losses have weight 1.
    """

    accepts_loss_dict = True

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def __call__(self, losses: Mapping[str, torch.Tensor], targets: Any = None) -> torch.Tensor:
        """Weighted sum of ``losses``.

        Raises:
            TypeError: ``losses`` is not a loss dict (e.g. detections given by a caller that
                bypassed :meth:`Detection.step`).
        """
        if not isinstance(losses, Mapping):
            raise TypeError("detection_loss sums the loss dict a detector returns in training "
                            f"mode (got {type(losses).__name__}); call the detection task's "
                            "step(), which runs the detector in the right mode")
        return sum(v * self.weights.get(k, 1.0) for k, v in losses.items())  # type: ignore

    def __repr__(self) -> str:
        return f"DetectionLoss(weights={self.weights})"


def _frozen_norm_forward(model: nn.Module, images: list, targets: list) -> Any:
    """Training-mode forward (which returns losses) with batch norm and dropout kept in
    evaluation mode, so that computing a validation loss changes no running statistics."""
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.modules.dropout._DropoutNd):
            m.eval()
    try:
        with torch.no_grad():
            return model(images, targets)
    finally:
        model.eval()


class Detection(Task):
    """Object detection: boxes and class labels per image.

    Samples hold an image and its boxes, usually as a joint sample ``{"image": Image,
    "boxes": BoundingBoxes, "labels": (K,) int64}`` under ``input_key`` so that the
    transforms move boxes with the image (add ``sanitize_boxes`` after random crops).
    Batches are lists (see :class:`DetectionCollate`). The model is a torchvision-style
    detector: in training mode ``model(images, targets)`` returns a dict of losses (summed
    by the ``detection_loss`` loss, the default); in evaluation mode ``model(images)``
    returns ``[{"boxes", "scores", "labels"}]`` per image, which the metrics receive as
    outputs (labels shifted back to ``0..K-1``). Targets given to metrics are
    ``[{"boxes", "labels", "image"}]`` (the input image, for overlays).

    Training steps give no outputs (``None``): detection metrics are computed on the
    validation and test splits only. The validation loss is that of a second,
    training-mode forward pass without gradients and with batch norm frozen
    (``eval_loss: true``, the default, costs about one more forward pass per batch); with
    ``eval_loss: false`` the validation loss is reported as 0 (monitor ``map`` instead).

    Args:
        class_names: Object classes (no background).
        input_key: Key of the image (or joint sample).
        label_key: Key of the per-image targets in each batch.
        meta_keys: Keys carried along (e.g. ``path``, ``image_id``).
        color_map: ``{class name: [r, g, b]}`` for drawing boxes.
        min_box_size: Boxes narrower or lower than this (pixels) are dropped at collation.
        eval_loss: Compute a validation loss (see above).
    """

    type_name = "detection"

    def __init__(self, class_names: Sequence[str], input_key: str = "input",
                 label_key: str = "target", meta_keys: Sequence[str] = (),
                 color_map: Mapping[str, Sequence[int]] | None = None,
                 min_box_size: float = 1.0, eval_loss: bool = True) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ConfigError("a detection task needs at least one class name")
        self.color_map = parse_color_map(color_map, self.class_names)
        self.min_box_size = float(min_box_size)
        self.eval_loss = bool(eval_loss)

    @property
    def num_classes(self) -> int:
        """Number of object classes ``K`` (torchvision detectors get ``K + 1``)."""
        return len(self.class_names)

    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour of each class index (the first default colour is the background's)."""
        return class_palette(self.class_names, self.color_map, offset=1)

    def params(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), **super().params(),
                "color_map": dict(self.color_map), "min_box_size": self.min_box_size,
                "eval_loss": self.eval_loss}

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "detection_loss", {}

    def collate_fn(self) -> Any:
        return DetectionCollate(self.input_key, self.label_key, self.min_box_size)

    def to_device(self, batch: Mapping[str, Any], device: Any, non_blocking: bool = False
                  ) -> dict[str, Any]:
        """Move the image list and every target tensor to ``device``."""
        out = dict(batch)
        out[self.input_key] = [x.to(device, non_blocking=non_blocking)
                               for x in batch[self.input_key]]
        out[self.label_key] = [{k: (v.to(device, non_blocking=non_blocking)
                                    if isinstance(v, torch.Tensor) else v)
                                for k, v in t.items()} for t in batch[self.label_key]]
        return out

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        """Training: ``(None, targets, loss)``; evaluation: ``(detections, targets, loss)``."""
        if not getattr(loss_fn, "accepts_loss_dict", False):
            raise ConfigError("detection models compute their own losses: remove "
                              "trainer.optimization.loss or use {type: detection_loss}")
        images = batch[self.input_key]
        targets = batch[self.label_key]
        model_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
        if model.training:
            return None, targets, loss_fn(model(images, model_targets))
        detections = model(images)
        outputs = [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1}
                   for d in detections]
        if self.eval_loss:
            loss = loss_fn(_frozen_norm_forward(model, images, model_targets))
        else:
            loss = torch.zeros((), device=images[0].device if images else "cpu")
        targets = [{**t, "image": image} for t, image in zip(targets, images, strict=True)]
        return outputs, targets, loss

    def decode(self, outputs: Any) -> Any:
        """Detections as returned by :meth:`step` (already decoded)."""
        return outputs

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        if outputs is None:
            return
        if not isinstance(outputs, list) or (outputs and not {"boxes", "scores", "labels"}
                                              <= set(outputs[0])):
            raise ConfigError(f"model {model_name!r} does not return torchvision-style "
                              "detections ([{boxes, scores, labels}] per image)")
