"""Metrics: accumulate on the device during an epoch, reduce once at its end.

Every metric follows the same small protocol so that the generic loop never needs to know
which one it holds: :meth:`Metric.update` (called every step with detached logits and
targets, without device-to-host synchronisation), :meth:`Metric.compute` (a float for scalar
metrics, ``None`` otherwise) and, for metrics that produce files or figures,
:meth:`Metric.report`.

A metric declares its accumulated state with :meth:`Metric.add_state`, as torchmetrics does
(``add_state(name, default, dist_reduce_fx)``). The declaration is what makes a metric
correct everywhere without code of its own: :meth:`Metric.reset` restores the defaults,
:meth:`Metric.state_dict` is what mid-epoch checkpoints keep, and :func:`merge_states`
combines the states of several ranks (or of the ranks of an earlier job) with each state's
reduction:

* ``"sum"``: tensors or numbers added (counts, sums of errors, confusion matrices);
* ``"cat"``: lists of per-batch tensors concatenated in rank order (scores, predictions);
* ``"max"`` / ``"min"``: element-wise extremes.
"""

from __future__ import annotations

import copy
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["Metric", "Accuracy", "ConfusionMatrix", "ClassificationReport", "Report",
           "MeanAbsoluteError", "MeanSquaredError", "RootMeanSquaredError", "ROCAUC",
           "merge_states", "REDUCTIONS"]

#: Accepted ``dist_reduce_fx`` values of :meth:`Metric.add_state`.
REDUCTIONS = ("sum", "cat", "max", "min")


class Report:
    """What a non-scalar metric produced: files written and an optional figure.

    Attributes:
        files: Paths written under the split's output directory.
        figure: A ``matplotlib.figure.Figure`` (for TensorBoard), or ``None``.
    """

    def __init__(self, files: list[Path], figure: Any = None) -> None:
        self.files = files
        self.figure = figure


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` on an Agg canvas, outside pyplot (reports render on the
    trainer's report thread, and pyplot's global state is not thread-safe)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def render_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` once and write it as PNG (atomically).

    The rendered image is kept on the figure as ``fig.thelper_image`` (``(H, W, 3)`` uint8),
    which the TensorBoard tracker logs as is: each figure is drawn once, not once for the
    PNG and again for TensorBoard.
    """
    import numpy as np
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.set_dpi(dpi)
    fig.canvas.draw()
    rgb = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(rgb).save(tmp, format="PNG")
    tmp.replace(path)
    fig.thelper_image = rgb
    return path


def _reduce(values: list[Any], fx: str) -> Any:
    """Combine one state's values (in rank order) with reduction ``fx``."""
    values = [v for v in values if v is not None]
    if fx == "cat":
        out: list[Any] = []
        for v in values:
            out.extend(v if isinstance(v, list | tuple) else [v])
        return out
    if not values:
        return None
    result = values[0]
    for v in values[1:]:
        if fx == "sum":
            result = result + v
        elif isinstance(result, torch.Tensor) or isinstance(v, torch.Tensor):
            a, b = torch.as_tensor(result), torch.as_tensor(v)
            result = torch.maximum(a, b) if fx == "max" else torch.minimum(a, b)
        else:
            result = max(result, v) if fx == "max" else min(result, v)
    return result


def merge_states(metric: Metric, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The state of ``metric`` that several ranks' states ``states`` add up to.

    Args:
        metric: A metric whose declared states (:meth:`Metric.add_state`) give each
            reduction.
        states: :meth:`Metric.state_dict` of every rank, in rank order (CPU tensors).

    Returns:
        One state dict, as if one process had seen every rank's samples in rank order.
    """
    return {name: _reduce([s.get(name) for s in states], fx)
            for name, (_, fx) in metric.declared_states().items()}


class Metric:
    """Base metric.

    Subclasses declare what they accumulate in ``__init__`` with :meth:`add_state`, update
    it in :meth:`update` and read it in :meth:`compute` / :meth:`report`; they need no
    ``reset``, ``state_dict`` or reduction code of their own.

    Attributes:
        goal: ``"max"`` or ``"min"`` when :meth:`compute` returns a monitorable scalar,
            ``None`` otherwise.
    """

    goal: ClassVar[str | None] = None
    #: True for metrics that also look at the model's inputs (overlays, image panels): the
    #: trainer calls :meth:`observe_inputs` before each evaluation :meth:`update`.
    needs_inputs: ClassVar[bool] = False
    #: Set by the trainer before :meth:`report`: ``{"split": ..., "epoch": ...}``.
    report_context: dict[str, Any] = {}  # replaced per report, never mutated

    def report_title(self, text: str) -> str:
        """``text`` followed by the split and epoch being reported (figure titles)."""
        ctx = self.report_context
        if not ctx:
            return text
        where = ", ".join(f"{k} {v}" if k == "epoch" else str(v) for k, v in ctx.items()
                          if v is not None)
        return f"{text} [{where}]"

    def add_state(self, name: str, default: Any, dist_reduce_fx: str = "sum") -> None:
        """Declare an accumulated state (an attribute reset to ``default`` each epoch).

        Args:
            name: Attribute name.
            default: Initial value: a tensor or number (``sum``, ``max``, ``min``), or an
                empty list that :meth:`update` appends per-batch tensors to (``cat``).
            dist_reduce_fx: How the values of several ranks combine: ``sum``, ``cat``,
                ``max`` or ``min`` (torchmetrics' names).

        Raises:
            ValueError: Unknown reduction, or ``cat`` with a default that is not an empty
                list.
        """
        if dist_reduce_fx not in REDUCTIONS:
            raise ValueError(f"add_state({name!r}): dist_reduce_fx must be one of "
                             f"{', '.join(REDUCTIONS)} (got {dist_reduce_fx!r})")
        if dist_reduce_fx == "cat" and default != []:
            raise ValueError(f"add_state({name!r}): a 'cat' state starts as an empty list")
        if "_declared" not in self.__dict__:
            self._declared: dict[str, tuple[Any, str]] = {}
        self._declared[name] = (default, dist_reduce_fx)
        setattr(self, name, copy.deepcopy(default))

    def declared_states(self) -> dict[str, tuple[Any, str]]:
        """``{name: (default, dist_reduce_fx)}`` of every :meth:`add_state`."""
        return dict(self.__dict__.get("_declared", {}))

    def reset(self) -> None:
        """Restore every declared state to its default (at the start of each evaluation)."""
        for name, (default, _) in self.declared_states().items():
            setattr(self, name, copy.deepcopy(default))

    def observe_inputs(self, inputs: Any) -> None:
        """The batch's model inputs, before :meth:`update` (only when :attr:`needs_inputs`;
        evaluation passes only).

        Args:
            inputs: The task's input of the batch, e.g. images ``(N, C, H, W)`` float after
                the base transforms.
        """

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
        """The declared states (:meth:`add_state`), for mid-epoch checkpoints and the
        reduction across ranks."""
        return {name: getattr(self, name) for name in self.declared_states()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (declared states only).

        Raises:
            KeyError: ``state`` names a state this metric does not declare.
        """
        declared = self.declared_states()
        for k, v in state.items():
            if k not in declared:
                raise KeyError(f"{type(self).__name__} declares no state {k!r} (declared: "
                               f"{', '.join(declared) or 'none'})")
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

    A sample counts as correct when its target is among the ``top_k`` highest logits (for
    ``top_k=1``, when it is the ``argmax``, as in :class:`ConfusionMatrix`: ties go to the
    lowest class index). Targets equal to ``ignore_index`` (default -100, as in
    ``CrossEntropyLoss``) are skipped. Counts stay on the device until :meth:`compute`.

    Args:
        top_k: ``k`` (1 for plain accuracy).
    """

    goal = "max"

    def __init__(self, top_k: int = 1, ignore_index: int = -100) -> None:
        self.top_k = top_k
        self.ignore_index = ignore_index
        self.add_state("_correct", 0, "sum")
        self.add_state("_total", 0, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        k = min(self.top_k, outputs.shape[1])
        valid = targets != self.ignore_index
        if k == 1:  # 2 small ops fewer per step than topk
            hit = (outputs.argmax(dim=1) == targets) & valid
        else:
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
        self.add_state("_counts", None, "sum")  # (C * C,) int64, created on the device

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
        c = len(self.class_names)
        size = max(4.0, 0.5 * c + 2)
        fig = new_figure(size, size)
        ax = fig.add_subplot(1, 1, 1)
        # as scikit-learn's ConfusionMatrixDisplay draws it (viridis, values in the cells)
        ax.imshow(shown, cmap="viridis", interpolation="nearest")
        if c <= 40:
            middle = (shown.max() + shown.min()) / 2
            for i in range(c):
                for j in range(c):
                    text = f"{shown[i, j]:.2f}" if self.normalize else str(int(m[i, j]))
                    ax.text(j, i, text, ha="center", va="center", fontsize="small",
                            color="black" if shown[i, j] > middle else "white")
        rotate = c > 6
        ax.set_xticks(range(c), labels=self.class_names, rotation=45 if rotate else 0,
                      ha="right" if rotate else "center")
        ax.set_yticks(range(c), labels=self.class_names)
        ax.set_xlabel("predicted label")
        ax.set_ylabel("true label")
        ax.set_title(self.report_title(f"{stem} (rows: true, columns: predicted)"))
        fig.tight_layout()
        png_path = render_figure(fig, out_dir / f"{stem}.png")
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
        self.add_state("_preds", [], "cat")
        self.add_state("_targets", [], "cat")

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


# ---------------------------------------------------------------------------- regression
def _regression_pair(outputs: torch.Tensor, targets: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` float views of outputs and targets; a target (or output) of one value per
    sample is compared with every value of the other."""
    o = outputs.reshape(outputs.shape[0], -1).float()
    t = targets.reshape(targets.shape[0], -1).to(o.dtype)
    if o.shape[1] != t.shape[1] and 1 not in (o.shape[1], t.shape[1]):
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                         "hold different numbers of values per sample")
    return o, t


class _ErrorMetric(Metric):
    goal = "min"
    _power = 1

    def __init__(self, task: Any = None) -> None:
        self.add_state("_sum", 0.0, "sum")  # float64 on the device once updated
        self.add_state("_count", 0, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        o, t = _regression_pair(outputs, targets)
        d = (o - t).abs() if self._power == 1 else (o - t).square()
        self._sum = self._sum + d.sum(dtype=torch.float64)
        self._count = self._count + d.numel()

    def _mean(self) -> float | None:
        count = int(self._count)
        return float(self._sum) / count if count else None

    def compute(self) -> float | None:
        return self._mean()


class MeanAbsoluteError(_ErrorMetric):
    """Mean absolute error ``MAE = mean(|ŷ - y|)`` over every predicted value (all samples
    and outputs), in target units; lower is better.

    Same definition as scikit-learn's ``mean_absolute_error`` with uniform averaging over
    outputs. Accumulated in float64 on the device; reduced once per epoch.
    """

    _power = 1


class MeanSquaredError(_ErrorMetric):
    """Mean squared error ``MSE = mean((ŷ - y)²)`` over every predicted value, in squared
    target units; lower is better (scikit-learn's ``mean_squared_error``)."""

    _power = 2


class RootMeanSquaredError(_ErrorMetric):
    """Root mean squared error ``RMSE = sqrt(mean((ŷ - y)²))`` over the whole split (the root
    of the epoch's MSE, not a mean of per-batch roots), in target units; lower is better
    (scikit-learn's ``root_mean_squared_error``)."""

    _power = 2

    def compute(self) -> float | None:
        mse = self._mean()
        return None if mse is None else mse ** 0.5


# --------------------------------------------------------------------------------- ROC
class ROCAUC(Metric):
    """Area under the ROC curve, one class against the rest; higher is better.

    Scores are the softmax of the logits ``(N, C)`` (the sigmoid for one logit per
    sample). For two classes the value is scikit-learn's binary
    ``roc_auc_score(y == 1, p[:, 1])``; for more, each class ``c`` that has both positive
    and negative samples gets ``roc_auc_score(y == c, p[:, c])`` and the values are
    averaged (``macro``) or weighted by the number of positives (``weighted``), which is
    scikit-learn's ``roc_auc_score(..., multi_class="ovr")`` when every class is present.
    Targets equal to ``ignore_index`` are skipped. ROC: Fawcett, "An introduction to ROC
    analysis", Pattern Recognition Letters 27 (2006).

    The report writes ``<stem>.csv`` (AUC per class) and ``<stem>.png`` (the ROC curves,
    from scikit-learn's ``roc_curve``), also shown in TensorBoard.

    Args:
        average: ``macro`` or ``weighted``.
        ignore_index: Target value to skip.
        task: The classification task (class names).
    """

    goal = "max"

    def __init__(self, average: str = "macro", ignore_index: int = -100,
                 task: Any = None) -> None:
        if average not in ("macro", "weighted"):
            raise ValueError(f"average must be 'macro' or 'weighted' (got {average!r})")
        self.average = average
        self.ignore_index = ignore_index
        self.class_names = _class_names(task) if getattr(task, "class_names", None) else None
        self.add_state("_scores", [], "cat")
        self.add_state("_targets", [], "cat")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        logits = outputs.float()
        if logits.ndim == 1 or logits.shape[1] == 1:
            p = torch.sigmoid(logits.reshape(-1, 1))
            scores = torch.cat([1 - p, p], dim=1)
        else:
            scores = logits.softmax(dim=1)
        self._scores.append(scores)
        self._targets.append(targets.reshape(-1))

    def _arrays(self) -> tuple[Any, Any] | None:
        if not self._scores:
            return None
        scores = torch.cat(self._scores).cpu().double().numpy()
        y = torch.cat(self._targets).cpu().numpy()
        keep = y != self.ignore_index
        return scores[keep], y[keep]

    def _names(self, n: int) -> list[str]:
        names = self.class_names or []
        return names if len(names) == n else [str(i) for i in range(n)]

    def per_class(self) -> dict[int, float]:
        """AUC of each class that has positive and negative samples (index -> AUC)."""
        from sklearn.metrics import roc_auc_score

        arrays = self._arrays()
        if arrays is None:
            return {}
        scores, y = arrays
        classes = [1] if scores.shape[1] == 2 else range(scores.shape[1])
        out = {}
        for c in classes:
            positives = y == c
            if positives.any() and not positives.all():
                out[c] = float(roc_auc_score(positives, scores[:, c]))
        return out

    def compute(self) -> float | None:
        aucs = self.per_class()
        if not aucs:
            return None
        if self.average == "macro" or len(aucs) == 1:
            return sum(aucs.values()) / len(aucs)
        y = self._arrays()[1]  # type: ignore[index]
        weights = {c: float((y == c).sum()) for c in aucs}
        return sum(aucs[c] * weights[c] for c in aucs) / sum(weights.values())

    def report(self, out_dir: Path, stem: str) -> Report | None:
        from sklearn.metrics import roc_curve

        arrays = self._arrays()
        aucs = self.per_class()
        if arrays is None or not aucs:
            return None
        scores, y = arrays
        names = self._names(scores.shape[1])
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = out_dir / f"{stem}.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "auc", "positives"])
            for c, auc in aucs.items():
                w.writerow([names[c], f"{auc:.6f}", int((y == c).sum())])
        fig = new_figure(5.5, 5)
        ax = fig.add_subplot(1, 1, 1)
        for c, auc in list(aucs.items())[:20]:
            fpr, tpr, _ = roc_curve(y == c, scores[:, c])
            ax.plot(fpr, tpr, label=f"{names[c]} (AUC {auc:.3f})")
        ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(self.report_title(f"{stem}: ROC, one class vs rest ({self.average} AUC "
                                       f"{self.compute():.3f})"))
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        png_path = render_figure(fig, out_dir / f"{stem}.png")
        return Report([csv_path, png_path], fig)


# --------------------------------------------------------------------------- multi-label
__all__ += ["MultiLabelF1", "MultiLabelAveragePrecision"]


def _multi_hot(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Targets as ``(N, C)`` 0/1 of the outputs' dtype: multi-hot targets as they are;
    class indices ``(N,)`` (a single-label batch) one-hot encoded, so that a single-label
    data set can be scored with the multi-label metrics."""
    if targets.ndim == 1 and outputs.ndim == 2:
        c = outputs.shape[1]
        valid = (targets >= 0) & (targets < c)
        hot = torch.nn.functional.one_hot(targets.clamp(0, c - 1).long(), c)
        return (hot * valid.unsqueeze(1)).to(outputs.dtype)
    if targets.shape != outputs.shape:
        raise ValueError(f"multi-label targets {tuple(targets.shape)} and logits "
                         f"{tuple(outputs.shape)} must have the same shape (N, C)")
    return (targets > 0.5).to(outputs.dtype)


class MultiLabelF1(Metric):
    """F1 score of multi-label predictions; higher is better, in ``[0, 1]``.

    A label is predicted when ``sigmoid(logit) >= threshold``. True positives, false
    positives and false negatives are counted per label ``(C,)`` on the device and reduced
    once per epoch. ``micro``: ``F1 = 2 TP / (2 TP + FP + FN)`` over every label decision;
    ``macro``: the mean of the per-label F1 (a label with no positive and no predicted
    positive scores 0). Same values as scikit-learn's ``f1_score(y, ŷ, average=...,
    zero_division=0)`` on multi-hot arrays.

    Args:
        average: ``micro`` or ``macro``.
        threshold: Probability threshold; ``None`` uses the task's ``threshold`` (else 0.5).
        task: The session task.

    Raises:
        ValueError: Unknown ``average``.
    """

    goal = "max"

    def __init__(self, average: str = "micro", threshold: float | None = None,
                 task: Any = None) -> None:
        if average not in ("micro", "macro"):
            raise ValueError(f"average must be 'micro' or 'macro' (got {average!r})")
        self.average = average
        self.threshold = float(threshold if threshold is not None
                               else getattr(task, "threshold", 0.5))
        self.add_state("_tp", 0, "sum")  # (C,) int64 on the device once updated
        self.add_state("_fp", 0, "sum")
        self.add_state("_fn", 0, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        logits = outputs.float()
        y = _multi_hot(logits, targets).bool()
        pred = torch.sigmoid(logits) >= self.threshold
        self._tp = self._tp + (pred & y).sum(dim=0)
        self._fp = self._fp + (pred & ~y).sum(dim=0)
        self._fn = self._fn + (~pred & y).sum(dim=0)

    def per_label(self) -> torch.Tensor | None:
        """F1 of each label ``(C,)`` float64 on the CPU (``None`` before any update)."""
        if not isinstance(self._tp, torch.Tensor):
            return None
        tp, fp, fn = (torch.as_tensor(v).cpu().double() for v in (self._tp, self._fp, self._fn))
        denom = 2 * tp + fp + fn
        return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.zeros_like(tp))

    def compute(self) -> float | None:
        if not isinstance(self._tp, torch.Tensor):
            return None
        if self.average == "macro":
            return float(self.per_label().mean())  # type: ignore[union-attr]
        tp, fp, fn = (float(torch.as_tensor(v).sum()) for v in (self._tp, self._fp, self._fn))
        denom = 2 * tp + fp + fn
        return 2 * tp / denom if denom else 0.0


class MultiLabelAveragePrecision(Metric):
    """Mean average precision (mAP) over labels; higher is better, in ``[0, 1]``.

    Scores are the sigmoids of the logits ``(N, C)``; the average precision of each label
    is scikit-learn's ``average_precision_score`` (the area under the precision-recall
    curve as a step function, Zhu, "Recall, precision and average precision", 2004).
    ``macro``: mean over the labels that have at least one positive sample (a label
    without positives has no defined AP and is left out, as in the multi-label
    literature); ``weighted``: weighted by each label's positives; ``micro``: the AP of
    every label decision pooled. The report writes ``<stem>.csv``: label, AP, positives,
    predicted positives at the task's threshold.

    Args:
        average: ``macro``, ``weighted`` or ``micro``.
        task: The session task (label names, threshold).

    Raises:
        ValueError: Unknown ``average``.
    """

    goal = "max"

    def __init__(self, average: str = "macro", task: Any = None) -> None:
        if average not in ("macro", "weighted", "micro"):
            raise ValueError(f"average must be 'macro', 'weighted' or 'micro' (got "
                             f"{average!r})")
        self.average = average
        self.class_names = list(getattr(task, "class_names", None) or [])
        self.threshold = float(getattr(task, "threshold", 0.5))
        self.add_state("_scores", [], "cat")
        self.add_state("_targets", [], "cat")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        logits = outputs.float()
        self._targets.append(_multi_hot(logits, targets))
        self._scores.append(torch.sigmoid(logits))

    def _arrays(self) -> tuple[Any, Any] | None:
        if not self._scores:
            return None
        return (torch.cat(self._scores).cpu().double().numpy(),
                torch.cat(self._targets).cpu().numpy() > 0.5)

    def per_label(self) -> dict[int, float]:
        """AP of each label that has a positive sample (index -> AP)."""
        from sklearn.metrics import average_precision_score

        arrays = self._arrays()
        if arrays is None:
            return {}
        scores, y = arrays
        return {c: float(average_precision_score(y[:, c], scores[:, c]))
                for c in range(y.shape[1]) if y[:, c].any()}

    def compute(self) -> float | None:
        arrays = self._arrays()
        if arrays is None:
            return None
        scores, y = arrays
        if self.average == "micro":
            from sklearn.metrics import average_precision_score

            return float(average_precision_score(y.ravel(), scores.ravel())) \
                if y.any() else None
        aps = self.per_label()
        if not aps:
            return None
        if self.average == "macro":
            return sum(aps.values()) / len(aps)
        weights = {c: float(y[:, c].sum()) for c in aps}
        return sum(aps[c] * weights[c] for c in aps) / sum(weights.values())

    def report(self, out_dir: Path, stem: str) -> Report | None:
        arrays = self._arrays()
        if arrays is None:
            return None
        scores, y = arrays
        aps = self.per_label()
        names = self.class_names if len(self.class_names) == y.shape[1] else \
            [str(i) for i in range(y.shape[1])]
        out_dir.mkdir(parents=True, exist_ok=True)
        csv_path = out_dir / f"{stem}.csv"
        with csv_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["label", "average_precision", "positives", "predicted_positives"])
            for c, name in enumerate(names):
                ap = f"{aps[c]:.6f}" if c in aps else ""
                w.writerow([name, ap, int(y[:, c].sum()),
                            int((scores[:, c] >= self.threshold).sum())])
        return Report([csv_path])
