"""Detection models: torchvision's detectors by name and a small Faster R-CNN.

Every factory takes the ``task`` (a :class:`thelper_vision.detection.Detection` with ``K``
classes) and returns a torchvision-style detector with ``K + 1`` classes (0 is the
background): ``model(images, targets)`` returns a loss dict in training mode and
``model(images)`` a list of ``{"boxes", "scores", "labels"}`` in evaluation mode. Images are
lists of ``(C, H, W)`` float tensors in ``[0, 1]``; the detectors resize them (``min_size``,
``max_size``) and normalise them (``image_mean``, ``image_std``) themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from thelper_vision.catalog import DETECTION_MODELS
from thelper_vision.models import _adapt_and_load, _num_classes

__all__ = ["DETECTION_MODELS", "torchvision_detection", "small_fasterrcnn", "detection_zoo"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _norm_stats(in_channels: int, mean: Sequence[float] | None,
                std: Sequence[float] | None) -> tuple[list[float], list[float]]:
    mean = list(mean) if mean is not None else [
        _IMAGENET_MEAN[i % 3] for i in range(in_channels)] if in_channels != 1 else [0.449]
    std = list(std) if std is not None else [
        _IMAGENET_STD[i % 3] for i in range(in_channels)] if in_channels != 1 else [0.226]
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"image_mean and image_std need {in_channels} values (got "
                         f"{len(mean)} and {len(std)})")
    return mean, std


def torchvision_detection(name: str, *, task: Any = None, in_channels: int = 3,
                          min_size: int | None = None, max_size: int | None = None,
                          image_mean: Sequence[float] | None = None,
                          image_std: Sequence[float] | None = None,
                          score_threshold: float = 0.05, detections_per_image: int = 100,
                          weights_path: str | None = None,
                          weights_strict: bool = True) -> nn.Module:
    """A ``torchvision.models.detection`` model for ``task.num_classes + 1`` classes.

    Built with ``weights=None, weights_backbone=None``: nothing is downloaded (a local state
    dict can be given as ``weights_path``); every backbone layer is trainable.

    Args:
        name: One of :data:`DETECTION_MODELS`.
        task: The detection task.
        in_channels: Input channels; when not 3 the first convolution is replaced.
        min_size: Images are resized so that their shorter side is ``min_size`` (R-CNN,
            RetinaNet, FCOS; torchvision's default 800 (320 for the ``_320_`` model)).
        max_size: Upper bound of the longer side after resizing.
        image_mean: Per-channel mean used by the detector's normalisation.
        image_std: Per-channel standard deviation used by the detector's normalisation.
        score_threshold: Detections scoring below are dropped at inference.
        detections_per_image: Most detections returned per image.
        weights_path: Local state dict.
        weights_strict: Fail on mismatched entries instead of skipping them.

    Raises:
        ValueError: Unknown name, no task, or ``min_size``/``max_size`` for an SSD model.
    """
    from torchvision.models import get_model

    family = DETECTION_MODELS.get(name)
    if family is None:
        raise ValueError(f"{name!r} is not a supported torchvision detector; choose one of "
                         f"{', '.join(DETECTION_MODELS)}")
    mean, std = _norm_stats(in_channels, image_mean, image_std)
    kwargs: dict[str, Any] = {"image_mean": mean, "image_std": std}
    if family == "rcnn":
        kwargs.update(box_score_thresh=score_threshold,
                      box_detections_per_img=detections_per_image)
    else:
        kwargs.update(score_thresh=score_threshold, detections_per_img=detections_per_image)
    if family == "ssd":
        if min_size is not None or max_size is not None:
            raise ValueError(f"{name} has a fixed input size; remove min_size/max_size")
    else:
        if min_size is not None:
            kwargs["min_size"] = min_size
        if max_size is not None:
            kwargs["max_size"] = max_size
    model = get_model(name, weights=None, weights_backbone=None,
                      num_classes=_num_classes(task, name) + 1, **kwargs)
    return _adapt_and_load(model, in_channels, weights_path, weights_strict)


class _SmallBackbone(nn.Sequential):
    """Stages of ``3x3 conv - BN - ReLU`` twice then 2x2 max pooling (stride 2 each)."""

    def __init__(self, in_channels: int, channels: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(channels):
            layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True), nn.Conv2d(w, w, 3, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = w
        super().__init__(*layers)
        self.out_channels = prev


def small_fasterrcnn(*, task: Any = None, in_channels: int = 3,
                     channels: Sequence[int] = (16, 32, 64, 64),
                     anchor_sizes: Sequence[int] = (16, 32, 64),
                     aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                     representation_size: int = 128, min_size: int = 256,
                     max_size: int = 1024, image_mean: Sequence[float] | None = None,
                     image_std: Sequence[float] | None = None, score_threshold: float = 0.05,
                     detections_per_image: int = 100, rpn_batch_size_per_image: int = 128,
                     box_batch_size_per_image: int = 64) -> nn.Module:
    """A Faster R-CNN (Ren, He, Girshick & Sun, NeurIPS 2015) with a small plain CNN
    backbone, trainable from scratch on a CPU.

    One feature map of stride ``2 ** (len(channels) - 1)``, anchors of ``anchor_sizes``
    pixels and ``aspect_ratios`` at every position, RoIAlign 7x7 and a two-layer box head
    of ``representation_size`` units (torchvision's ``FasterRCNN`` does the rest).

    Args:
        task: The detection task (``K`` classes).
        in_channels: Input channels.
        channels: Width of each backbone stage.
        anchor_sizes: Anchor box sizes in pixels (of the resized image).
        aspect_ratios: Anchor height/width ratios.
        representation_size: Width of the box head's hidden layers.
        min_size: Shorter image side after the detector's resizing.
        max_size: Upper bound of the longer side after resizing.
        image_mean: Per-channel mean of the detector's normalisation.
        image_std: Per-channel standard deviation of the normalisation.
        score_threshold: Detections scoring below are dropped at inference.
        detections_per_image: Most detections returned per image.
        rpn_batch_size_per_image: Anchors sampled per image to train the RPN.
        box_batch_size_per_image: Proposals sampled per image to train the box head
            (torchvision's default 512 makes RoIAlign's backward pass dominate on a CPU).
    """
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign

    num_classes = _num_classes(task, "small_fasterrcnn") + 1
    mean, std = _norm_stats(in_channels, image_mean, image_std)
    backbone = _SmallBackbone(in_channels, channels)
    anchors = AnchorGenerator(sizes=(tuple(int(s) for s in anchor_sizes),),
                              aspect_ratios=(tuple(float(a) for a in aspect_ratios),))
    pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=7, sampling_ratio=2)
    head = TwoMLPHead(backbone.out_channels * 7 * 7, representation_size)
    return FasterRCNN(backbone, rpn_anchor_generator=anchors, box_roi_pool=pool,
                      box_head=head,
                      box_predictor=FastRCNNPredictor(representation_size, num_classes),
                      min_size=min_size, max_size=max_size, image_mean=mean, image_std=std,
                      box_score_thresh=score_threshold,
                      box_detections_per_img=detections_per_image,
                      rpn_batch_size_per_image=rpn_batch_size_per_image,
                      box_batch_size_per_image=box_batch_size_per_image)


class _Zoo:
    """``detection_zoo.<name>`` is the factory of one torchvision detector (lazy
    ``"module:attr"`` references for the registry)."""

    def __getattr__(self, name: str) -> Any:
        if name not in DETECTION_MODELS:
            raise AttributeError(f"no torchvision detector named {name!r}")
        import functools

        return functools.partial(torchvision_detection, name)


detection_zoo = _Zoo()
