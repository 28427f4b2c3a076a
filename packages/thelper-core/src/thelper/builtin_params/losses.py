"""Params models of the core's losses.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Literal

from pydantic import Field

from thelper.params import Params

__all__ = ["CrossEntropyParams", "BCEWithLogitsParams", "ReductionParams", "SmoothL1Params"]


Reduction = Literal["mean", "sum"]


class CrossEntropyParams(Params):
    """``torch.nn.CrossEntropyLoss``."""

    weight: list[float] | None = None
    """Per-class weights (length = number of classes)."""
    ignore_index: int = -100
    """Target value that does not contribute to the loss."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Label smoothing amount (Szegedy et al., 2016)."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class BCEWithLogitsParams(Params):
    """``torch.nn.BCEWithLogitsLoss``."""

    pos_weight: list[float] | None = None
    """Weight of positive examples per class."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class ReductionParams(Params):
    """A loss with only a reduction mode."""

    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class SmoothL1Params(Params):
    """``torch.nn.SmoothL1Loss``."""

    beta: float = Field(default=1.0, ge=0.0)
    """Threshold between the L1 and L2 regimes."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""
