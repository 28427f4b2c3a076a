"""The ``example_moons`` dataset: scikit-learn's two interleaving half circles."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from thelper.tasks import Classification

__all__ = ["TwoMoons", "CLASS_NAMES"]

#: Class names in label order: ``make_moons`` gives label 0 to the upper half circle
#: (centred on the origin) and label 1 to the lower one (centred on ``(1, 0.5)``).
CLASS_NAMES = ("upper", "lower")


class TwoMoons(Dataset):
    """Two interleaving half circles with Gaussian noise, generated in memory.

    Points come from :func:`sklearn.datasets.make_moons` (scikit-learn's toy data set
    generator); the same ``seed`` always gives the same points, so splits are reproducible.
    With ``noise=0.2`` the classes overlap a little: a good non-linear classifier reaches
    about 95-97% accuracy, a linear one about 85%.

    Args:
        n_samples: Total number of points (the two moons get ``n_samples // 2`` and the rest).
        noise: Standard deviation of the Gaussian noise added to each coordinate.
        seed: Seed of the generator.

    Attributes:
        task: ``Classification(["upper", "lower"])``: the dataset defines its own task, so a
            config needs no ``task`` block (the component's metadata says
            ``provides_task``).
        targets: Label of every sample (``list[int]``), read by the core to stratify splits
            without loading samples.

    Samples:
        ``{"input": (2,) float32 tensor, "label": () int64 tensor}``.
    """

    def __init__(self, n_samples: int = 1000, noise: float = 0.2, seed: int = 0) -> None:
        from sklearn.datasets import make_moons

        x, y = make_moons(n_samples=n_samples, noise=noise, random_state=seed)
        self.n_samples, self.noise, self.seed = n_samples, noise, seed
        self.inputs = torch.as_tensor(x, dtype=torch.float32)
        self.labels = torch.as_tensor(y, dtype=torch.int64)
        self.targets: list[int] = [int(t) for t in y]
        self.task = Classification(list(CLASS_NAMES))

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"input": self.inputs[index], "label": self.labels[index]}

    def __repr__(self) -> str:
        return f"TwoMoons(n_samples={self.n_samples}, noise={self.noise}, seed={self.seed})"
