"""Dense image tasks: segmentation, super-resolution and autoencoding.

Their datasets store joint samples (see :mod:`thelper_vision.joint`) so that the loader
transforms move images and targets together; each task's :meth:`collate_fn` unpacks them.
Integer images still present at collation are scaled to float32 ``[0, 1]``.
Detection lives in :mod:`thelper_vision.detection`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from thelper.exceptions import ConfigError, DataError
from thelper.tasks import Task
from thelper_vision.joint import DenseCollate, as_float_image

__all__ = ["Segmentation", "SuperResolution", "Autoencoding", "DEFAULT_COLORS", "model_output",
           "class_palette", "parse_color_map"]

#: Default class colours (RGB), cycled when a task has more classes: black background, then
#: the colours of matplotlib's ``tab10``.
DEFAULT_COLORS: list[tuple[int, int, int]] = [
    (0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34),
    (23, 190, 207),
]


def parse_color_map(color_map: Mapping[str, Sequence[int]] | None,
                    class_names: Sequence[str]) -> dict[str, list[int]]:
    """``{class name: [r, g, b]}`` from a config's ``color_map``.

    Raises:
        ConfigError: A name is not one of ``class_names``.
    """
    parsed = {str(k): [int(c) for c in v] for k, v in (color_map or {}).items()}
    unknown = sorted(set(parsed) - set(class_names))
    if unknown:
        raise ConfigError(f"color_map names unknown classes: {', '.join(unknown)}")
    return parsed


def class_palette(class_names: Sequence[str], color_map: Mapping[str, Sequence[int]],
                  offset: int = 0) -> list[tuple[int, int, int]]:
    """RGB colour of each class index: ``color_map``'s, else ``DEFAULT_COLORS[i + offset]``
    (cycling); detection uses ``offset=1`` to leave the first colour to the background."""
    out = []
    for i, name in enumerate(class_names):
        rgb = color_map.get(name) or DEFAULT_COLORS[(i + offset) % len(DEFAULT_COLORS)]
        out.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return out


def model_output(outputs: Any) -> Any:
    """The tensor of a model's output: ``outputs["out"]`` for torchvision segmentation
    models (which return ``{"out": ..., "aux": ...}``), else ``outputs`` itself."""
    if isinstance(outputs, Mapping):
        if "out" not in outputs:
            raise ConfigError(f"the model returned a dict without 'out' (keys: "
                              f"{', '.join(map(str, outputs))})")
        return outputs["out"]
    return outputs


class Segmentation(Task):
    """Semantic segmentation: one class per pixel.

    Samples hold an image ``(C, H, W)`` and a mask ``(H, W)`` of class indices (uint8 or
    int64), usually as a joint sample ``{"image": Image, "mask": Mask}`` under ``input_key``.
    Batches: ``batch[input_key]`` ``(N, C, H, W)`` float32 and ``batch[label_key]``
    ``(N, H, W)`` int64. The model outputs logits ``(N, K, H, W)`` with
    ``K = len(class_names)`` (a dict with key ``out``, as torchvision's segmentation models
    return, is accepted). Pixels equal to ``ignore_index`` ("dontcare") count in neither the
    loss nor the metrics. Default loss: cross-entropy with ``ignore_index``. Predictions:
    ``argmax`` over ``K``.

    Args:
        class_names: Class names; mask value ``i`` is ``class_names[i]``.
        input_key: Key of the image (or joint sample) in each sample.
        label_key: Key of the mask in each batch.
        meta_keys: Keys carried along (e.g. ``path``).
        ignore_index: Mask value of pixels to ignore (``None``: none).
        color_map: ``{class name: [r, g, b]}`` used to draw masks (others get defaults).

    Raises:
        ConfigError: No class names, or a colour map naming unknown classes.
    """

    type_name = "segmentation"

    def __init__(self, class_names: Sequence[str], input_key: str = "input",
                 label_key: str = "mask", meta_keys: Sequence[str] = (),
                 ignore_index: int | None = 255,
                 color_map: Mapping[str, Sequence[int]] | None = None) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ConfigError("a segmentation task needs at least one class name")
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        if self.ignore_index is not None and 0 <= self.ignore_index < len(self.class_names):
            raise ConfigError(f"ignore_index {self.ignore_index} is the index of class "
                              f"{self.class_names[self.ignore_index]!r}; use a value outside "
                              f"0..{len(self.class_names) - 1} (e.g. 255)")
        self.color_map = parse_color_map(color_map, self.class_names)

    @property
    def num_classes(self) -> int:
        """Number of classes ``K``."""
        return len(self.class_names)

    def palette(self) -> list[tuple[int, int, int]]:
        """RGB colour of each class index."""
        return class_palette(self.class_names, self.color_map)

    def params(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), **super().params(),
                "ignore_index": self.ignore_index, "color_map": dict(self.color_map)}

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "cross_entropy", {"ignore_index": -100 if self.ignore_index is None
                                 else self.ignore_index}

    def _post(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample[self.input_key] = as_float_image(sample[self.input_key])
        mask = sample.get(self.label_key)
        if mask is not None:
            mask = torch.as_tensor(mask)
            if mask.ndim == 3 and mask.shape[0] == 1:
                mask = mask[0]
            mask = mask.long()
            bad = (mask >= self.num_classes) & (mask != (self.ignore_index
                                                         if self.ignore_index is not None
                                                         else -1))
            if bool(bad.any()) or bool((mask < 0).any()):
                values = sorted(set(mask[bad | (mask < 0)].unique().tolist()))[:8]
                where = f" ({sample['path']})" if "path" in sample else ""
                raise DataError(
                    f"segmentation mask{where} holds values {values} that are neither class "
                    f"indices 0..{self.num_classes - 1} nor ignore_index {self.ignore_index}; "
                    "fix the class names or the masks")
            sample[self.label_key] = mask
        return sample

    def collate_fn(self) -> Any:
        """Unpack joint samples; images float32 ``(N, C, H, W)``, masks int64 ``(N, H, W)``."""
        return DenseCollate(self.input_key, {"mask": self.label_key}, self._post)

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        """Logits ``(N, K, H, W)``, masks ``(N, H, W)`` and the loss."""
        targets = batch[self.label_key].to(device, non_blocking=True).long()
        outputs = model_output(model(batch[self.input_key]))
        return outputs, targets, loss_fn(outputs, targets)

    def decode(self, outputs: Any) -> Any:
        """Class index maps ``(N, H, W)`` int64 from logits ``(N, K, H, W)``."""
        return model_output(outputs).argmax(dim=1)

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        shape = tuple(getattr(outputs, "shape", ()))
        if len(shape) != 4 or shape[1] != self.num_classes:
            raise ConfigError(
                f"model {model_name!r} outputs shape {shape} but the segmentation task has "
                f"{self.num_classes} classes; expected logits (N, {self.num_classes}, H, W)")


class _ImageToImage(Task):
    """Shared code of tasks whose model maps an image to an image of the same size."""

    def __init__(self, input_key: str, label_key: str, meta_keys: Sequence[str],
                 target_min: float | None, target_max: float | None) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.target_min = target_min
        self.target_max = target_max

    def params(self) -> dict[str, Any]:
        return {**super().params(), "target_min": self.target_min,
                "target_max": self.target_max}

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "mse", {}

    def decode(self, outputs: Any) -> Any:
        """Outputs clamped to ``[target_min, target_max]`` (where set)."""
        if self.target_min is None and self.target_max is None:
            return outputs
        return outputs.clamp(self.target_min, self.target_max)

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        shape = tuple(getattr(outputs, "shape", ()))
        if len(shape) != 4:
            raise ConfigError(f"model {model_name!r} outputs shape {shape}; the "
                              f"{self.type_name} task expects images (N, C, H, W)")


class SuperResolution(_ImageToImage):
    """Super-resolution: restore a high-resolution image from a degraded one.

    Samples hold the low-resolution input and the high-resolution target, both
    ``(C, H, W)`` (inputs upsampled to the target size beforehand, as for SRCNN), usually as
    a joint sample ``{"image": Image, "target": Image}`` so that crops and flips move both.
    Batches: float32 ``(N, C, H, W)`` under ``input_key`` and ``label_key``. The model
    outputs ``(N, C, H, W)``. Default loss: mean squared error. At evaluation the outputs
    are clamped to ``[target_min, target_max]`` (the intensity range, ``[0, 1]`` by default)
    before the metrics see them.

    Args:
        input_key: Key of the input image (or joint sample).
        label_key: Key of the target image in each batch.
        meta_keys: Keys carried along.
        target_min: Lowest valid intensity.
        target_max: Highest valid intensity.
    """

    type_name = "super_resolution"

    def __init__(self, input_key: str = "input", label_key: str = "target",
                 meta_keys: Sequence[str] = (), target_min: float | None = 0.0,
                 target_max: float | None = 1.0) -> None:
        super().__init__(input_key, label_key, meta_keys, target_min, target_max)

    def _post(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample[self.input_key] = as_float_image(sample[self.input_key])
        if self.label_key in sample:
            sample[self.label_key] = as_float_image(sample[self.label_key])
        return sample

    def collate_fn(self) -> Any:
        """Unpack joint samples; both images float32 ``(N, C, H, W)``."""
        return DenseCollate(self.input_key, {"target": self.label_key}, self._post)

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        targets = batch[self.label_key].to(device, non_blocking=True)
        outputs = model(batch[self.input_key])
        loss = loss_fn(outputs, targets)
        return (outputs if model.training else self.decode(outputs)), targets, loss


class Autoencoding(_ImageToImage):
    """Autoencoding (reconstruction): the target is the input itself.

    Batches hold ``batch[input_key]`` ``(N, C, H, W)`` (or any shape the model maps to
    itself); the model outputs a tensor of the same shape. Default loss: mean squared error
    between output and input. At evaluation the outputs are clamped to
    ``[target_min, target_max]`` where set. Any dataset works (e.g. scikit-learn's digits
    with a ``task: {type: autoencoding}`` block); the labels are ignored.

    Args:
        input_key: Key of the input (image or joint sample).
        meta_keys: Keys carried along.
        target_min: Lowest valid value.
        target_max: Highest valid value.
    """

    type_name = "autoencoding"

    def __init__(self, input_key: str = "input", meta_keys: Sequence[str] = (),
                 target_min: float | None = None, target_max: float | None = None) -> None:
        super().__init__(input_key, input_key, meta_keys, target_min, target_max)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("label_key")
        return out

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        """Any shape: the loss compares outputs with inputs and names a mismatch."""

    def _post(self, sample: dict[str, Any]) -> dict[str, Any]:
        sample[self.input_key] = as_float_image(sample[self.input_key])
        return sample

    def collate_fn(self) -> Any:
        """Unpack joint samples (the image only); integer images become float32."""
        return DenseCollate(self.input_key, {}, self._post)

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        inputs = batch[self.input_key]
        outputs = model(inputs)
        loss = loss_fn(outputs, inputs)
        return (outputs if model.training else self.decode(outputs)), inputs, loss
