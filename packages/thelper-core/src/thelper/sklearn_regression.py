"""Regression data sets bundled with scikit-learn (no download), for the ``regression`` task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thelper.exceptions import DataError
from thelper.tasks import Regression

__all__ = ["SklearnRegressionDataset"]

_NAMES = ("diabetes", "linnerud")


class SklearnRegressionDataset(Dataset):
    """A regression data set bundled with scikit-learn.

    * ``diabetes`` (Efron, Hastie, Johnstone & Tibshirani, "Least Angle Regression", Annals
      of Statistics 2004): 442 patients, 10 baseline features (age, sex, BMI, blood
      pressure, six blood serum measurements; mean-centred and scaled by scikit-learn) and
      one target, a quantitative measure of disease progression one year later (25 to 346).
    * ``linnerud``: 20 middle-aged men, 3 exercise features, 3 physiological targets.

    Each sample is ``{"input": (F,) float32, "target": (T,) float32}``; :attr:`task` is a
    :class:`~thelper.tasks.Regression` with ``target_shape = [T]`` and, with ``standardize``,
    the targets' mean and standard deviation (so that the model learns standardised values
    while metrics stay in target units).

    Args:
        name: ``diabetes`` or ``linnerud``.
        standardize: Put the targets' mean/std in the task (see above).

    Raises:
        DataError: Unknown name.
    """

    def __init__(self, name: str = "diabetes", standardize: bool = True) -> None:
        from sklearn import datasets as skd

        if name not in _NAMES:
            raise DataError(f"sklearn_regression: unknown data set {name!r}; choose one of "
                            f"{', '.join(_NAMES)}")
        bunch = getattr(skd, f"load_{name}")()
        x = np.asarray(bunch.data, dtype=np.float32)
        y = np.asarray(bunch.target, dtype=np.float32)
        if y.ndim == 1:
            y = y[:, None]
        self.name = name
        self.inputs = torch.from_numpy(x)
        self.targets_values = torch.from_numpy(y)
        mean = std = None
        if standardize:
            mean = [round(float(v), 6) for v in y.mean(axis=0)]
            std = [round(float(v), 6) for v in y.std(axis=0)]
            if len(mean) == 1:
                mean, std = mean[0], std[0]
        self.task = Regression(target_shape=[y.shape[1]], target_mean=mean, target_std=std,
                               input_key="input", label_key="target")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input": self.inputs[index], "target": self.targets_values[index]}

    def __repr__(self) -> str:
        return (f"SklearnRegressionDataset(name={self.name!r}, samples={len(self)}, "
                f"features={self.inputs.shape[1]}, targets={self.targets_values.shape[1]})")
