"""Params models of the core's optimizers and learning-rate schedulers.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Literal

from pydantic import Field

from thelper.params import Params

__all__ = [
    "SGDParams", "AdamParams", "AdamWParams", "RMSpropParams", "AdagradParams", "StepLRParams",
    "MultiStepLRParams", "ExponentialLRParams", "CosineAnnealingLRParams",
    "ReduceLROnPlateauParams",
]


class SGDParams(Params):
    """``torch.optim.SGD``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    momentum: float = Field(default=0.0, ge=0.0)
    """Momentum factor."""
    dampening: float = Field(default=0.0, ge=0.0)
    """Dampening for momentum."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    nesterov: bool = False
    """Use Nesterov momentum."""


class AdamParams(Params):
    """``torch.optim.Adam`` (Kingma & Ba, 2015)."""

    lr: float = Field(default=1e-3, gt=0.0)
    """Learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Coefficients of the running averages of the gradient and its square."""
    eps: float = Field(default=1e-8, gt=0.0)
    """Term added to the denominator for numerical stability."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    amsgrad: bool = False
    """Use the AMSGrad variant."""


class AdamWParams(AdamParams):
    """``torch.optim.AdamW`` (Loshchilov & Hutter, 2019)."""

    weight_decay: float = Field(default=0.01, ge=0.0)
    """Decoupled weight decay."""


class RMSpropParams(Params):
    """``torch.optim.RMSprop``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    alpha: float = Field(default=0.99, gt=0.0, le=1.0)
    """Smoothing constant."""
    eps: float = Field(default=1e-8, gt=0.0)
    """Term added to the denominator for numerical stability."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    momentum: float = Field(default=0.0, ge=0.0)
    """Momentum factor."""
    centered: bool = False
    """Normalise by an estimate of the gradient's variance."""


class AdagradParams(Params):
    """``torch.optim.Adagrad``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    lr_decay: float = Field(default=0.0, ge=0.0)
    """Learning-rate decay."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""


class StepLRParams(Params):
    """``torch.optim.lr_scheduler.StepLR``: multiply the lr by ``gamma`` every ``step_size``
    epochs."""

    step_size: int = Field(ge=1)
    """Period of the decay, in epochs."""
    gamma: float = Field(default=0.1, gt=0.0)
    """Multiplicative factor."""


class MultiStepLRParams(Params):
    """``torch.optim.lr_scheduler.MultiStepLR``."""

    milestones: list[int] = Field(min_length=1)
    """Epochs at which the lr is multiplied by ``gamma``."""
    gamma: float = Field(default=0.1, gt=0.0)
    """Multiplicative factor."""


class ExponentialLRParams(Params):
    """``torch.optim.lr_scheduler.ExponentialLR``."""

    gamma: float = Field(gt=0.0)
    """Multiplicative factor applied every epoch."""


class CosineAnnealingLRParams(Params):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (Loshchilov & Hutter, 2017)."""

    T_max: int = Field(ge=1)
    """Half-period of the cosine, in epochs."""
    eta_min: float = Field(default=0.0, ge=0.0)
    """Minimum learning rate."""


class ReduceLROnPlateauParams(Params):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``: reduce the lr when ``step_metric``
    stops improving."""

    mode: Literal["min", "max"] | None = None
    """``min`` or ``max``; defaults to the step metric's goal."""
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Multiplicative factor of the reduction."""
    patience: int = Field(default=10, ge=0)
    """Epochs without improvement before reducing."""
    threshold: float = Field(default=1e-4, ge=0.0)
    """Minimum relative change that counts as an improvement."""
    cooldown: int = Field(default=0, ge=0)
    """Epochs to wait after a reduction."""
    min_lr: float = Field(default=0.0, ge=0.0)
    """Lower bound of the learning rate."""
