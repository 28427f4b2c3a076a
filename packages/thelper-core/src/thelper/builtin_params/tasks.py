"""Params models of the core's tasks (``classification``, ``multilabel_classification``,
``regression``).

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Any

from pydantic import Field, field_validator

from thelper.params import Params, unique_class_names

__all__ = ["ClassificationParams", "MultiLabelClassificationParams", "RegressionParams"]


def _key_as_str(value: Any) -> Any:
    """Sample keys are strings; 0.6 configs name tuple positions as ints (``input_key: 0``)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ClassificationParams(Params):
    """Params of the ``classification`` task."""

    class_names: list[str] = Field(min_length=1)
    """Class names, in label-index order (index i is the model's output i)."""
    input_key: str = "input"
    """Key of the image/features in each sample (``"0"`` for tuple samples)."""
    label_key: str = "label"
    """Key of the class index (or class name) in each sample (``"1"`` for tuple samples)."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along for reports (e.g. ``path``)."""

    @field_validator("class_names", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for v in value]
        return value

    @field_validator("class_names")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return unique_class_names(value)

    _key_str = field_validator("input_key", "label_key", mode="before")(_key_as_str)


class MultiLabelClassificationParams(Params):
    """Params of the ``multilabel_classification`` task (multi-hot targets, one sigmoid per
    label)."""

    class_names: list[str] = Field(min_length=1)
    """Label names, in index order (index i is the model's output i and the target's
    position i)."""
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Probability at or above which a label is predicted."""
    input_key: str = "input"
    """Key of the input in each sample."""
    label_key: str = "label"
    """Key of the multi-hot target vector ``(C,)`` (0/1 floats) in each sample."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along for reports (e.g. ``path``)."""

    _stringify = field_validator("class_names", mode="before")(
        ClassificationParams._stringify.__func__)
    _unique = field_validator("class_names")(ClassificationParams._unique.__func__)
    _key_str = field_validator("input_key", "label_key", mode="before")(_key_as_str)


Bound = float | list[float]


class RegressionParams(Params):
    """Params of the ``regression`` task."""

    target_shape: list[int] = Field(default_factory=lambda: [1])
    """Shape of one target (and of one prediction) without the batch dimension, e.g. ``[1]``
    for a scalar, ``[3]`` for three values per sample."""
    target_min: Bound | None = None
    """Lowest valid value (one number, or one per output): evaluation predictions are
    clamped to it."""
    target_max: Bound | None = None
    """Highest valid value (one number, or one per output): evaluation predictions are
    clamped to it."""
    target_mean: Bound | None = None
    """Standardise targets for the loss: the model predicts ``(y - mean) / std``; metrics and
    predictions are in target units. One number or one per output."""
    target_std: Bound | None = None
    """Standard deviation used with ``target_mean`` (strictly positive)."""
    input_key: str = "input"
    """Key of the input in each sample."""
    label_key: str = "target"
    """Key of the target values in each sample."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along for reports (e.g. ``path``)."""

    @field_validator("target_shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"target_shape sizes must be >= 1 (got {value})")
        return value

    @field_validator("target_std")
    @classmethod
    def _std_positive(cls, value: Bound | None) -> Bound | None:
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v <= 0 for v in values):
            raise ValueError(f"target_std must be > 0 (got {value})")
        return value

    _key_str = field_validator("input_key", "label_key", mode="before")(_key_as_str)
