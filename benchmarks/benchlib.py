"""Shared pieces of the benchmark scripts: the cases, thelper's side and the raw side.

Two cases, both on real images shipped inside scikit-learn:

* ``digits``: the ``examples/digits-classification`` config as shipped (``simple_cnn`` on the
  1,797 8x8 handwritten digits, ``random_affine`` augmentation, Adam, the accuracy, top-3 and
  confusion-matrix metrics), on the CPU and without progress bar.
* ``resnet18``: torchvision's ``resnet18`` (random init) on 64x64 RGB crops of
  ``sklearn.datasets.load_sample_images()`` (``china.jpg``, ``flower.jpg``); the class of a crop
  is the image quadrant it comes from (8 classes). Random horizontal flip, ImageNet
  normalisation of the uint8 crops, SGD with momentum.

thelper's side is built the way ``thelper.runner`` builds a session (validated config,
``Session``, ``build_data``, ``build_model``, the registered trainer) and times the real
``Trainer.train_epoch``. The raw side is what a PyTorch user writes by hand: a tuple
``Dataset``, a plain ``DataLoader``, ``F.cross_entropy``, with no thelper import, seeded per
epoch as ``Trainer._seed_epoch`` does, so that both see the same samples in the same order.

thelper seeds the augmentations of every batch from ``(seed, epoch, the batch's indices)`` (so
that they do not depend on the worker that loads it, and repeat after a mid-epoch resume). A
plain script lets its augmentations draw from the global RNG instead, so its losses cannot
match thelper's bit for bit; the *exact* raw variant replicates thelper's per-batch seeding by
hand (same calls), and its losses must equal thelper's to 1e-6: that proves both sides do the
same work.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from benchreport import dump_json, loadavg, machine_line, median, print_table
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

__all__ = ["SampleCrops", "TupleDataset", "ThelperRun", "RawRun", "InterleavedLoader", "RawSimpleCNN",
           "case_config", "digits_config", "resnet18_config", "thelper_session", "epoch_seed",
           "batch_seed", "seeded_call", "EpochPermutation", "mean_loss", "dump_json",
           "loadavg", "machine_line", "median", "print_table", "CASES", "SEEDS"]

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent
DIGITS_EXAMPLE = ROOT / "examples" / "digits-classification" / "config.yaml"
SEEDS = {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0}
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
CROP_CLASSES = [f"{img}-{q}" for img in ("china", "flower") for q in ("tl", "tr", "bl", "br")]
CASES = ("digits", "resnet18")


# ----------------------------------------------------------------------------- datasets
class SampleCrops(Dataset):
    """Random ``size`` x ``size`` RGB crops of scikit-learn's two sample photographs.

    Sample ``i`` has class ``i % 8``: photograph ``class // 4`` (china, flower), quadrant
    ``class % 4`` (top-left, top-right, bottom-left, bottom-right); the crop lies inside that
    quadrant at a position drawn from ``seed``. Samples are ``(image, label)`` tuples, as
    torchvision data sets return them: a ``(3, size, size)`` uint8 tensor and an int64 scalar.

    Args:
        n: Number of crops.
        size: Crop side in pixels (at most 213, half the photographs' height).
        seed: Seed of the crop positions.
    """

    def __init__(self, n: int = 480, size: int = 64, seed: int = 0) -> None:
        from sklearn.datasets import load_sample_images

        photos = load_sample_images().images  # 2 x (427, 640, 3) uint8
        rng = np.random.default_rng(seed)
        crops = np.empty((n, size, size, 3), dtype=np.uint8)
        labels = np.arange(n) % len(CROP_CLASSES)
        for i, c in enumerate(labels):
            photo = photos[c // 4]
            qh, qw = photo.shape[0] // 2, photo.shape[1] // 2
            top = (c % 4 // 2) * qh + int(rng.integers(0, qh - size + 1))
            left = (c % 2) * qw + int(rng.integers(0, qw - size + 1))
            crops[i] = photo[top:top + size, left:left + size]
        self.images = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.targets = [int(c) for c in labels]
        self.classes = list(CROP_CLASSES)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class TupleDataset(Dataset):
    """The raw side's dataset: ``(transform(x[i]), y[i])`` tuples over in-memory tensors.

    Args:
        x: Inputs ``(N, ...)``.
        y: Labels ``(N,)`` int64.
        transform: Applied to each input.
        aug_seed: ``None``: the transform draws from the global RNGs, as in any plain
            PyTorch script. An int: replicate thelper's per-batch seeding by hand (seed
            torch's CPU generator, NumPy and ``random`` from ``(aug_seed, epoch, batch
            indices)`` around the batch's transforms and restore the generator afterwards in
            the main process), so that the augmentations are the ones thelper draws.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 aug_seed: int | None = None) -> None:
        self.x, self.y, self.transform = x, y, transform
        self.aug_seed = aug_seed
        self.epoch = 1

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.x[index]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.y[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One batch; with ``aug_seed``, its transforms run under one seed."""
        if self.aug_seed is None or self.transform is None:
            return [self[i] for i in indices]
        return seeded_call(lambda: [self[i] for i in indices],
                           batch_seed(self.aug_seed, self.epoch, indices))


def batch_seed(seed: int, epoch: int, indices: Sequence[int]) -> int:
    """thelper's per-batch augmentation seed: BLAKE2b of ``seed, epoch, *indices`` as int64."""
    import hashlib
    import struct

    values = (int(seed), int(epoch), *map(int, indices))
    digest = hashlib.blake2b(struct.pack(f"<{len(values)}q", *values), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def seeded_call(fn: Callable[[], Any], seed: int) -> Any:
    """``fn()`` with torch's CPU generator, NumPy and ``random`` seeded from ``seed``; in the
    main process the CPU generator's state is restored afterwards (what thelper's loaders do
    once per batch)."""
    from torch.utils.data import get_worker_info

    gen = torch.default_generator
    restore = get_worker_info() is None
    if restore:
        state = gen.get_state()
    gen.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    try:
        return fn()
    finally:
        if restore:
            gen.set_state(state)


class EpochPermutation(torch.utils.data.Sampler[int]):
    """A shuffling sampler whose order is ``randperm(n)`` from a generator seeded with
    ``epoch_seed(seed, epoch)``: the cost of ``DataLoader(shuffle=True, generator=g)`` (one
    ``randperm`` per epoch) and the order thelper's ``EpochSampler`` draws."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = n, seed, 1

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(epoch_seed(self.seed, self.epoch))
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as ``(1797, 1, 8, 8)`` float32 in ``[0, 1]`` and int64 labels,
    computed exactly as ``thelper.data.datasets.SklearnDataset`` does."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / 16.0
    x = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 1, 8, 8)))
    return x, torch.as_tensor([int(t) for t in bunch.target], dtype=torch.int64)


# ------------------------------------------------------------------------------- configs
def digits_config(epochs: int = 5, metrics: bool = True,
                  train_fraction: float | None = None) -> dict[str, Any]:
    """The digits example as shipped, on the CPU, without progress bar.

    Args:
        epochs: ``trainer.epochs``.
        metrics: Keep the example's metrics; ``False`` removes every metric (``monitor:
            loss``) to isolate their cost.
        train_fraction: Replace the 0.8 training fraction (``--quick`` uses less data).
    """
    cfg = yaml.safe_load(DIGITS_EXAMPLE.read_text())
    cfg["name"] = "bench-digits"
    cfg["seeds"] = dict(SEEDS)
    cfg["trainer"].update(epochs=epochs, device="cpu", progress=False)
    if train_fraction is not None:
        cfg["loaders"]["train_split"] = {"digits": train_fraction}
    if not metrics:
        cfg["trainer"].update(metrics={}, test_metrics={}, monitor="loss")
    return cfg


def resnet18_config(epochs: int = 5, n: int = 480, metrics: bool = True) -> dict[str, Any]:
    """torchvision ``resnet18`` on :class:`SampleCrops` (80 % train, 20 % valid)."""
    return {
        "name": "bench-resnet18",
        "seeds": dict(SEEDS),
        "imports": {"allow": ["benchlib"]},
        "datasets": {"crops": {
            "type": "torch_dataset",
            "params": {"class_path": "benchlib.SampleCrops", "params": {"n": n}},
            "task": {"type": "classification",
                     "params": {"class_names": CROP_CLASSES, "input_key": "0",
                                "label_key": "1"}},
        }},
        "loaders": {
            "batch_size": 32, "workers": 0,
            "train_split": {"crops": 0.8}, "valid_split": {"crops": 0.2},
            "train_augments": [{"type": "random_horizontal_flip", "params": {"p": 0.5}}],
            "base_transforms": [{"type": "normalize",
                                 "params": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}}],
        },
        "model": {"type": "resnet18", "params": {}},
        "trainer": {
            "epochs": epochs, "device": "cpu", "progress": False,
            "monitor": "accuracy" if metrics else "loss",
            "optimization": {"optimizer": {"type": "sgd",
                                           "params": {"lr": 0.01, "momentum": 0.9}}},
            "metrics": {"accuracy": {"type": "accuracy"}} if metrics else {},
        },
    }


def case_config(case: str, epochs: int, n: int | None = None, metrics: bool = True,
                quick: bool = False) -> dict[str, Any]:
    """The config of ``case``; ``quick`` trains on 10 % of the digits."""
    if case == "digits":
        return digits_config(epochs, metrics, 0.1 if quick else None)
    if case == "resnet18":
        return resnet18_config(epochs, n or 480, metrics)
    raise ValueError(f"unknown case {case!r}; one of {', '.join(CASES)}")


# --------------------------------------------------------------------------- thelper side
class ThelperRun:
    """A session built as ``thelper.runner`` builds one, up to the trainer.

    Mirrors ``runner.run_session`` / ``runner._execute``: validate the config against the
    registry, draw the seeds, create the session directory, then ``thelper.build.assemble``
    (datasets, splits, loaders, model, the registered trainer). Lifecycle hooks (``session_start``,
    ``epoch_end``) are not called: they run once per session/epoch, outside the timed epoch.

    Args:
        config: A session config as plain data.
        save_dir: Parent of the session directory (created by thelper).
    """

    def __init__(self, config: dict[str, Any], save_dir: Path) -> None:
        from thelper.build import assemble
        from thelper.config import document_from_dict, validate_document
        from thelper.plugins import get_plugin_manager
        from thelper.session import Session, create_session_dir, draw_seeds

        pm = get_plugin_manager()
        registry = pm.registry
        cfg = validate_document(document_from_dict(config), registry,
                                allow_imports=("benchlib",))
        seeds = draw_seeds(cfg.seeds.model_dump())
        session_dir = create_session_dir(Path(save_dir), cfg.name)
        dump = cfg.model_dump(mode="json", exclude_none=False)
        dump["seeds"] = dict(seeds)
        session = Session(name=cfg.name, session_dir=session_dir, config=dump, cfg=cfg,
                          seeds=seeds, plugins=pm)
        if cfg.trainer.deterministic:  # as runner._execute does
            torch.use_deterministic_algorithms(True, warn_only=False)
        parts = assemble(cfg, seeds, registry, session=session)
        self.session = session
        self.data = parts.data
        self.trainer = parts.trainer

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """Seed the epoch as ``Trainer.fit`` does, then time ``Trainer.train_epoch``.

        Returns:
            ``(wall seconds, process CPU seconds, mean training loss)``.
        """
        self.trainer._seed_epoch(epoch)
        t0, c0 = time.perf_counter(), time.process_time()
        out = self.trainer.train_epoch(epoch)
        return time.perf_counter() - t0, time.process_time() - c0, out["loss"]

    def train_epoch_interleaved(self, epoch: int, others: Sequence[RawRun]
                                ) -> tuple[tuple[float, float, float], list[tuple[float, float, float]]]:
        """Time ``Trainer.train_epoch`` with one step of every ``others`` run after each of
        thelper's steps, in the same time window (see :class:`InterleavedLoader`).

        Each side keeps its own CPU RNG stream (swapped in and out outside the timed spans),
        so thelper's dropout masks and losses are those of an uninterleaved epoch.

        Returns:
            ``((wall s, CPU s, mean loss) of thelper, [the same for each of others])``; each
            side's time is the sum of its own spans only.
        """
        for other in others:
            other.begin_epoch(epoch)
        self.trainer._seed_epoch(epoch)
        loaders = self.trainer.data.loaders
        real = loaders["train"]
        loaders["train"] = wrapped = InterleavedLoader(real, others)
        try:
            t0, c0 = time.perf_counter(), time.process_time()
            out = self.trainer.train_epoch(epoch)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            loaders["train"] = real
        mine = (wall - wrapped.paused[0], cpu - wrapped.paused[1], out["loss"])
        return mine, [other.end_epoch() for other in others]

    @staticmethod
    def check_replica() -> None:
        """Check that :func:`epoch_seed` and :func:`batch_seed` restate thelper's.

        Raises:
            AssertionError: thelper changed its seeding; update the raw side.
        """
        from thelper.data import loaders

        for s, e, idx in ((0, 1, [0]), (7, 3, [11, 4, 9])):
            assert loaders.epoch_seed(s, e) == epoch_seed(s, e), "epoch_seed changed"
            assert loaders.batch_seed(s, e, idx) == batch_seed(s, e, idx), "batch seed changed"

    def train_indices(self) -> dict[str, list[int]]:
        """``{dataset: train indices}`` thelper's split drew."""
        return {name: list(idx["train"]) for name, idx in self.data.indices.items()}


class InterleavedLoader:
    """thelper's training loader, running one step of each raw run between two of its batches.

    When the trainer asks for its next batch, every raw run (:meth:`RawRun.step`) takes one
    step first, in an order that rotates from step to step; the time this takes is added to
    :attr:`paused` so that it can be taken out of thelper's epoch time. Both sides thus run in
    the same seconds: a shared machine that slows down for a while slows both alike, which
    alternating whole epochs (about 1 s each) cannot promise.

    Args:
        loader: thelper's training ``DataLoader`` (attributes are passed through).
        others: Raw runs whose :meth:`RawRun.begin_epoch` was called.
    """

    def __init__(self, loader: DataLoader, others: Sequence[RawRun]) -> None:
        self.loader = loader
        self.others = list(others)
        self.paused = [0.0, 0.0]  # wall, CPU seconds spent in the raw steps and around them

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self):
        for k, batch in enumerate(self.loader):
            yield batch
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(len(self.others)):
                self.others[(k + i) % len(self.others)].step()
            self.paused[0] += time.perf_counter() - t0
            self.paused[1] += time.process_time() - c0


def thelper_session(config: dict[str, Any]) -> tuple[ThelperRun, tempfile.TemporaryDirectory]:
    """A :class:`ThelperRun` in a fresh temporary directory (keep the directory alive)."""
    tmp = tempfile.TemporaryDirectory(prefix="thelper-bench-")
    return ThelperRun(config, Path(tmp.name)), tmp


# ------------------------------------------------------------------------------- raw side
def epoch_seed(seed: int, epoch: int) -> int:
    """The per-epoch seed of ``thelper.data.loaders.epoch_seed``, restated without thelper."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


class RawSimpleCNN(nn.Module):
    """The digits example's CNN written out by hand (``thelper_vision.models.SimpleCNN`` with
    ``channels=[32, 64]``, ``hidden=128``, ``dropout=0.25``): same layers, same creation order,
    so ``torch.manual_seed`` gives the same initial weights."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1,
                 channels: Sequence[int] = (32, 64), hidden: int = 128,
                 dropout: float = 0.25) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for width in channels:
            layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(prev, hidden),
                                        nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


class RawRun:
    """The hand-written PyTorch loop on the same data, model, optimizer and seeds.

    Args:
        case: ``digits`` or ``resnet18``.
        train_indices: Indices of the training samples in the full data set (what thelper's
            split drew, so both sides train on the same samples).
        n: Number of crops for ``resnet18``.
        workers: ``DataLoader`` workers.
        exact: Replicate thelper's per-batch augmentation seeding (:class:`TupleDataset`);
            otherwise augmentations draw from the global RNGs as in a plain script.
        metrics: Also compute, written by hand, the training metrics of the case's thelper
            config (digits: accuracy, top-3 accuracy and a 10x10 confusion matrix;
            resnet18: accuracy), counts kept as tensors and read once per epoch, as a
            PyTorch user would; see :meth:`_update_metrics`.
    """

    def __init__(self, case: str, train_indices: Sequence[int], n: int | None = None,
                 workers: int = 0, exact: bool = False, metrics: bool = False) -> None:
        from torchvision.transforms import v2

        self.seeds = dict(SEEDS)
        idx = torch.as_tensor(list(train_indices), dtype=torch.int64)
        if case == "digits":
            x, y = digits_tensors()
            transform = v2.RandomAffine(degrees=8, translate=(0.08, 0.08))
            torch.manual_seed(self.seeds["torch"])
            model: nn.Module = RawSimpleCNN(10)
            make_opt: Callable[[Any], torch.optim.Optimizer] = \
                lambda p: torch.optim.Adam(p, lr=0.002)  # noqa: E731
        elif case == "resnet18":
            import torchvision

            ds = SampleCrops(n=n or 480)
            x, y = ds.images, ds.labels
            transform = v2.Compose([v2.RandomHorizontalFlip(p=0.5),
                                    v2.ToDtype(torch.float32, scale=True),
                                    v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
            torch.manual_seed(self.seeds["torch"])
            model = torchvision.models.resnet18(num_classes=len(CROP_CLASSES))
            make_opt = lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9)  # noqa: E731
        else:
            raise ValueError(f"unknown case {case!r}")
        self.dataset = TupleDataset(x[idx], y[idx], transform,
                                    aug_seed=self.seeds["torch"] if exact else None)
        self.sampler = EpochPermutation(len(self.dataset), self.seeds["worker"])
        # the loader draws its workers' base seed from this generator at every epoch start
        # (without one it would draw from the global RNG, shifting the dropout masks)
        self.generator = torch.Generator()
        self.loader = DataLoader(self.dataset, batch_size=32, sampler=self.sampler,
                                 num_workers=workers, generator=self.generator)
        self.model = model
        self.optimizer = make_opt(model.parameters())
        self.metrics = metrics
        self.case = case
        self.num_classes = 10 if case == "digits" else len(CROP_CLASSES)

    def _reset_metrics(self) -> None:
        self._correct = torch.zeros((), dtype=torch.int64)
        self._correct3 = torch.zeros((), dtype=torch.int64)
        self._confusion = torch.zeros(self.num_classes ** 2, dtype=torch.int64)

    def _update_metrics(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        """Accuracy (and for digits top-3 accuracy and the confusion matrix) of one batch."""
        pred = logits.argmax(dim=1)
        self._correct += (pred == y).sum()
        if self.case == "digits":
            self._correct3 += (logits.topk(3, dim=1).indices == y[:, None]).any(dim=1).sum()
            self._confusion += torch.bincount(y * self.num_classes + pred,
                                              minlength=self.num_classes ** 2)

    def _read_metrics(self) -> dict[str, Any]:
        """The epoch-end read of the metrics (one host sync each, as thelper's ``compute``),
        kept in :attr:`epoch_metrics`."""
        n = len(self.dataset)
        self.epoch_metrics = {"accuracy": float(self._correct) / n,
                              "top3": float(self._correct3) / n,
                              "confusion": self._confusion.tolist()}
        return self.epoch_metrics

    def seed_epoch(self, epoch: int) -> None:
        """What ``Trainer._seed_epoch`` does: the global RNGs and the epoch's order."""
        s = self.seeds
        torch.manual_seed(epoch_seed(s["torch"], epoch))
        np.random.seed(epoch_seed(s["numpy"], epoch) % 2**32)
        random.seed(epoch_seed(s["random"], epoch))
        self.sampler.epoch = epoch
        self.dataset.epoch = epoch
        self.generator.manual_seed(epoch_seed(s["worker"], epoch))

    def train_epoch(self, epoch: int) -> tuple[float, float, float]:
        """Seed the epoch, then time the plain loop.

        Returns:
            ``(wall seconds, process CPU seconds, mean training loss)``; the mean is weighted
            by batch size and summed in float32 in batch order, as thelper reports it.
        """
        self.seed_epoch(epoch)
        model, opt = self.model, self.optimizer
        model.train()
        losses: list[torch.Tensor] = []
        metrics = self.metrics
        self._reset_metrics()
        t0, c0 = time.perf_counter(), time.process_time()
        for x, y in self.loader:
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            if metrics:
                self._update_metrics(logits.detach(), y)
        if metrics:
            self._read_metrics()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        return wall, cpu, mean_loss(losses, len(self.dataset), self.loader.batch_size or 1)


    # ------------------------------------------------------------ step by step
    def begin_epoch(self, epoch: int) -> None:
        """Seed the epoch as :meth:`train_epoch` does, for :meth:`step` calls interleaved with
        another side's steps (see :class:`InterleavedLoader`); this run's CPU RNG state is
        kept apart from the global one between steps."""
        self.seed_epoch(epoch)
        self.model.train()
        self._rng = torch.get_rng_state()
        self._batches = iter(self.loader)
        self._losses: list[torch.Tensor] = []
        self._spent = [0.0, 0.0]
        self._reset_metrics()

    def step(self) -> None:
        """One step of the plain loop (``next`` batch, ``zero_grad``, forward, loss,
        ``backward``, ``step``) under this run's own RNG stream; its wall and CPU time are
        added up for :meth:`end_epoch`. Does nothing once the epoch's batches are used up."""
        outer = torch.get_rng_state()
        torch.set_rng_state(self._rng)
        model, opt = self.model, self.optimizer
        t0, c0 = time.perf_counter(), time.process_time()
        batch = next(self._batches, None)
        if batch is not None:
            x, y = batch
            opt.zero_grad()
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            opt.step()
            self._losses.append(loss.detach())
            if self.metrics:
                self._update_metrics(logits.detach(), y)
        self._spent[0] += time.perf_counter() - t0
        self._spent[1] += time.process_time() - c0
        self._rng = torch.get_rng_state()
        torch.set_rng_state(outer)

    def end_epoch(self) -> tuple[float, float, float]:
        """``(wall s, CPU s, mean loss)`` of the steps since :meth:`begin_epoch` (and of the
        end-of-epoch metric read, with ``metrics``)."""
        if self.metrics:
            t0, c0 = time.perf_counter(), time.process_time()
            self._read_metrics()
            self._spent[0] += time.perf_counter() - t0
            self._spent[1] += time.process_time() - c0
        return (self._spent[0], self._spent[1],
                mean_loss(self._losses, len(self.dataset), self.loader.batch_size or 1))


def mean_loss(losses: Sequence[torch.Tensor], n: int, batch_size: int) -> float:
    """Batch-size-weighted mean of per-batch losses, accumulated as ``Trainer`` does."""
    total = torch.zeros(())
    count = 0
    for i, loss in enumerate(losses):
        b = min(batch_size, n - i * batch_size)
        total += loss * b
        count += b
    return float(total) / max(count, 1)


