"""Factories for torch losses and schedulers that need small adaptations from plain params.

Optimizers and most losses/schedulers are registered directly as torch classes; the
functions here only convert list params to tensors or pick defaults from the session.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["cross_entropy", "bce_with_logits", "reduce_lr_on_plateau"]


def cross_entropy(weight: list[float] | None = None, ignore_index: int = -100,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> torch.nn.Module:
    """``torch.nn.CrossEntropyLoss`` on logits ``(N, C)`` and class indices ``(N,)`` (int64).

    Args:
        weight: Per-class weights, length ``C``.
        ignore_index: Target value ignored by the loss.
        label_smoothing: Smoothing in ``[0, 1)``.
        reduction: ``mean`` or ``sum``.
    """
    w = torch.tensor(weight, dtype=torch.float32) if weight is not None else None
    return torch.nn.CrossEntropyLoss(weight=w, ignore_index=ignore_index,
                                     label_smoothing=label_smoothing, reduction=reduction)


def bce_with_logits(pos_weight: list[float] | None = None,
                    reduction: str = "mean") -> torch.nn.Module:
    """``torch.nn.BCEWithLogitsLoss`` on logits and float targets of the same shape."""
    pw = torch.tensor(pos_weight, dtype=torch.float32) if pos_weight is not None else None
    return torch.nn.BCEWithLogitsLoss(pos_weight=pw, reduction=reduction)


def reduce_lr_on_plateau(optimizer: torch.optim.Optimizer, mode: str | None = None,
                         goal: str = "min", factor: float = 0.1, patience: int = 10,
                         threshold: float = 1e-4, cooldown: int = 0,
                         min_lr: float = 0.0) -> Any:
    """``ReduceLROnPlateau`` whose ``mode`` defaults to the step metric's goal.

    Args:
        optimizer: The session's optimizer.
        mode: ``min`` or ``max``; ``None`` uses ``goal``.
        goal: Goal of the step metric (given by the trainer).
        factor: Multiplicative factor of each reduction.
        patience: Epochs without improvement before reducing.
        threshold: Minimum relative change counted as an improvement.
        cooldown: Epochs to wait after a reduction.
        min_lr: Lower bound of the learning rate.
    """
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode or goal, factor=factor, patience=patience, threshold=threshold,
        cooldown=cooldown, min_lr=min_lr)
