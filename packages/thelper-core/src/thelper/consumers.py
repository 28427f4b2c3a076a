"""Output consumers: metrics that write what the model predicted rather than a score.

They follow the :class:`thelper.metrics.Metric` protocol (``goal = None``, so they are never
monitored): :meth:`update` keeps the detached outputs on the device, and :meth:`report`
writes files once, when the trainer writes reports (the best and last validation epochs and
the final test). Samples are numbered in loader order; evaluation loaders are not shuffled,
so sample ``i`` is the ``i``-th index of the split in ``logs/splits.json``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch

from thelper.metrics import Metric, Report

__all__ = ["PredictionLogger"]


class PredictionLogger(Metric):
    """Per-sample predictions of a split, as ``<stem>.csv`` or ``<stem>.json``.

    * Classification (the task has ``class_names``): ``index, target, target_name,
      prediction, prediction_name, score`` and the ``top_k`` best classes with their softmax
      probabilities.
    * Regression (anything else): ``index``, then ``target_<j>`` and ``prediction_<j>`` for
      each of the ``D`` values of a sample (outputs and targets flattened to ``(N, D)``).

    Args:
        format: ``csv`` or ``json``.
        top_k: Classification only: classes listed per sample with their probability.
        max_samples: Keep at most this many samples (``None``: all).
        task: The session task.
    """

    goal = None

    def __init__(self, format: str = "csv", top_k: int = 3, max_samples: int | None = None,
                 task: Any = None) -> None:
        if format not in ("csv", "json"):
            raise ValueError(f"format must be 'csv' or 'json' (got {format!r})")
        self.format = format
        self.top_k = top_k
        self.max_samples = max_samples
        self.class_names = list(getattr(task, "class_names", None) or []) or None
        self.add_state("_outputs", [], "cat")
        self.add_state("_targets", [], "cat")
        self.add_state("_count", 0, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        if self.max_samples is not None and self._count >= self.max_samples:
            return
        n = outputs.shape[0]
        if self.max_samples is not None:
            n = min(n, self.max_samples - self._count)
        self._outputs.append(outputs[:n].detach())
        self._targets.append(targets[:n].detach())
        self._count += n

    def _rows(self) -> list[dict[str, Any]]:
        limit = self.max_samples  # several ranks' samples merged: keep the first ones
        outputs = torch.cat(self._outputs).float().cpu()[:limit]
        targets = torch.cat(self._targets).cpu()[:limit]
        rows: list[dict[str, Any]] = []
        if self.class_names is not None and outputs.ndim == 2 and \
                outputs.shape[1] == len(self.class_names):
            probs = outputs.softmax(dim=1)
            k = min(self.top_k, probs.shape[1])
            top = probs.topk(k, dim=1)
            names = self.class_names
            for i in range(outputs.shape[0]):
                t = int(targets[i])
                p = int(top.indices[i, 0])
                row: dict[str, Any] = {
                    "index": i, "target": t,
                    "target_name": names[t] if 0 <= t < len(names) else "",
                    "prediction": p, "prediction_name": names[p],
                    "score": round(float(top.values[i, 0]), 6),
                }
                for j in range(k):
                    row[f"top{j + 1}"] = names[int(top.indices[i, j])]
                    row[f"top{j + 1}_score"] = round(float(top.values[i, j]), 6)
                rows.append(row)
            return rows
        o = outputs.reshape(outputs.shape[0], -1)
        t = targets.reshape(targets.shape[0], -1).float()
        for i in range(o.shape[0]):
            row = {"index": i}
            row.update({f"target_{j}": float(v) for j, v in enumerate(t[i].tolist())})
            row.update({f"prediction_{j}": float(v) for j, v in enumerate(o[i].tolist())})
            rows.append(row)
        return rows

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._outputs:
            return None
        rows = self._rows()
        out_dir.mkdir(parents=True, exist_ok=True)
        if self.format == "json":
            path = out_dir / f"{stem}.json"
            path.write_text(json.dumps(rows, indent=1))
        else:
            path = out_dir / f"{stem}.csv"
            with path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        return Report([path])
