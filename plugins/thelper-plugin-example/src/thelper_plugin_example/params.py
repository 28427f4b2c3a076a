"""Params models of the example plugin's components.

Torch-free on purpose: ``thelper config validate`` imports this module when a config names
one of the example's components (:mod:`thelper_plugin_example.plugin` refers to the models by
``"thelper_plugin_example.params:MoonsParams"`` strings, so other commands never import it),
and must stay fast. Each field's docstring becomes its description in ``thelper config
schema``; unknown keys are errors because :class:`thelper.params.Params` sets
``extra="forbid"``.
"""

from __future__ import annotations

from pydantic import Field

from thelper.params import Params

__all__ = ["MoonsParams", "RBFNetParams", "BalancedAccuracyParams"]


class MoonsParams(Params):
    """Two interleaving half circles (scikit-learn's ``make_moons``), a 2-D toy problem."""

    n_samples: int = Field(default=1000, ge=2)
    """Total number of points, split evenly between the two moons."""
    noise: float = Field(default=0.2, ge=0.0)
    """Standard deviation of the Gaussian noise added to each coordinate."""
    seed: int = Field(default=0, ge=0)
    """Seed of the generator: the same seed always gives the same points."""


class RBFNetParams(Params):
    """A radial basis function network: Gaussian units around learned centres, then a
    linear head sized from the task."""

    in_features: int = Field(default=2, ge=1)
    """Features per sample ``F`` (2 for the moons)."""
    num_centers: int = Field(default=16, ge=1)
    """Number of Gaussian units ``K`` (learned centres)."""
    init_range: float = Field(default=2.0, gt=0.0)
    """Centres start uniformly in ``[-init_range, init_range]`` along every feature."""
    init_width: float = Field(default=0.5, gt=0.0)
    """Initial width (standard deviation) ``sigma`` of every Gaussian unit."""
    learn_widths: bool = True
    """Learn one width per unit (else keep ``init_width``)."""


class BalancedAccuracyParams(Params):
    """Balanced accuracy: the mean of the per-class recalls (scikit-learn's
    ``balanced_accuracy_score``)."""

    adjusted: bool = False
    """Rescale so that chance level is 0 and a perfect score 1:
    ``(score - 1/C) / (1 - 1/C)`` with ``C`` the number of classes present."""
