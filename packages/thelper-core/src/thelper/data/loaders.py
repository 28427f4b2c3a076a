"""DataLoaders for the train/valid/test splits.

Each split is a :class:`SplitDataset`: the union of its datasets' selected indices, with
the split's transforms applied to the input key. Determinism is by construction, so that a
resumed run (even one killed mid-epoch, with any number of workers) sees exactly the data
of an uninterrupted run:

* the order of an epoch is a permutation drawn from ``(worker seed, epoch)`` by
  :class:`EpochSampler`, which can start at any position of that permutation;
* the random transforms are seeded once per batch, from ``(augmentation seed, epoch, the
  batch's sample indices)`` (torch's CPU generator, NumPy and ``random``), and the samples
  of the batch then draw in order. A batch is always loaded whole by one process
  (:meth:`SplitDataset.__getitems__`) and a mid-epoch resume restarts at a batch boundary,
  so the draws depend neither on the worker nor on what was loaded before; they differ
  between epochs and repeat after a resume. ``dataset[i]`` alone is a batch of one;
* the epoch travels with the indices: :class:`EpochSampler` yields ``(epoch, index)``
  pairs, from which :class:`SplitDataset` takes the epoch of a batch's seed. Loader workers
  are therefore kept alive across epochs (``persistent_workers``, no start-up cost per
  epoch) although they hold a copy of the dataset made at the first epoch: its ``epoch``
  attribute, set in the main process, would be stale there.

Seeding per batch rather than per sample is for speed: reseeding costs tens of microseconds
(``SeedSequence``, saving and restoring the generator), about as much as a small
augmentation, so per sample it made the digits example's loader 3-4 times slower than a
plain ``DataLoader`` (``benchmarks/bench_data.py``).
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate, get_worker_info

from thelper.data.datasets import as_sample
from thelper.exceptions import DataError

__all__ = ["SplitDataset", "Compose", "EpochSampler", "epoch_seed", "batch_seed", "seed_worker",
           "make_loader", "SKIPPED_KEY"]

#: Batch key holding the number of samples skipped in that batch (``skip_bad_samples``).
SKIPPED_KEY = "__skipped__"


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from ``(seed, epoch)`` with numpy's ``SeedSequence``."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


def batch_seed(seed: int, epoch: int, indices: Sequence[int]) -> int:
    """The 32-bit augmentation seed of the batch of split samples ``indices``.

    The first 4 bytes (little-endian) of the BLAKE2b hash (:mod:`hashlib`) of
    ``seed, epoch, *indices`` packed as little-endian int64. 32 bits because NumPy's global
    seeding accepts no more. Hashing every index, not just the first, keeps two batches that
    start with the same sample (samplers drawing with replacement) from sharing their random
    draws. About 2 µs for 32 indices (``numpy.random.SeedSequence`` over the same values took
    about 110 µs, 0.5-1 % of a digits training step).
    """
    values = (int(seed), int(epoch), *map(int, indices))
    digest = hashlib.blake2b(struct.pack(f"<{len(values)}q", *values), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class EpochSampler(Sampler[tuple[int, int]]):
    """Indices of one epoch: a permutation seeded by ``(seed, epoch)``, or ``range(n)``,
    sharded over the ranks of a job, each yielded with its epoch as ``(epoch, index)``.

    The pairs carry the epoch to :meth:`SplitDataset.__getitems__` in whatever process
    loads the batch (the per-batch augmentation seed depends on it), so that persistent
    loader workers need no message from the main process when an epoch starts.
    :meth:`indices` gives the plain indices.

    Args:
        size: Number of samples ``n``.
        shuffle: Draw a permutation (training) or keep the order (evaluation).
        seed: Base seed of the permutations.

    Call :meth:`set_epoch` before iterating; ``start`` skips the first samples of this
    rank's shard (to resume mid-epoch without loading them).

    Under several ranks (:meth:`set_shard`) every rank draws the same epoch order and keeps
    its part of it:

    * training (``contiguous=False``): positions ``rank, rank + W, rank + 2W, ...`` of the
      order padded by repeating its start to a multiple of the world size ``W`` (as
      ``torch.utils.data.DistributedSampler`` does), so that every rank runs the same number
      of steps and the ranks' batches ``k`` together are the single-process batch ``k`` of
      ``W`` times their size;
    * evaluation (``contiguous=True``): consecutive blocks of whole batches, without
      padding, so that each sample is evaluated exactly once and the batches are those of a
      single process: metrics reduced over the ranks equal the single-process ones.

    Subclasses override :meth:`order` (and :attr:`num_draws` when an epoch is not ``size``
    draws) and inherit the sharding and the ``(epoch, index)`` pairs.
    """

    def __init__(self, size: int, shuffle: bool, seed: int) -> None:
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 1
        self.start = 0
        self.rank = 0
        self.world_size = 1
        self.contiguous = False
        self.block = 1

    @property
    def num_draws(self) -> int:
        """Indices in one epoch's order over every rank."""
        return self.size

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and the position in this rank's shard."""
        self.epoch = epoch
        self.start = start

    def set_shard(self, rank: int, world_size: int, *, contiguous: bool = False,
                  block: int = 1) -> None:
        """Keep rank ``rank`` of ``world_size`` shards of each epoch.

        Args:
            rank: This process's rank.
            world_size: Number of ranks.
            contiguous: Consecutive blocks without padding (evaluation) instead of strided
                positions padded to equal length (training).
            block: With ``contiguous``, shard boundaries fall on multiples of this (the
                batch size).
        """
        self.rank, self.world_size = int(rank), int(world_size)
        self.contiguous, self.block = contiguous, max(int(block), 1)

    def order(self) -> list[int]:
        """The epoch's full order (every rank's)."""
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.size, generator=g).tolist()

    def _bounds(self, n: int) -> tuple[int, int]:
        per = -(-n // self.world_size)
        per = -(-per // self.block) * self.block
        lo = min(self.rank * per, n)
        return lo, min(lo + per, n)

    def shard_size(self) -> int:
        """Indices of this rank's shard in one epoch."""
        n = self.num_draws
        if self.world_size == 1:
            return n
        if self.contiguous:
            lo, hi = self._bounds(n)
            return hi - lo
        return -(-n // self.world_size)

    def shard(self, order: list[int]) -> list[int]:
        """This rank's part of ``order`` (see the class doc)."""
        if self.world_size == 1:
            return order
        n = len(order)
        if self.contiguous:
            lo, hi = self._bounds(n)
            return order[lo:hi]
        if n == 0:
            return order
        total = -(-n // self.world_size) * self.world_size
        padded = (order * -(-total // n))[:total]  # repeat the order's start to fill
        return padded[self.rank::self.world_size]

    def indices(self) -> list[int]:
        """This rank's indices of the epoch, from position ``start`` (what :meth:`__iter__`
        pairs with the epoch)."""
        return self.shard(self.order())[self.start:]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """``(epoch, index)`` for each index of :meth:`indices`."""
        epoch = int(self.epoch)
        return iter([(epoch, i) for i in self.indices()])

    def __len__(self) -> int:
        return max(self.shard_size() - self.start, 0)


class _SeededRNG:
    """Seed torch's CPU generator, NumPy and ``random`` for one batch's transforms.

    In the main process the CPU generator's state is restored afterwards (dropout draws from
    it); NumPy's and ``random``'s states are left as a function of (seed, epoch, batch), since
    the training step draws nothing from them. ``torch.default_generator.manual_seed`` is
    used rather than ``torch.manual_seed``, which also queues a lazy CUDA seed that records a
    formatted stack trace (measured at 0.35 ms or more per call: most of the loader's cost).
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.restore = get_worker_info() is None

    def __enter__(self) -> None:
        gen = torch.default_generator
        if self.restore:
            self._state = gen.get_state()
        gen.manual_seed(self.seed)
        np.random.seed(self.seed)
        random.seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        if self.restore:
            torch.default_generator.set_state(self._state)


def collate_skipping(collate: Callable[[list[Any]], Any] | None = None
                     ) -> Callable[[list[Any]], Any]:
    """Wrap a collate function to drop ``None`` samples (bad files) and count them."""
    inner = collate or default_collate

    def _collate(samples: list[Any]) -> Any:
        good = [s for s in samples if s is not None]
        skipped = len(samples) - len(good)
        if not good:
            return {SKIPPED_KEY: skipped}
        batch = inner(good)
        if isinstance(batch, dict):
            batch[SKIPPED_KEY] = skipped
        return batch

    return _collate


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

    Indices are split sample numbers ``i`` or ``(epoch, i)`` pairs (what
    :class:`EpochSampler` yields): the epoch of a pair seeds the transforms; plain indices
    use the :attr:`epoch` attribute (set it before each epoch when loading them directly).

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
                 label_maps: dict[str, list[int]] | None = None, seed: int = 0,
                 skip_bad_samples: bool = False) -> None:
        self.parts = [(name, ds, list(idx)) for name, ds, idx in parts]
        self.input_key = input_key
        self.transform = transform
        self.label_key = label_key
        self.seed = seed
        self.epoch = 1
        self.skip_bad_samples = skip_bad_samples
        self.label_maps = {k: torch.as_tensor(v) for k, v in (label_maps or {}).items()}
        self._offsets = [0, *itertools.accumulate(len(idx) for _, _, idx in self.parts)]

    def __len__(self) -> int:
        return self._offsets[-1]

    def locate(self, index: int) -> tuple[str, Dataset, int]:
        """``(dataset name, dataset, index in that dataset)`` of split sample ``index``.

        Raises:
            IndexError: ``index`` is outside ``[0, len(self))``.
        """
        if not 0 <= index < self._offsets[-1]:
            raise IndexError(f"split sample {index} out of range (size {self._offsets[-1]})")
        part = bisect.bisect_right(self._offsets, index) - 1
        name, ds, idx = self.parts[part]
        return name, ds, idx[index - self._offsets[part]]

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any] | None:
        """Sample ``index`` (or an ``(epoch, index)`` pair), its transforms seeded as a
        batch of one (see the module doc)."""
        return self.__getitems__([index])[0]

    def _unpack(self, items: Sequence[int | tuple[int, int]]) -> tuple[int, list[int]]:
        """``(epoch, indices)`` of a batch of indices or ``(epoch, index)`` pairs.

        Raises:
            ValueError: Pairs of different epochs in one batch.
        """
        if not items or not isinstance(items[0], tuple | list):
            return int(self.epoch), [int(i) for i in items]
        epochs = {int(e) for e, _ in items}
        if len(epochs) != 1:
            raise ValueError(f"one batch mixes epochs {sorted(epochs)}")
        return epochs.pop(), [int(i) for _, i in items]

    def __getitems__(self, indices: Sequence[int | tuple[int, int]]
                     ) -> list[dict[str, Any] | None]:
        """The samples of one batch, in order (what ``DataLoader`` calls per batch).

        The transforms of the whole batch run under one seed,
        :func:`batch_seed` ``(seed, epoch, indices)``, where ``epoch`` comes with the
        indices (``(epoch, index)`` pairs from :class:`EpochSampler`) or, for plain
        indices, from :attr:`epoch`.

        Args:
            indices: Split sample numbers, or ``(epoch, index)`` pairs of one epoch.

        Returns:
            One dict per index; ``None`` for an unreadable sample when
            ``skip_bad_samples`` is set.

        Raises:
            DataError: An unreadable sample (naming the dataset and its index) or a sample
                without the task's input key.
        """
        epoch, flat = self._unpack(indices)
        if self.transform is None or not flat:
            return [self._load(i) for i in flat]
        with _SeededRNG(batch_seed(self.seed, epoch, flat)):
            return [self._load(i) for i in flat]

    def _load(self, index: int) -> dict[str, Any] | None:
        name, ds, i = self.locate(index)
        try:
            sample = as_sample(ds[i])
        except DataError as exc:
            if not self.skip_bad_samples:
                raise DataError(f"dataset {name!r} sample {i}: {exc}; fix or remove the file, "
                                "or set loaders.skip_bad_samples: true") from exc
            import logging

            logging.getLogger("thelper").warning("skipping dataset %r sample %d: %s", name, i,
                                                 exc)
            return None
        if self.input_key not in sample:
            raise DataError(f"dataset {name!r} sample {i} has no key {self.input_key!r} "
                            f"(keys: {', '.join(map(str, sample))}); set the task's input_key")
        if self.transform is not None:  # a new dict: the dataset's own may be cached
            sample = {**sample, self.input_key: self.transform(sample[self.input_key])}
        remap = self.label_maps.get(name) if self.label_maps else None
        if remap is not None and self.label_key in sample:
            label = sample[self.label_key]
            if not isinstance(label, str):
                sample = dict(sample)
                sample[self.label_key] = remap[int(label)]
        return sample


def make_loader(dataset: SplitDataset, batch_size: int, *, train: bool, workers: int,
                shuffle: bool, pin_memory: bool, drop_last: bool, seed: int,
                collate_fn: Callable[[list[Any]], Any] | None = None,
                sampler: EpochSampler | None = None, rank: int = 0,
                world_size: int = 1) -> DataLoader:
    """A ``DataLoader`` for one split (shuffled and with ``drop_last`` only when training).

    Its sampler is an :class:`EpochSampler` (``loader.sampler``): call
    ``loader.sampler.set_epoch(epoch, start)`` before each epoch (and set
    ``dataset.epoch``, used only by direct ``dataset[i]`` calls). With ``world_size > 1``
    it yields rank ``rank``'s shard; ``batch_size`` is per rank.

    With ``workers > 0`` the workers persist across epochs (``persistent_workers``): they
    start once, at the first epoch, and learn each batch's epoch from the sampler's
    ``(epoch, index)`` pairs. Their NumPy and ``random`` seeds (:func:`seed_worker`) are
    then drawn once from ``generator``; the transforms do not depend on them (each batch is
    reseeded). A sampler that is not an :class:`EpochSampler` yields plain indices, whose
    epoch is the dataset's attribute: its workers restart every epoch, as before.
    """
    if sampler is None:
        sampler = EpochSampler(len(dataset), shuffle=shuffle and train, seed=seed)
    sampler.set_shard(rank, world_size, contiguous=not train, block=batch_size)
    # the loader draws its workers' base seed from this generator when an epoch starts:
    # without one it would draw from (and shift) the global torch RNG that dropout uses
    generator = torch.Generator()
    generator.manual_seed(seed)
    if dataset.skip_bad_samples:
        collate_fn = collate_skipping(collate_fn)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        drop_last=drop_last and train,
        worker_init_fn=seed_worker if workers > 0 else None,
        generator=generator,
        # kept alive across epochs: the epoch reaches them with the indices (see above)
        persistent_workers=workers > 0 and isinstance(sampler, EpochSampler),
        collate_fn=collate_fn,
    )
