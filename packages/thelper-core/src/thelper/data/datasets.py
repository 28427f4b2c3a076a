"""Core dataset adapters: scikit-learn's bundled data sets and any torch ``Dataset`` class.

Samples are dicts keyed by the task's ``input_key``/``label_key``. Tuple samples (as returned
by torchvision data sets) become ``{"0": x, "1": y, ...}`` so that a task block with
``input_key: "0"`` and ``label_key: "1"`` (thelper 0.6 style) addresses them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thelper.config.imports import (
    DEFAULT_IMPORT_PREFIXES,
    allow_list_message,
    import_allowed,
    split_import_path,
)
from thelper.exceptions import ConfigError, DataError
from thelper.tasks import Classification, Task

__all__ = ["SklearnDataset", "TorchDatasetAdapter", "DEFAULT_IMPORT_PREFIXES", "check_import_allowed",
           "as_sample"]

def check_import_allowed(class_path: str, allow: Iterable[str] = ()) -> None:
    """Refuse import paths outside the allow-list (the rule of :mod:`thelper.config.imports`,
    which ``thelper config validate`` applies before anything runs).

    Raises:
        ConfigError: The module is not under an allowed prefix; the message says how to allow it.
    """
    if not import_allowed(class_path, allow):
        raise ConfigError(f"class_path {class_path!r}: {allow_list_message(class_path, allow)}")


def import_object(class_path: str) -> Any:
    """Import ``package.module.Name`` or ``package.module:Name``.

    Raises:
        ConfigError: The module or attribute does not exist.
    """
    module_name, attr = split_import_path(class_path)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"class_path {class_path!r}: cannot import {module_name!r}: {exc}") \
            from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"class_path {class_path!r}: module {module_name!r} has no "
                          f"attribute {attr!r}") from None


def as_sample(item: Any) -> dict[str, Any]:
    """A sample as a dict; tuples/lists become ``{"0": ..., "1": ...}``."""
    if isinstance(item, dict):
        return item
    if isinstance(item, list | tuple):
        return {str(i): v for i, v in enumerate(item)}
    return {"input": item}


class SklearnDataset(Dataset):
    """A data set bundled with scikit-learn (no download).

    ``digits`` (Alpaydin & Kaynak, UCI ML optical recognition of handwritten digits): 1,797
    samples, 10 classes, as ``(1, 8, 8)`` float32 images in ``[0, 1]`` (``scale=True``) or flat
    ``(64,)`` vectors. ``iris``, ``wine``, ``breast_cancer``: ``(F,)`` float32 feature vectors.
    Labels are int64 class indices; :attr:`task` names the classes.

    Args:
        name: ``digits``, ``iris``, ``wine`` or ``breast_cancer``.
        as_image: digits only: ``(1, 8, 8)`` instead of ``(64,)``.
        scale: digits only: divide by 16.
        classes: Keep only the samples of these class names (``str`` or ``int``); the task
            has these classes, in the data set's order, and labels index them.

    Raises:
        DataError: Unknown data set, or a class name the data set does not have.
    """

    def __init__(self, name: str = "digits", as_image: bool = True, scale: bool = True,
                 classes: Sequence[str | int] | None = None) -> None:
        from sklearn import datasets as skd

        loader = getattr(skd, f"load_{name}", None)
        if loader is None:
            raise DataError(f"scikit-learn has no bundled data set {name!r}")
        bunch = loader()
        x = np.asarray(bunch.data, dtype=np.float32)
        if name == "digits":
            if scale:
                x = x / 16.0
            if as_image:
                x = x.reshape(-1, 1, 8, 8)
        names = [str(n) for n in bunch.target_names]
        target = np.asarray(bunch.target, dtype=np.int64)
        self.classes = None if classes is None else [str(c) for c in classes]
        if self.classes is not None:
            unknown = [c for c in self.classes if c not in names]
            if unknown:
                raise DataError(f"sklearn data set {name!r} has no class {unknown[0]!r} (its "
                                f"classes: {', '.join(names)}); fix params.classes")
            kept = sorted({names.index(c) for c in self.classes})
            keep = np.isin(target, kept)
            remap = np.full(len(names), -1, dtype=np.int64)
            remap[kept] = np.arange(len(kept))
            x, target = x[keep], remap[target[keep]]
            names = [names[i] for i in kept]
        self.name = name
        self.inputs = torch.from_numpy(np.ascontiguousarray(x))
        self.targets: list[int] = [int(t) for t in target]
        self._labels = torch.as_tensor(self.targets, dtype=torch.int64)
        self.task: Task = Classification(names)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input": self.inputs[index], "label": self._labels[index]}

    def __repr__(self) -> str:
        classes = "" if self.classes is None else f", classes={self.task.class_names!r}"
        return f"SklearnDataset(name={self.name!r}{classes}, samples={len(self)})"


class TorchDatasetAdapter(Dataset):
    """Wrap any ``torch.utils.data.Dataset`` class given by import path.

    Args:
        class_path: ``package.module.ClassName``; must pass :func:`check_import_allowed`.
        params: Constructor keyword arguments.
        task: The task block of the config (gives the sample keys).
        allow: Extra allowed module prefixes (the config's ``imports.allow``).

    Raises:
        ConfigError: The class is not allowed (see :func:`thelper.config.imports.import_denied`
            for what never is), not importable, not a data set class or not constructible.
    """

    def __init__(self, class_path: str, params: dict[str, Any] | None = None,
                 task: Task | None = None, allow: Iterable[str] = ()) -> None:
        check_import_allowed(class_path, allow)
        cls = import_object(class_path)
        if isinstance(cls, type) and issubclass(cls, TorchDatasetAdapter):
            raise ConfigError(f"class_path {class_path!r} is the import adapter itself; a "
                              "nested adapter would import under an allow-list of its own "
                              "params: name the data set class directly")
        if not (isinstance(cls, type) and (issubclass(cls, Dataset) or (
                hasattr(cls, "__getitem__") and hasattr(cls, "__len__")))):
            raise ConfigError(f"class_path {class_path!r} is not a data set class (a "
                              "torch.utils.data.Dataset subclass, or a class with __getitem__ "
                              "and __len__); only such classes are built from a config")
        try:
            self.dataset = cls(**(params or {}))
        except Exception as exc:
            raise ConfigError(f"class_path {class_path!r}: construction failed: "
                              f"{type(exc).__name__}: {exc}") from exc
        self.class_path = class_path
        if task is not None:
            self.task = task
        targets = getattr(self.dataset, "targets", None)
        if targets is not None:
            try:
                self.targets = [int(t) for t in targets]
            except (TypeError, ValueError):
                pass

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return as_sample(self.dataset[index])

    def __repr__(self) -> str:
        return f"TorchDatasetAdapter({self.class_path}, samples={len(self)})"
