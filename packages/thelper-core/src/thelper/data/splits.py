"""Train/valid/test splits: disjoint, stratified by class, reproducible from a seed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from thelper.tasks import Classification, Task

__all__ = ["dataset_labels", "split_indices"]

SPLITS = ("train", "valid", "test")


def dataset_labels(dataset: Any, task: Task) -> list[Any] | None:
    """Class labels of every sample, for stratification.

    Uses ``dataset.targets`` when present (no decoding); otherwise reads every sample.
    Returns ``None`` for tasks that are not classification.
    """
    if not isinstance(task, Classification):
        return None
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return [task.label_index(t) if isinstance(t, str) else int(t) for t in targets]
    out = []
    for i in range(len(dataset)):
        label = dataset[i][task.label_key]
        if hasattr(label, "item"):
            label = label.item()
        out.append(task.label_index(label))
    return out


def _allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder allocation of ``n`` items to ``ratios`` (sum ≤ 1)."""
    exact = [n * r for r in ratios]
    counts = [int(np.floor(e)) for e in exact]
    target = min(n, int(round(n * sum(ratios))))
    order = sorted(range(len(ratios)), key=lambda i: exact[i] - counts[i], reverse=True)
    i = 0
    while sum(counts) < target and order:
        if ratios[order[i % len(order)]] > 0:
            counts[order[i % len(order)]] += 1
        i += 1
        if i > 10 * len(order) + n:
            break
    return counts


def split_indices(n: int, ratios: Mapping[str, float], seed: int,
                  labels: Sequence[Any] | None = None) -> dict[str, list[int]]:
    """Split ``range(n)`` into disjoint index lists.

    With ``labels``, each class is split separately (stratified) so that every split keeps
    the class proportions; counts are allocated by largest remainder.

    Args:
        n: Dataset size.
        ratios: ``{split: fraction}``; the fractions sum to at most 1.
        seed: Seed of the permutation (``numpy.random.default_rng``).
        labels: Per-sample class labels, or ``None`` for a plain random split.

    Returns:
        ``{split: sorted indices}`` for each split in ``ratios``.
    """
    rng = np.random.default_rng(seed)
    names = [s for s in SPLITS if s in ratios] + [s for s in ratios if s not in SPLITS]
    r = [float(ratios[s]) for s in names]
    out: dict[str, list[int]] = {s: [] for s in names}
    groups: list[np.ndarray]
    if labels is not None:
        arr = np.asarray(labels)
        groups = [np.flatnonzero(arr == c) for c in sorted(set(arr.tolist()))]
    else:
        groups = [np.arange(n)]
    for group in groups:
        perm = rng.permutation(group)
        counts = _allocate(len(perm), r)
        start = 0
        for s, c in zip(names, counts, strict=True):
            out[s].extend(int(i) for i in perm[start:start + c])
            start += c
    return {s: sorted(v) for s, v in out.items()}
