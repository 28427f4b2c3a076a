"""Output writers of ``thelper infer``, one per task type, and the core's file decoders.

A writer is a registered component of kind ``writer`` named after the task type it serves
(``classification``, ``regression``; thelper-vision adds ``segmentation``, ``detection``,
``super_resolution`` and ``autoencoding``). ``thelper infer`` looks it up by the task's
``type_name``, then by those of the task's base classes, so a task subclass inherits its
parent's writer. A writer class (subclass :class:`OutputWriter`) says what a prediction is
(:meth:`OutputWriter.predictions`: model outputs → the task's units) and writes batches of
them under the output folder.

This module is the built-in plugin ``core-predict`` (:data:`thelper.plugins.BUILTIN_PLUGINS`):
it registers the core writers and file decoders (see :mod:`thelper.predict`). Importing it
imports neither torch nor pydantic; the writers import what they need when they write.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from thelper.hookspecs import hookimpl
from thelper.registry import ComponentInfo as C

__all__ = ["Source", "OutputWriter", "CsvWriter", "ClassificationWriter", "RegressionWriter",
           "JsonWriter", "MultiLabelWriter", "writer_class", "thelper_register_components"]


@dataclass(frozen=True)
class Source:
    """Where a prediction comes from.

    Attributes:
        name: What rows name it: the file path, or ``<split>/<dataset>/<index>``.
        stem: File name stem for per-sample outputs (``masks/<stem>.png``): the input file's.
    """

    name: str
    stem: str


class OutputWriter:
    """Base class of output writers: predictions of one ``thelper infer`` run, by batch.

    Subclasses override :meth:`write` (and :meth:`predictions` when the task's ``decode``
    is not what they write), and list what they wrote in :attr:`files`.

    Args:
        out: The output folder (exists).
        task: The model's task.

    Attributes:
        out: The output folder.
        task: The task.
        files: Files written so far.
    """

    def __init__(self, out: Path, task: Any) -> None:
        self.out = Path(out)
        self.task = task
        self.files: list[Path] = []
        self._stems: set[str] = set()

    @classmethod
    def predictions(cls, task: Any, outputs: Any) -> Any:
        """Model outputs (a batch) → predictions in the task's units: ``task.decode``."""
        return task.decode(outputs)

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        """Write the predictions of one batch (one per source, in order)."""
        raise NotImplementedError

    def close(self) -> list[Path]:
        """Finish writing; return the files written."""
        return self.files

    def unique_stem(self, stem: str) -> str:
        """``stem``, or ``stem_2``, ``stem_3``, ... when an earlier input had that stem."""
        candidate, n = stem or "input", 1
        while candidate in self._stems:
            n += 1
            candidate = f"{stem}_{n}"
        self._stems.add(candidate)
        return candidate


class CsvWriter(OutputWriter):
    """Rows into ``<out>/<filename>``, streamed; the header is the first row's keys."""

    filename = "predictions.csv"

    def __init__(self, out: Path, task: Any) -> None:
        super().__init__(out, task)
        self._file: IO[str] | None = None
        self._csv: csv.DictWriter | None = None

    def rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows."""
        if not rows:
            return
        if self._csv is None:
            path = self.out / self.filename
            self._file = path.open("w", newline="")
            self._csv = csv.DictWriter(self._file, fieldnames=list(rows[0]))
            self._csv.writeheader()
            self.files.append(path)
        self._csv.writerows(rows)

    def close(self) -> list[Path]:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.files


class ClassificationWriter(CsvWriter):
    """``predictions.csv``: ``input, prediction, score, top1, top1_score, ..., topK,
    topK_score`` (class names and softmax probabilities, best first).

    Args:
        out: Output folder.
        task: A task with ``class_names``.
        top_k: Classes listed per input.
    """

    def __init__(self, out: Path, task: Any, top_k: int = 3) -> None:
        super().__init__(out, task)
        self.top_k = max(int(top_k), 1)

    @classmethod
    def predictions(cls, task: Any, outputs: Any) -> Any:
        """Softmax probabilities ``(N, C)`` float32 of logits ``(N, C)``."""
        import torch

        return torch.softmax(outputs.float(), dim=1)

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        names = self.task.class_names
        k = min(self.top_k, predictions.shape[1])
        scores, idx = predictions.topk(k, dim=1)
        rows = []
        for src, s, i in zip(sources, scores.tolist(), idx.tolist(), strict=True):
            row: dict[str, Any] = {"input": src.name, "prediction": names[i[0]],
                                   "score": round(s[0], 6)}
            for r in range(k):
                row[f"top{r + 1}"] = names[i[r]]
                row[f"top{r + 1}_score"] = round(s[r], 6)
            rows.append(row)
        self.rows(rows)


class MultiLabelWriter(CsvWriter):
    """``predictions.csv``: ``input, labels, p_<class 1>, ..., p_<class C>``: the labels
    predicted present (their names joined by ``;``, empty when none reaches the task's
    ``threshold``) and each label's sigmoid probability, in class order.

    Args:
        out: Output folder.
        task: A :class:`~thelper.tasks.MultiLabelClassification` (``class_names``,
            ``threshold``).
    """

    @classmethod
    def predictions(cls, task: Any, outputs: Any) -> Any:
        """Independent label probabilities ``(N, C)`` float32: ``sigmoid`` of the logits
        ``(N, C)``."""
        import torch

        return torch.sigmoid(outputs.float())

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        names = self.task.class_names
        threshold = self.task.threshold
        rows = []
        for src, probs in zip(sources, predictions.tolist(), strict=True):
            row: dict[str, Any] = {"input": src.name, "labels": ";".join(
                n for n, p in zip(names, probs, strict=True) if p >= threshold)}
            row.update({f"p_{n}": round(p, 6) for n, p in zip(names, probs, strict=True)})
            rows.append(row)
        self.rows(rows)


class RegressionWriter(CsvWriter):
    """``predictions.csv``: ``input, y0, y1, ...``: the values of each input (flattened
    ``target_shape``) in target units (the task's ``decode``: de-standardised with
    ``target_mean``/``target_std``, clamped to ``[target_min, target_max]``)."""

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        flat = predictions.float().reshape(predictions.shape[0], -1).tolist()
        self.rows([{"input": src.name, **{f"y{j}": round(v, 6) for j, v in enumerate(values)}}
                   for src, values in zip(sources, flat, strict=True)])


class JsonWriter(OutputWriter):
    """Records into ``<out>/<filename>`` (a JSON list), written at :meth:`close`."""

    filename = "predictions.json"

    def __init__(self, out: Path, task: Any) -> None:
        super().__init__(out, task)
        self.records: list[dict[str, Any]] = []

    def close(self) -> list[Path]:
        path = self.out / self.filename
        path.write_text(json.dumps(self.records, indent=1))
        self.files.append(path)
        return self.files


def writer_class(task: Any, registry: Any) -> tuple[str, type] | None:
    """``(name, class)`` of the writer of ``task``: the one named after its ``type_name``,
    else after a base class's; ``None`` when none is registered."""
    for cls in type(task).__mro__:
        name = getattr(cls, "type_name", None)
        canonical = registry.canonical("writer", name) if isinstance(name, str) else None
        if canonical is not None:
            return canonical, registry.get("writer", canonical).load()
    return None


@hookimpl
def thelper_register_components() -> list[C]:
    """The core's output writers and file decoders."""
    return [
        C("writer", "classification", "thelper.writers:ClassificationWriter",
          description="predictions.csv: top-k class names and softmax scores"),
        C("writer", "regression", "thelper.writers:RegressionWriter",
          description="predictions.csv: predicted values in target units"),
        C("writer", "multilabel_classification", "thelper.writers:MultiLabelWriter",
          description="predictions.csv: labels present and each label's probability"),
        C("decoder", "sklearn", "thelper.predict:sklearn_decoder",
          description="a grey image file as a digits sample: float32 in [0, 1] (or [0, 16])"),
        C("decoder", "image_file", "thelper.predict:image_file_decoder",
          description="datasets without a decoder: an image file as float32 in [0, 1]"),
    ]
