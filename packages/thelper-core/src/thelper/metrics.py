"""Metrics: accumulate on the device during an epoch, reduce once at its end.

Every metric follows the same small protocol so that the generic loop never needs to know
which one it holds: :meth:`Metric.reset`, :meth:`Metric.update` (called every step with
detached logits and targets, without device-to-host synchronisation), :meth:`Metric.compute`
(a float for scalar metrics, ``None`` otherwise) and, for metrics that produce files or
figures, :meth:`Metric.report`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["Metric", "Accuracy", "ConfusionMatrix", "ClassificationReport", "Report"]


class Report:
    """What a non-scalar metric produced: files written and an optional figure.

    Attributes:
        files: Paths written under the split's output directory.
        figure: A ``matplotlib.figure.Figure`` (for TensorBoard), or ``None``.
    """

    def __init__(self, files: list[Path], figure: Any = None) -> None:
        self.files = files
        self.figure = figure


class Metric:
    """Base metric.

    Attributes:
        goal: ``"max"`` or ``"min"`` when :meth:`compute` returns a monitorable scalar,
            ``None`` otherwise.
    """

    goal: ClassVar[str | None] = None

    def reset(self) -> None:
        """Forget everything accumulated (called at the start of each evaluation)."""

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Accumulate one batch.

        Args:
            outputs: Model outputs, e.g. logits ``(N, C)`` float (detached).
            targets: Targets, e.g. class indices ``(N,)`` int64.
        """
        raise NotImplementedError

    def compute(self) -> float | None:
        """The metric's value over everything accumulated since :meth:`reset`."""
        return None

    def report(self, out_dir: Path, stem: str) -> Report | None:
        """Write files (CSV, PNG, ...) for non-scalar metrics.

        Args:
            out_dir: The split's output directory (created).
            stem: File stem to use, e.g. ``confmat``.
        """
        return None

    def state_dict(self) -> dict[str, Any]:
        """Accumulated state, for mid-epoch checkpoints.

        The default returns every attribute whose name starts with ``_`` (tensors, numbers,
        lists of tensors): override when the state holds anything else.
        """
        return {k: v for k, v in vars(self).items() if k.startswith("_")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        for k, v in state.items():
            setattr(self, k, v)


def _class_names(task: Any, num_classes: int | None = None) -> list[str]:
    names = getattr(task, "class_names", None)
    if names:
        return list(names)
    if num_classes is None:
        raise ValueError("this metric needs a classification task (class names)")
    return [str(i) for i in range(num_classes)]


class Accuracy(Metric):
    """Top-k accuracy, a fraction in ``[0, 1]``.

    A sample counts as correct when its target is among the ``top_k`` highest logits.
    Targets equal to ``ignore_index`` (default -100, as in ``CrossEntropyLoss``) are skipped.

    Args:
        top_k: ``k`` (1 for plain accuracy).
    """

    goal = "max"

    def __init__(self, top_k: int = 1, ignore_index: int = -100) -> None:
        self.top_k = top_k
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._correct: torch.Tensor | int = 0
        self._total: torch.Tensor | int = 0

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        k = min(self.top_k, outputs.shape[1])
        valid = targets != self.ignore_index
        top = outputs.topk(k, dim=1).indices
        hit = (top == targets.unsqueeze(1)).any(dim=1) & valid
        self._correct = self._correct + hit.sum()
        self._total = self._total + valid.sum()

    def compute(self) -> float | None:
        total = int(self._total)
        return float(self._correct) / total if total else None


class ConfusionMatrix(Metric):
    """Confusion matrix ``M[i, j]``: number of samples of true class ``i`` predicted as ``j``.

    Written as ``<stem>.csv`` (counts, with class names) and ``<stem>.png`` (a heat map by
    scikit-learn's ``ConfusionMatrixDisplay``), and shown in TensorBoard.

    Args:
        normalize: ``true``, ``pred``, ``all`` or ``None`` (PNG only; the CSV keeps counts).
        task: The classification task (class names).
    """

    def __init__(self, normalize: str | None = None, task: Any = None) -> None:
        self.class_names = _class_names(task)
        self.normalize = normalize
        self.reset()

    def reset(self) -> None:
        self._counts: torch.Tensor | None = None

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        c = len(self.class_names)
        preds = outputs.argmax(dim=1)
        valid = (targets >= 0) & (targets < c)  # e.g. ignore_index = -100
        idx = targets.clamp(0, c - 1) * c + preds
        if self._counts is None:
            self._counts = torch.zeros(c * c, dtype=torch.int64, device=outputs.device)
        # index_add_ with a 0/1 weight: no boolean indexing, no bincount, no host sync
        self._counts.index_add_(0, idx.reshape(-1), valid.reshape(-1).long())

    @property
    def matrix(self) -> torch.Tensor:
        """Counts ``(C, C)`` int64 on the CPU."""
        c = len(self.class_names)
        if self._counts is None:
            return torch.zeros(c, c, dtype=torch.int64)
        return self._counts.reshape(c, c).cpu()

    def report(self, out_dir: Path, stem: str) -> Report:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from sklearn.metrics import ConfusionMatrixDisplay

        m = self.matrix.numpy()
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = out_dir / f"{stem}.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["true \\ predicted", *self.class_names])
            for name, row in zip(self.class_names, m, strict=True):
                w.writerow([name, *row.tolist()])
        shown = m.astype(float)
        if self.normalize == "true":
            shown = shown / shown.sum(axis=1, keepdims=True).clip(min=1)
        elif self.normalize == "pred":
            shown = shown / shown.sum(axis=0, keepdims=True).clip(min=1)
        elif self.normalize == "all":
            shown = shown / max(shown.sum(), 1)
        size = max(4.0, 0.5 * len(self.class_names) + 2)
        fig, ax = plt.subplots(figsize=(size, size))
        disp = ConfusionMatrixDisplay(shown if self.normalize else m,
                                      display_labels=self.class_names)
        disp.plot(ax=ax, colorbar=False, values_format=".2f" if self.normalize else "d",
                  xticks_rotation=45 if len(self.class_names) > 6 else "horizontal")
        ax.set_title(f"{stem} (rows: true, columns: predicted)")
        fig.tight_layout()
        png_path = out_dir / f"{stem}.png"
        fig.savefig(png_path, dpi=100)
        return Report([csv_path, png_path], fig)


class ClassificationReport(Metric):
    """Per-class precision, recall, F1 and support from scikit-learn's
    ``classification_report``; written as ``<stem>.txt`` and ``<stem>.json``.

    Args:
        digits: Decimal digits in the text table.
        task: The classification task (class names).
    """

    def __init__(self, digits: int = 4, task: Any = None) -> None:
        self.class_names = _class_names(task)
        self.digits = digits
        self.reset()

    def reset(self) -> None:
        self._preds: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        self._preds.append(outputs.argmax(dim=1))
        self._targets.append(targets)

    def report(self, out_dir: Path, stem: str) -> Report | None:
        from sklearn.metrics import classification_report

        if not self._preds:
            return None
        y_pred = torch.cat(self._preds).cpu().numpy()
        y_true = torch.cat(self._targets).cpu().numpy()
        labels = list(range(len(self.class_names)))
        kwargs = dict(labels=labels, target_names=self.class_names, zero_division=0)
        text = classification_report(y_true, y_pred, digits=self.digits, **kwargs)
        data = classification_report(y_true, y_pred, output_dict=True, **kwargs)
        out_dir.mkdir(parents=True, exist_ok=True)
        txt, js = out_dir / f"{stem}.txt", out_dir / f"{stem}.json"
        txt.write_text(text)
        js.write_text(json.dumps(data, indent=2))
        return Report([txt, js])
