"""Samplers that rebalance classes, seeded per epoch so that a resume repeats them exactly.

Both draw ``num_samples`` indices per epoch with replacement (``torch.multinomial``) from
per-sample weights ``w_i = weight(class_i)``:

* ``class_balanced``: ``weight(c) = (1 / n_c) ** power`` where ``n_c`` is the number of
  samples of class ``c`` in the split (``power=1``: every class drawn equally often on
  average; ``power=0``: the natural distribution; in between: partial rebalancing).
* ``class_weighted``: fixed weights per class name, normalised by class size so that class
  ``c`` is drawn with probability ``weight(c) / sum(weights)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch

from thelper.data.loaders import EpochSampler, epoch_seed
from thelper.exceptions import ConfigError

__all__ = ["WeightedEpochSampler", "class_balanced", "class_weighted"]


class WeightedEpochSampler(EpochSampler):
    """Draw ``num_samples`` indices per epoch with probabilities ``weights / sum(weights)``.

    Args:
        weights: Per-sample non-negative weights ``(N,)``.
        num_samples: Draws per epoch (``None``: ``N``).
        seed: Base seed of the draws.
    """

    def __init__(self, weights: Sequence[float], num_samples: int | None, seed: int) -> None:
        super().__init__(len(weights), shuffle=True, seed=seed)
        self.weights = torch.as_tensor(list(weights), dtype=torch.float64)
        if (self.weights < 0).any() or float(self.weights.sum()) <= 0:
            raise ConfigError("sampler weights must be non-negative with a positive sum")
        self.num_samples = int(num_samples or len(weights))

    def order(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.multinomial(self.weights, self.num_samples, replacement=True,
                                 generator=g).tolist()

    @property
    def num_draws(self) -> int:
        return self.num_samples


def _labels(labels: Sequence[int] | None, name: str) -> list[int]:
    if labels is None:
        raise ConfigError(f"sampler {name!r} needs class labels (a classification task)")
    return list(labels)


def class_balanced(labels: Sequence[int] | None = None, seed: int = 0, power: float = 1.0,
                   num_samples: int | None = None) -> WeightedEpochSampler:
    """Inverse class-frequency weights raised to ``power``.

    Args:
        labels: Class index of every sample of the split.
        seed: Base seed (the session's worker seed).
        power: Rebalancing strength (0: none, 1: uniform over classes).
        num_samples: Draws per epoch (default: the split size).
    """
    labels = _labels(labels, "class_balanced")
    counts = Counter(labels)
    weights = [(1.0 / counts[c]) ** power for c in labels]
    return WeightedEpochSampler(weights, num_samples, seed)


def class_weighted(weights: dict[str, float], labels: Sequence[int] | None = None,
                   class_names: Sequence[str] | None = None, seed: int = 0,
                   num_samples: int | None = None) -> WeightedEpochSampler:
    """Fixed class probabilities proportional to ``weights`` (class name → weight).

    Classes missing from ``weights`` get weight 0 (never drawn).

    Raises:
        ConfigError: A name in ``weights`` is not a class of the task.
    """
    labels = _labels(labels, "class_weighted")
    names = list(class_names or [])
    unknown = [k for k in weights if k not in names]
    if unknown:
        raise ConfigError(f"sampler class_weighted: unknown class(es) {unknown}; classes: "
                          f"{', '.join(names)}")
    counts = Counter(labels)
    per_class = {names.index(k): float(v) for k, v in weights.items()}
    sample_w = [per_class.get(c, 0.0) / counts[c] for c in labels]
    return WeightedEpochSampler(sample_w, num_samples, seed)
