"""The ``example_balanced_accuracy`` metric."""

from __future__ import annotations

from typing import Any

import torch

from thelper.metrics import Metric

__all__ = ["BalancedAccuracy"]


class BalancedAccuracy(Metric):
    """Balanced accuracy: the mean over classes of the recall ``TP_c / (TP_c + FN_c)``.

    Follows scikit-learn's ``sklearn.metrics.balanced_accuracy_score`` (Brodersen et al.,
    "The balanced accuracy and its posterior distribution", ICPR 2010): classes absent from
    the targets are left out of the mean, and with ``adjusted=True`` the score is rescaled
    to ``(score - 1/C) / (1 - 1/C)`` so that chance level is 0 (``C``: classes present).
    On balanced data it equals plain accuracy; on imbalanced data it does not reward
    predicting the majority class. Targets outside ``[0, num_classes)`` (e.g. the
    ``ignore_index`` -100) are skipped.

    Counts accumulate on the outputs' device with ``scatter_add_``: :meth:`update` never
    synchronises with the host; :meth:`compute` does, once per evaluation.

    Args:
        adjusted: Rescale so that chance level is 0.
        task: The session's classification task (gives the number of classes ``C``).

    Raises:
        ValueError: ``task`` has no ``num_classes``.
    """

    goal = "max"

    def __init__(self, adjusted: bool = False, task: Any = None) -> None:
        num_classes = getattr(task, "num_classes", None)
        if num_classes is None:
            raise ValueError(
                f"example_balanced_accuracy needs a classification task; got task {task!r}"
            )
        self.num_classes = int(num_classes)
        self.adjusted = adjusted
        # (2, C + 1) int64 on the outputs' device: row 0 counts samples per true class
        # (support), row 1 correct predictions per true class; column C is a discard bin.
        # Declared, so it is reset each epoch, kept in step checkpoints and summed over
        # the ranks of a DDP job.
        self.add_state("_counts", None, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate one batch of logits ``(N, C)`` and class indices ``(N,)``."""
        c = self.num_classes
        preds = outputs.argmax(dim=1)
        valid = (targets >= 0) & (targets < c)
        # invalid targets (and, in row 1, wrong predictions) land in the discard bin C.
        # scatter_add_ keeps the counting on the device: boolean indexing or torch.bincount
        # would read a size or a maximum back to the host (a CUDA sync) at every step.
        true_bin = torch.where(valid, targets, c)
        hit_bin = torch.where(preds == targets, true_bin, c)
        ones = torch.ones_like(true_bin)
        counts = torch.zeros(2, c + 1, dtype=torch.int64, device=true_bin.device)
        counts[0].scatter_add_(0, true_bin, ones)
        counts[1].scatter_add_(0, hit_bin, ones)
        self._counts = counts if self._counts is None else self._counts + counts

    def compute(self) -> float | None:
        """The balanced accuracy in ``[0, 1]`` (``None`` before any valid target)."""
        if self._counts is None:
            return None
        counts = self._counts[:, : self.num_classes].double().cpu()
        support, hits = counts[0], counts[1]
        present = support > 0
        n = int(present.sum())
        if n == 0:
            return None
        score = float((hits[present] / support[present]).mean())
        if self.adjusted:  # with a single class present there is no chance level: 0
            chance = 1.0 / n
            score = (score - chance) / (1.0 - chance) if n > 1 else 0.0
        return score
