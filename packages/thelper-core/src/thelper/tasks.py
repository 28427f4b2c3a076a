"""Task objects: what a model must predict, and how the generic loop talks to it.

A task names the sample keys (``input_key``, ``label_key``), supplies the default loss and
metrics, extracts targets from a batch and decodes predictions. Datasets may provide their
own task (``dataset.task``); otherwise the config gives one in a ``task:`` block. When a
session has several datasets, their tasks are merged (:meth:`Task.merge`).

Tasks are plain Python (no torch, no pydantic at import) and serialise to plain dicts
(:meth:`Task.to_dict`), which checkpoints store. Their params models
(``ClassificationParams``, ``RegressionParams``) live in :mod:`thelper.builtin_params` with
the other built-in params models, so that validating a config does not import this module;
they remain importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from thelper.exceptions import ConfigError

__all__ = ["Task", "Classification", "MultiLabelClassification", "Regression",
           "task_from_dict"]


class Task:
    """Base task.

    Args:
        input_key: Key of the model input in each sample dict.
        label_key: Key of the target in each sample dict.
        meta_keys: Other keys carried along (paths, ids), never given to the model.
    """

    type_name: ClassVar[str] = "task"

    def __init__(self, input_key: str = "input", label_key: str = "label",
                 meta_keys: Sequence[str] = ()) -> None:
        self.input_key = str(input_key)
        self.label_key = str(label_key)
        self.meta_keys = [str(k) for k in meta_keys]

    # --------------------------------------------------------------- description
    def params(self) -> dict[str, Any]:
        """Constructor arguments (plain data)."""
        return {"input_key": self.input_key, "label_key": self.label_key,
                "meta_keys": list(self.meta_keys)}

    def to_dict(self) -> dict[str, Any]:
        """``{"type": ..., "params": {...}}``, suitable for configs and checkpoints."""
        return {"type": self.type_name, "params": self.params()}

    def merge(self, other: Task) -> Task:
        """Combine with another dataset's task.

        Raises:
            ConfigError: The tasks are not compatible.
        """
        if self.to_dict() != other.to_dict():
            raise ConfigError(f"incompatible tasks: {self.to_dict()} vs {other.to_dict()}")
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and self.to_dict() == other.to_dict()

    # ------------------------------------------------------------- the loop API
    def default_loss(self) -> tuple[str, dict[str, Any]]:
        """Registered loss ``(type, params)`` used when the config gives none."""
        raise NotImplementedError

    def get_input(self, batch: Mapping[str, Any]) -> Any:
        """The model input of a collated batch."""
        return batch[self.input_key]

    def get_target(self, batch: Mapping[str, Any]) -> Any:
        """The loss/metric target of a collated batch."""
        return batch[self.label_key]

    def decode(self, outputs: Any) -> Any:
        """Turn raw model outputs into predictions."""
        return outputs

    def collate_fn(self) -> Any:
        """Batch collation for loaders; ``None`` uses torch's ``default_collate``.

        Override for variable-size targets (e.g. detection boxes as a list per image).
        """
        return None

    def to_device(self, batch: Mapping[str, Any], device: Any, non_blocking: bool = False
                  ) -> dict[str, Any]:
        """Move the tensors of a collated batch to ``device`` (top-level tensors only)."""
        import torch

        return {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor)
                    else v) for k, v in batch.items()}

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        """Forward one batch: ``(outputs, targets, loss)``.

        The default is ``outputs = model(input)``, ``loss = loss_fn(outputs, target)``.
        Tasks whose models compute their own losses (e.g. torchvision detection models)
        override it. ``outputs`` and ``targets`` are what metrics receive.
        """
        inputs = self.get_input(batch)
        targets = self.get_target(batch)
        if hasattr(targets, "to"):
            targets = targets.to(device, non_blocking=True)
        outputs = model(inputs)
        return outputs, targets, loss_fn(outputs, targets)

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        """Check the first batch's outputs against the task (called once per session).

        Raises:
            ConfigError: The model's outputs cannot serve this task.
        """


class Classification(Task):
    """Single-label classification into ``len(class_names)`` classes.

    The model outputs logits of shape ``(N, C)`` (float), with ``C = len(class_names)``;
    targets are class indices of shape ``(N,)`` (int64). Labels given as class names are
    mapped to their index. Default loss: cross-entropy. Predictions: ``argmax`` over ``C``.

    Args:
        class_names: Class names in index order.
        input_key: Key of the input in each sample.
        label_key: Key of the label in each sample.
        meta_keys: Keys carried along for reports.
    """

    type_name = "classification"

    def __init__(self, class_names: Sequence[str], input_key: str = "input",
                 label_key: str = "label", meta_keys: Sequence[str] = ()) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ConfigError("a classification task needs at least one class name")
        self._index = {c: i for i, c in enumerate(self.class_names)}

    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return len(self.class_names)

    def params(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), **super().params()}

    def merge(self, other: Task) -> Task:
        """Merge class names (union, order of first appearance) when keys agree."""
        if not isinstance(other, Classification):
            raise ConfigError(f"cannot merge classification task with {other.to_dict()}")
        if (other.input_key, other.label_key) != (self.input_key, self.label_key):
            raise ConfigError(
                "datasets use different sample keys: "
                f"({self.input_key!r}, {self.label_key!r}) vs "
                f"({other.input_key!r}, {other.label_key!r}); give them the same task keys"
            )
        names = list(self.class_names) + [c for c in other.class_names
                                           if c not in self._index]
        return Classification(names, self.input_key, self.label_key,
                              sorted(set(self.meta_keys) | set(other.meta_keys)))

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "cross_entropy", {}

    def label_index(self, label: Any) -> int:
        """Class index of one label (an index or a class name).

        Raises:
            ConfigError: The label is neither a valid index nor a known class name.
        """
        if isinstance(label, str):
            if label not in self._index:
                raise ConfigError(f"label {label!r} is not one of the task's class names")
            return self._index[label]
        return int(label)

    def get_target(self, batch: Mapping[str, Any]) -> Any:
        import torch

        target = batch[self.label_key]
        if isinstance(target, list | tuple):
            target = torch.as_tensor([self.label_index(t) for t in target])
        return target.long()

    def decode(self, outputs: Any) -> Any:
        """Class indices ``(N,)`` (int64) from logits ``(N, C)``."""
        return outputs.argmax(dim=1)

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        shape = tuple(getattr(outputs, "shape", ()))
        if len(shape) < 2 or shape[1] != self.num_classes:
            raise ConfigError(
                f"model {model_name!r} outputs shape {shape} but the task has "
                f"{self.num_classes} classes; expected (N, {self.num_classes})"
            )


class MultiLabelClassification(Task):
    """Multi-label classification: each sample has any subset of ``len(class_names)`` labels.

    The model outputs logits of shape ``(N, C)`` (float), one independent binary decision per
    label, with ``C = len(class_names)``; targets are multi-hot vectors ``(N, C)`` (float32,
    1.0 where the label is present, 0.0 elsewhere). Default loss: binary cross-entropy on
    logits (``bce_with_logits``). Predictions: ``sigmoid(logits) >= threshold``.

    It is not a :class:`Classification`: splits are not stratified (a sample has no single
    class) and single-label metrics (accuracy, confusion matrix) do not apply; use the
    ``multilabel_f1`` and ``multilabel_map`` metrics.

    Args:
        class_names: Label names in index order (index ``i`` is the model's output ``i``).
        threshold: Probability at or above which a label is predicted, in ``(0, 1)``.
        input_key: Key of the input in each sample.
        label_key: Key of the multi-hot target in each sample.
        meta_keys: Keys carried along for reports.

    Raises:
        ConfigError: No class names, or a threshold outside ``(0, 1)``.
    """

    type_name = "multilabel_classification"

    def __init__(self, class_names: Sequence[str], threshold: float = 0.5,
                 input_key: str = "input", label_key: str = "label",
                 meta_keys: Sequence[str] = ()) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.class_names = [str(c) for c in class_names]
        if not self.class_names:
            raise ConfigError("a multilabel_classification task needs at least one class name")
        if not 0.0 < float(threshold) < 1.0:
            raise ConfigError(f"multilabel_classification threshold must be in (0, 1) (got "
                              f"{threshold})")
        self.threshold = float(threshold)

    @property
    def num_classes(self) -> int:
        """Number of labels ``C`` (models size their head from it)."""
        return len(self.class_names)

    def params(self) -> dict[str, Any]:
        return {"class_names": list(self.class_names), "threshold": self.threshold,
                **super().params()}

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "bce_with_logits", {}

    def get_target(self, batch: Mapping[str, Any]) -> Any:
        """Multi-hot targets ``(N, C)`` float32.

        Raises:
            ValueError: The targets do not hold ``C`` values per sample.
        """
        import torch

        target = batch[self.label_key]
        if not isinstance(target, torch.Tensor):
            target = torch.as_tensor(target)
        if target.ndim != 2 or target.shape[1] != self.num_classes:
            raise ValueError(
                f"multi-label targets ({self.label_key!r}) must be multi-hot vectors of "
                f"shape (N, {self.num_classes}); got {tuple(target.shape)}")
        return target.float()

    def decode(self, outputs: Any) -> Any:
        """Multi-hot predictions ``(N, C)`` (int64, 0/1) from logits ``(N, C)``."""
        import torch

        return (torch.sigmoid(outputs.float()) >= self.threshold).long()

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        shape = tuple(getattr(outputs, "shape", ()))
        if len(shape) != 2 or shape[1] != self.num_classes:
            raise ConfigError(
                f"model {model_name!r} outputs shape {shape} but the multi-label task has "
                f"{self.num_classes} labels; expected (N, {self.num_classes})"
            )


class Regression(Task):
    """Regression of real values of a fixed shape.

    The model outputs ``(N, *target_shape)`` float; targets have the same shape (targets of
    ``(N,)`` are reshaped to ``(N, 1)`` for ``target_shape: [1]``). Default loss: mean
    squared error. With ``target_mean``/``target_std`` the model learns standardised targets
    (the loss compares ``(y - mean) / std``), while metrics, predictions and :meth:`decode`
    are in target units. At evaluation, predictions are clamped to
    ``[target_min, target_max]`` when given (training leaves them free, since clamping
    would stop the gradient).

    Args:
        target_shape: Shape of one target, without the batch dimension.
        target_min: Lower bound(s) of valid values.
        target_max: Upper bound(s) of valid values.
        target_mean: Mean(s) used to standardise targets for the loss.
        target_std: Standard deviation(s) used with ``target_mean``.
        input_key: Key of the input in each sample.
        label_key: Key of the targets in each sample.
        meta_keys: Keys carried along for reports.
    """

    type_name = "regression"

    def __init__(self, target_shape: Sequence[int] = (1,), target_min: Any = None,
                 target_max: Any = None, target_mean: Any = None, target_std: Any = None,
                 input_key: str = "input", label_key: str = "target",
                 meta_keys: Sequence[str] = ()) -> None:
        super().__init__(input_key, label_key, meta_keys)
        self.target_shape = [int(s) for s in target_shape]
        if not self.target_shape or any(s < 1 for s in self.target_shape):
            raise ConfigError(f"regression target_shape must hold sizes >= 1 (got "
                              f"{list(target_shape)})")
        self.target_min = target_min
        self.target_max = target_max
        if (target_mean is None) != (target_std is None):
            raise ConfigError("regression: give both target_mean and target_std, or neither")
        self.target_mean = target_mean
        self.target_std = target_std

    @property
    def num_outputs(self) -> int:
        """Values predicted per sample (product of ``target_shape``)."""
        n = 1
        for s in self.target_shape:
            n *= s
        return n

    @property
    def num_classes(self) -> int:
        """Same as :attr:`num_outputs`: models that size their head from ``num_classes``
        (``mlp``, ``simple_cnn``, torchvision classifiers) then output one value each."""
        return self.num_outputs

    def params(self) -> dict[str, Any]:
        return {"target_shape": list(self.target_shape), "target_min": self.target_min,
                "target_max": self.target_max, "target_mean": self.target_mean,
                "target_std": self.target_std, **super().params()}

    def default_loss(self) -> tuple[str, dict[str, Any]]:
        return "mse", {}

    def _vector(self, value: Any, like: Any) -> Any:
        import torch

        t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        return t.reshape(self.target_shape) if t.numel() > 1 else t

    def get_target(self, batch: Mapping[str, Any]) -> Any:
        import torch

        target = batch[self.label_key]
        if not isinstance(target, torch.Tensor):
            target = torch.as_tensor(target)
        target = target.float()
        return target.reshape(target.shape[0], *self.target_shape)

    def _denormalise(self, outputs: Any) -> Any:
        if self.target_mean is None:
            return outputs
        return outputs * self._vector(self.target_std, outputs) + \
            self._vector(self.target_mean, outputs)

    def _clamp(self, outputs: Any) -> Any:
        if self.target_min is None and self.target_max is None:
            return outputs
        low = self._vector(self.target_min, outputs) if self.target_min is not None else None
        high = self._vector(self.target_max, outputs) if self.target_max is not None else None
        return outputs.clamp(min=low, max=high)

    def decode(self, outputs: Any) -> Any:
        """Predictions in target units, clamped to ``[target_min, target_max]``.

        Args:
            outputs: Raw model outputs ``(N, *target_shape)`` or ``(N, num_outputs)``
                float, standardised when ``target_mean``/``target_std`` are set.

        Returns:
            ``(N, *target_shape)`` float: ``outputs * target_std + target_mean``, clamped.
        """
        if outputs.ndim == 2 and outputs.shape[1] == self.num_outputs and \
                len(self.target_shape) > 1:
            outputs = outputs.reshape(outputs.shape[0], *self.target_shape)
        return self._clamp(self._denormalise(outputs))

    def step(self, model: Any, loss_fn: Any, batch: Mapping[str, Any], device: Any
             ) -> tuple[Any, Any, Any]:
        """Outputs in target units (clamped at evaluation), targets ``(N, *target_shape)``,
        loss on standardised values when ``target_mean``/``target_std`` are set."""
        targets = self.get_target(batch).to(device, non_blocking=True)
        raw = model(self.get_input(batch))
        if raw.ndim == 2 and raw.shape[1] == self.num_outputs and len(self.target_shape) > 1:
            raw = raw.reshape(raw.shape[0], *self.target_shape)
        if self.target_mean is not None:
            scaled = (targets - self._vector(self.target_mean, targets)) / \
                self._vector(self.target_std, targets)
            loss = loss_fn(raw, scaled)
        else:
            loss = loss_fn(raw, targets)
        outputs = self._denormalise(raw)
        if not model.training:
            outputs = self._clamp(outputs)
        return outputs, targets, loss

    def check_outputs(self, outputs: Any, model_name: str) -> None:
        shape = tuple(getattr(outputs, "shape", ()))
        if tuple(shape[1:]) != tuple(self.target_shape):
            raise ConfigError(
                f"model {model_name!r} outputs shape {shape} but the regression task expects "
                f"(N, {', '.join(map(str, self.target_shape))}); fix the model or the task's "
                "target_shape"
            )


_TASK_TYPES: dict[str, type[Task]] = {"classification": Classification,
                                       "multilabel_classification": MultiLabelClassification,
                                       "regression": Regression}


def __getattr__(name: str) -> Any:  # the params models moved to thelper.builtin_params
    if name in ("ClassificationParams", "MultiLabelClassificationParams", "RegressionParams"):
        from thelper import builtin_params

        return getattr(builtin_params, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def task_from_dict(data: Mapping[str, Any]) -> Task:
    """Rebuild a core task from :meth:`Task.to_dict` output (e.g. from a checkpoint).

    Raises:
        ConfigError: Unknown task type.
    """
    kind = data.get("type")
    if kind not in _TASK_TYPES:
        from thelper.plugins import get_plugin_manager

        registry = get_plugin_manager().registry
        return registry.build("task", str(kind), dict(data.get("params") or {}))
    return _TASK_TYPES[kind](**dict(data.get("params") or {}))
