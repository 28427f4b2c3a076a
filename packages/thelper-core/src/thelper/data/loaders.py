"""DataLoaders for the train/valid/test splits.

Each split is a :class:`SplitDataset`: the union of its datasets' selected indices, with
the split's transforms applied to the input key. Training order and worker seeds come from a
``torch.Generator`` reseeded at every epoch from ``(worker seed, epoch)``, so an epoch's order
and augmentations depend only on the seed and the epoch number: identical after a resume.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from thelper.data.datasets import as_sample
from thelper.exceptions import DataError

__all__ = ["SplitDataset", "Compose", "epoch_seed", "seed_worker", "make_loader"]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)`` with numpy's ``SeedSequence``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a loader worker from torch's per-worker seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


class Compose:
    """Apply transforms in order to one value."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class SplitDataset(Dataset):
    """Selected samples of one or more datasets, with a transform on the input key.

    Args:
        parts: ``[(dataset_name, dataset, indices)]``.
        input_key: Sample key the transform applies to.
        transform: Callable on the input (``None`` for identity).
        label_key: Sample key of the class label (for ``label_maps``).
        label_maps: ``{dataset_name: [merged index of own class i]}`` for datasets whose
            class list differs from the session task's (after merging several datasets).
    """

    def __init__(self, parts: Sequence[tuple[str, Dataset, Sequence[int]]], input_key: str,
                 transform: Callable[[Any], Any] | None = None, label_key: str | None = None,
                 label_maps: dict[str, list[int]] | None = None) -> None:
        self.parts = [(name, ds, list(idx)) for name, ds, idx in parts]
        self.input_key = input_key
        self.transform = transform
        self.label_key = label_key
        self.label_maps = {k: torch.as_tensor(v) for k, v in (label_maps or {}).items()}
        self._offsets = np.cumsum([0] + [len(idx) for _, _, idx in self.parts])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def locate(self, index: int) -> tuple[str, Dataset, int]:
        """``(dataset name, dataset, index in that dataset)`` of split sample ``index``."""
        part = int(np.searchsorted(self._offsets, index, side="right")) - 1
        name, ds, idx = self.parts[part]
        return name, ds, idx[index - int(self._offsets[part])]

    def __getitem__(self, index: int) -> dict[str, Any]:
        name, ds, i = self.locate(index)
        sample = as_sample(ds[i])
        if self.input_key not in sample:
            raise DataError(f"dataset {name!r} sample {i} has no key {self.input_key!r} "
                            f"(keys: {', '.join(map(str, sample))}); set the task's input_key")
        if self.transform is not None:
            sample = dict(sample)
            sample[self.input_key] = self.transform(sample[self.input_key])
        remap = self.label_maps.get(name)
        if remap is not None and self.label_key in sample:
            label = sample[self.label_key]
            if not isinstance(label, str):
                sample = dict(sample)
                sample[self.label_key] = remap[int(label)]
        return sample


def make_loader(dataset: SplitDataset, batch_size: int, *, train: bool, workers: int,
                shuffle: bool, pin_memory: bool, drop_last: bool,
                generator: torch.Generator,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader:
    """A ``DataLoader`` for one split (shuffled and with ``drop_last`` only when training)."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and train,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last and train,
        generator=generator,
        worker_init_fn=seed_worker if workers > 0 else None,
        persistent_workers=False,
        collate_fn=collate_fn,
    )
