"""Params models of the core's datasets and samplers.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Any, Literal

from pydantic import Field

from thelper.params import Params

__all__ = [
    "SklearnDatasetParams", "SklearnRegressionParams", "TorchDatasetParams",
    "Hdf5DatasetParams", "ClassBalancedSamplerParams", "ClassWeightedSamplerParams",
]


class SklearnDatasetParams(Params):
    """A data set bundled with scikit-learn (no download)."""

    name: Literal["digits", "iris", "wine", "breast_cancer"] = "digits"
    """``digits``: 1,797 8x8 handwritten digits (10 classes, UCI ML optical digits);
    ``iris``, ``wine``, ``breast_cancer``: tabular UCI data sets."""
    as_image: bool = True
    """digits only: samples as ``(1, 8, 8)`` images (else flat ``(64,)`` vectors)."""
    scale: bool = True
    """digits only: scale pixel values from 0..16 to 0..1."""
    classes: list[str | int] | None = Field(default=None, min_length=1)
    """Keep only the samples of these classes (by name, e.g. ``[0, 1, 2, 3, 4]`` for the
    digits 0 to 4); the task then has these classes only, in the data set's order."""


class SklearnRegressionParams(Params):
    """A regression data set bundled with scikit-learn (no download)."""

    name: Literal["diabetes", "linnerud"] = "diabetes"
    """``diabetes``: 442 patients, 10 features, disease progression after one year (Efron et
    al., 2004); ``linnerud``: 20 samples, 3 features, 3 targets."""
    standardize: bool = True
    """Give the task the targets' mean and standard deviation, so that the model learns
    standardised targets while metrics stay in target units."""


class TorchDatasetParams(Params):
    """Any ``torch.utils.data.Dataset`` class by import path (allow-listed prefixes)."""

    class_path: str = Field(pattern=r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$")
    """Fully qualified class, e.g. ``torchvision.datasets.FakeData``; its module must start
    with an allowed prefix (torch, torchvision, thelper, or ``imports.allow``)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Constructor keyword arguments."""


class Hdf5DatasetParams(Params):
    """One split of an HDF5 archive written by ``thelper split``."""

    path: str = Field(min_length=1)
    """The ``.h5`` archive."""
    split: Literal["train", "valid", "test"] = "train"
    """Which split of the archive to read."""


class ClassBalancedSamplerParams(Params):
    """Rebalance classes: weight ``(1 / n_c) ** power`` per sample of class ``c``."""

    power: float = Field(default=1.0, ge=0.0)
    """0 keeps the natural class distribution, 1 draws every class equally often."""
    num_samples: int | None = Field(default=None, ge=1)
    """Draws per epoch (default: the split size)."""


class ClassWeightedSamplerParams(Params):
    """Draw classes with fixed probabilities proportional to ``weights``."""

    weights: dict[str, float] = Field(min_length=1)
    """Class name → relative weight (missing classes are never drawn)."""
    num_samples: int | None = Field(default=None, ge=1)
    """Draws per epoch (default: the split size)."""
