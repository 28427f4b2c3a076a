"""Train/valid/test splits: disjoint, stratified by class, reproducible from a seed.

Grouped data (tiles of one region, frames of one video, images of one patient) split by
group through a small protocol: a dataset may expose

- ``groups``: one hashable group id per sample (a sequence, or a method returning one;
  ``None`` means "no groups"). Whole groups are drawn into the splits, so two samples of one
  group never land in different splits.
- ``group_splits`` (optional): ``{group: split}`` (a mapping, or a method returning one)
  for groups whose split is fixed by the data set (e.g. a test region), whatever
  ``loaders.*_split`` say; the ratios split the other groups.
- ``group_regions()`` (optional): JSON-able facts about each group (e.g. its bounds),
  recorded in ``logs/splits.json``.

Datasets without ``groups`` split by sample index exactly as before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from thelper.tasks import Classification, Task

__all__ = ["dataset_labels", "split_indices", "dataset_groups", "split_groups",
           "split_dataset", "group_record"]

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


def _attr(dataset: Any, name: str) -> Any:
    value = getattr(dataset, name, None)
    return value() if callable(value) else value


def dataset_groups(dataset: Any) -> list[str] | None:
    """The group id of every sample (as strings), or ``None`` when the dataset has none.

    Raises:
        DataError: ``groups`` does not hold one id per sample.
    """
    from thelper.exceptions import DataError

    groups = _attr(dataset, "groups")
    if groups is None:
        return None
    groups = [str(g) for g in groups]
    if len(groups) != len(dataset):
        raise DataError(f"{type(dataset).__name__}.groups gives {len(groups)} group ids for "
                        f"{len(dataset)} samples; it must give one per sample")
    return groups


def split_groups(groups: Sequence[str], ratios: Mapping[str, float], seed: int,
                 fixed: Mapping[str, str] | None = None) -> dict[str, list[int]]:
    """Split samples by group: every sample of a group goes to the same split.

    Groups in ``fixed`` go to their split. The other groups are shuffled
    (``numpy.random.default_rng(seed)``, groups sorted by id first) and each is given to the
    split whose sample count is furthest below its share (``ratio × samples``, an unused
    remainder when the ratios sum to less than 1), so the splits get whole groups in about
    the proportions asked.

    Args:
        groups: Group id of each sample.
        ratios: ``{split: fraction}``; fractions sum to at most 1.
        seed: Seed of the group permutation.
        fixed: ``{group: split}`` of groups whose split is fixed.

    Returns:
        ``{split: sorted indices}`` for each split in ``ratios`` and in ``fixed``.
    """
    fixed = dict(fixed or {})
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    names = [s for s in SPLITS if s in ratios] + [s for s in ratios if s not in SPLITS]
    out: dict[str, list[int]] = {s: [] for s in names}
    for g, split in fixed.items():
        if g in members:
            out.setdefault(split, []).extend(members[g])
    free = sorted(g for g in members if g not in fixed)
    rng = np.random.default_rng(seed)
    order = [free[i] for i in rng.permutation(len(free))]
    total = sum(len(members[g]) for g in free)
    shares = {s: float(ratios[s]) * total for s in names}
    rest = max(0.0, 1.0 - sum(float(ratios[s]) for s in names)) * total
    if rest > 1e-9:
        shares[""] = rest  # samples no split uses
    counts = dict.fromkeys(shares, 0)
    for g in order:
        target = max(shares, key=lambda s: (shares[s] - counts[s]) / shares[s])
        counts[target] += len(members[g])
        if target:
            out[target].extend(members[g])
    return {s: sorted(v) for s, v in out.items()}


def split_dataset(dataset: Any, ratios: Mapping[str, float], seed: int,
                  task: Task | None = None) -> dict[str, list[int]]:
    """Split one dataset: by group when it exposes ``groups`` (see the module docstring),
    else by sample index, stratified by class for classification tasks.

    Args:
        dataset: The dataset.
        ratios: ``{split: fraction}``.
        seed: The split seed.
        task: The dataset's task (for stratification); default ``dataset.task``.

    Returns:
        ``{split: sorted indices}``.
    """
    groups = dataset_groups(dataset)
    if groups is not None:
        fixed = _attr(dataset, "group_splits")
        return split_groups(groups, ratios, seed, {str(k): str(v) for k, v in
                                                    (fixed or {}).items()})
    task = task if task is not None else getattr(dataset, "task", None)
    labels = dataset_labels(dataset, task) if task is not None else None
    return split_indices(len(dataset), ratios, seed, labels)


def group_record(dataset: Any, indices: Mapping[str, Sequence[int]]) -> dict[str, Any] | None:
    """What ``logs/splits.json`` keeps of a grouped dataset: the groups of each split, the
    fixed ones, and ``group_regions()`` when the dataset has it; ``None`` without groups."""
    groups = dataset_groups(dataset)
    if groups is None:
        return None
    record: dict[str, Any] = {
        "groups": {s: sorted({groups[i] for i in idx}) for s, idx in indices.items()},
        "fixed": {str(k): str(v) for k, v in (_attr(dataset, "group_splits") or {}).items()},
    }
    regions = getattr(dataset, "group_regions", None)
    if callable(regions):
        record["regions"] = regions()
    return record
