"""The one assembly path: a validated config → datasets, splits, loaders, model, trainer.

Every command that needs data, a model or a trainer from a config calls :func:`assemble`
(or one of the pure builders it is made of): ``thelper run``/``resume``, ``config validate
--build/--dry-run``, ``split``, ``export``/``infer`` and plugins such as vision's ``viz``.
The builders touch no disk (``model.init_from`` is read); :func:`record` writes what a
session keeps about them (``logs/splits.json``, ``datasets.txt``, ``task.json``,
``model.txt``, ``init_from.json``), on rank 0 only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader

from thelper.data.datasets import check_import_allowed
from thelper.data.loaders import Compose, SplitDataset, make_loader
from thelper.data.splits import SPLITS, dataset_labels, group_record, split_dataset
from thelper.exceptions import ConfigError, DataError
from thelper.finetune import (
    apply_freeze,
    apply_unfreeze,
    check_unfreeze,
    describe,
    load_init,
    optimizer_params,
)
from thelper.registry import Registry
from thelper.runtime import Runtime
from thelper.tasks import Task

__all__ = ["SessionData", "Assembly", "assemble", "record", "build_data", "build_model",
           "build_transforms", "prepare_model"]


@dataclass
class SessionData:
    """Datasets, the merged task, the split indices and one loader per non-empty split.

    Attributes:
        datasets: ``{name: dataset}`` as configured.
        task: The merged task of every dataset.
        indices: ``{dataset: {split: [index, ...]}}`` drawn from ``seeds.split``.
        splits: ``{split: SplitDataset}`` (non-empty splits only).
        loaders: ``{split: DataLoader}``; under several ranks each yields this rank's shard.
        seed: The split seed the indices were drawn from.
        transforms: ``(base, train augments)`` as built.
    """

    datasets: dict[str, Any]
    task: Task
    indices: dict[str, dict[str, list[int]]]
    splits: dict[str, SplitDataset]
    loaders: dict[str, DataLoader]
    seed: int = 0
    transforms: tuple[list[Any], list[Any]] = field(default_factory=lambda: ([], []))

    def digest(self) -> str:
        """SHA-256 of the split indices (equal on every rank of a job)."""
        text = json.dumps(self.indices, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Assembly:
    """What :func:`assemble` built.

    Attributes:
        data: Datasets, task, splits and loaders.
        model: The model (``None`` when not asked for), with ``model.init_from`` loaded and
            ``model.freeze`` applied.
        trainer: The registered trainer (``None`` without a session).
        init_report: What ``model.init_from`` loaded (see
            :func:`thelper.finetune.load_init`); ``None`` without it and on resume.
    """

    data: SessionData
    model: torch.nn.Module | None = None
    trainer: Any = None
    init_report: dict[str, Any] | None = None


def build_transforms(specs: Sequence[Any], registry: Registry) -> list[Any]:
    """Instantiate transform specs in order."""
    return [registry.build("transform", s.type, s.params) for s in specs]


def _dataset_task(spec: Any, registry: Registry) -> Task | None:
    if spec.task is None:
        return None
    return registry.build("task", spec.task.type, spec.task.params)


def build_data(cfg: Any, seeds: dict[str, int], registry: Registry, *,
               runtime: Runtime | None = None, logger: logging.Logger | None = None
               ) -> SessionData:
    """Build every dataset, merge their tasks, split them and make the loaders (no disk
    writes).

    Args:
        cfg: The validated session config.
        seeds: The session's seeds (``split``, ``torch``, ``worker``, ...).
        registry: The component registry.
        runtime: The process's rank and world size; each loader then yields this rank's
            shard (see :class:`thelper.data.loaders.EpochSampler`). Default: one process.
        logger: Where to log what was built (default: the ``thelper`` logger).

    Raises:
        ConfigError: A dataset lacks a task or tasks are incompatible.
        DataError: A dataset cannot be loaded or the training split is empty.
    """
    runtime = runtime or Runtime()
    log = logger or logging.getLogger("thelper")
    datasets: dict[str, Any] = {}
    task: Task | None = None
    for name, spec in cfg.datasets.items():
        ds_task = _dataset_task(spec, registry)
        params = spec.params
        if spec.type in ("torch_dataset", "import") or registry.canonical(
                "dataset", spec.type) == "torch_dataset":
            check_import_allowed(params.class_path, cfg.imports.allow)
        ds = registry.build("dataset", spec.type, params, task=ds_task,
                            allow=tuple(cfg.imports.allow))
        if ds_task is not None:  # a task block overrides what the dataset provides
            ds.task = ds_task
        ds_task = getattr(ds, "task", None)
        if ds_task is None:
            raise ConfigError(f"datasets.{name}: type {spec.type!r} defines no task; add a "
                              "'task' block (e.g. {type: classification, params: "
                              "{class_names: [...]}})")
        datasets[name] = ds
        task = ds_task if task is None else task.merge(ds_task)
        log.info("dataset %r: %s, %d samples, task %r", name, spec.type, len(ds), ds_task)
    assert task is not None
    indices: dict[str, dict[str, list[int]]] = {}
    for name, ds in datasets.items():
        ratios = {s: cfg.loaders.split_ratios(s).get(name, 0.0) for s in SPLITS}
        ratios = {s: r for s, r in ratios.items() if r > 0}
        if not ratios:
            log.warning("dataset %r is not used by any split", name)
            continue
        # by group when the dataset exposes groups, else stratified on its own classes
        indices[name] = split_dataset(ds, ratios, seeds["split"], ds.task)
    label_maps: dict[str, list[int]] = {}
    merged_names = getattr(task, "class_names", None)
    for name, ds in datasets.items():
        own = getattr(ds.task, "class_names", None)
        if merged_names is not None and own is not None and list(own) != list(merged_names):
            label_maps[name] = [merged_names.index(c) for c in own]
    splits: dict[str, SplitDataset] = {}
    loaders: dict[str, DataLoader] = {}
    base = build_transforms(cfg.loaders.base_transforms, registry)
    augments = build_transforms(cfg.loaders.train_augments, registry)
    for split in SPLITS:
        parts = [(n, datasets[n], idx[split]) for n, idx in indices.items()
                 if idx.get(split)]
        if not parts:
            continue
        transforms = (augments + base) if split == "train" else base
        sd = SplitDataset(parts, task.input_key, Compose(transforms) if transforms else None,
                          label_key=task.label_key, label_maps=label_maps,
                          seed=seeds["torch"], skip_bad_samples=cfg.loaders.skip_bad_samples)
        if len(sd) == 0:
            continue
        splits[split] = sd
        sampler = None
        spec = getattr(cfg.loaders, f"{split}_sampler", None)
        if spec is not None:
            labels = _split_labels(sd, task)
            sampler = registry.build("sampler", spec.type, spec.params, labels=labels,
                                     class_names=getattr(task, "class_names", None),
                                     seed=seeds["worker"])
            log.info("%s sampler %s: %d draws per epoch", split, spec.type, sampler.num_draws)
        loaders[split] = make_loader(
            sd, cfg.loaders.batch_size_for(split), train=split == "train",
            workers=cfg.loaders.workers, shuffle=cfg.loaders.shuffle,
            pin_memory=cfg.loaders.pin_memory, drop_last=cfg.loaders.drop_last,
            seed=seeds["worker"], collate_fn=task.collate_fn(), sampler=sampler,
            rank=runtime.rank, world_size=runtime.world_size,
        )
    if "train" not in splits:
        raise DataError("the training split is empty; give loaders.train_split a dataset "
                        "and a ratio > 0")
    log.info("splits: %s", ", ".join(f"{s} {len(sd)}" for s, sd in splits.items()))
    return SessionData(datasets, task, indices, splits, loaders, seed=seeds["split"],
                       transforms=(base, augments))


def _split_labels(sd: SplitDataset, task: Task) -> list[int] | None:
    """Merged-task class index of every sample of a split (no decoding when datasets
    expose ``targets``)."""
    out: list[int] = []
    for name, ds, idx in sd.parts:
        labels = dataset_labels(ds, ds.task)
        if labels is None:
            return None
        remap = sd.label_maps.get(name)
        out += [int(remap[labels[i]]) if remap is not None else labels[i] for i in idx]
    return out


def build_model(cfg: Any, registry: Registry, task: Task, *, seed: int | None = None
                ) -> torch.nn.Module:
    """Instantiate the model for ``task`` (no disk writes).

    Args:
        cfg: The validated session config (``cfg.model``).
        registry: The component registry.
        task: The merged task (number of classes, input/output keys).
        seed: Seed torch's global generator first, so that the initial weights depend only
            on the session's ``torch`` seed (equal on every rank).

    Raises:
        ConfigError: The component does not build a ``torch.nn.Module``.
    """
    if seed is not None:
        torch.manual_seed(seed)
    spec = cfg.model
    model = registry.build("model", spec.type, spec.params, task=task)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model.type {spec.type!r} built a {type(model).__name__}, "
                          "not a torch.nn.Module")
    return model


def prepare_model(model: torch.nn.Module, spec: Any, *, init: bool = True,
                  epoch: int | None = None, logger: logging.Logger | None = None
                  ) -> dict[str, Any] | None:
    """Apply the fine-tuning keys of ``model`` (the config section) to a built model.

    Loads ``init_from`` (when ``init``), freezes ``freeze``, checks ``unfreeze`` and, given
    the ``epoch`` about to start, unfreezes what the schedule unfroze by then (a resume).

    Args:
        model: The freshly built model.
        spec: ``cfg.model``.
        init: Load ``init_from`` (``False`` on resume: the checkpoint holds the weights).
        epoch: The first epoch the session runs (``session.start_epoch``), or ``None``.
        logger: Where to log.

    Returns:
        The ``init_from`` report, or ``None`` when nothing was loaded.

    Raises:
        ConfigError: See :func:`thelper.finetune.load_init`, :func:`apply_freeze` and
            :func:`check_unfreeze`.
        CheckpointError: The ``init_from`` file is unreadable or unsafe.
    """
    log = logger or logging.getLogger("thelper")
    report = None
    init_from = getattr(spec, "init_from", None)
    if init_from is not None:
        if init:
            report = load_init(model, init_from, logger=log)
        else:
            log.info("model.init_from is not loaded when resuming: the checkpoint holds the "
                     "weights")
    frozen = apply_freeze(model, getattr(spec, "freeze", None) or [])
    schedule = getattr(spec, "unfreeze", None) or []
    check_unfreeze(model, schedule)
    if frozen:
        names = set(frozen)
        count = sum(p.numel() for n, p in model.named_parameters() if n in names)
        log.info("model.freeze: %d parameter tensor(s) frozen (%s parameters)", len(frozen),
                 f"{count:,}")
    if epoch is not None:
        apply_unfreeze(model, schedule, epoch, logger=log)
    return report


def assemble(cfg: Any, seeds: dict[str, int], registry: Registry,
             runtime: Runtime | None = None, *, session: Any = None, model: bool = True,
             logger: logging.Logger | None = None,
             stage: Callable[[str], AbstractContextManager[Any]] | None = None) -> Assembly:
    """Datasets → splits → loaders, then the model and, given a session, the trainer.

    The single way every command turns a config into working parts. Pure: nothing is
    written to disk (call :func:`record` for the session's logs).

    Args:
        cfg: The validated session config.
        seeds: The session's seeds (drawn on rank 0 and broadcast under several ranks).
        registry: The component registry (``pm.registry``).
        runtime: Rank and world size (default: one process). Under several ranks the
            split indices are compared across ranks.
        session: The :class:`thelper.session.Session` the trainer reports to; without one
            no trainer is built.
        model: Build the model (and the trainer) too.
        logger: Where to log (default: the session's logger, else ``thelper``).
        stage: ``stage(name)`` wraps each step (``datasets``, ``model``, ``trainer``) in a
            context, e.g. to time it or to attribute its errors (``config validate``).

    Raises:
        ConfigError, DataError, ComponentBuildError: From the builders.
        DataError: The ranks drew different splits (they must share the seeds).
    """
    runtime = runtime or (session.runtime if session is not None else Runtime())
    log = logger or (session.logger if session is not None else logging.getLogger("thelper"))
    stage = stage or (lambda name: contextlib.nullcontext())
    with stage("datasets"):
        data = build_data(cfg, seeds, registry, runtime=runtime, logger=log)
    with stage("loaders"):  # a transform given the wrong input type, before any worker
        from thelper.config.validate import check_transforms

        check_transforms(data.splits, cfg)
    if runtime.distributed:
        digests = runtime.all_gather_object(data.digest())
        if len(set(digests)) != 1:
            raise DataError("the ranks drew different train/valid/test splits "
                            f"(digests {digests}); every rank must use rank 0's seeds")
    parts = Assembly(data)
    if not model:
        return parts
    with stage("model"):
        parts.model = build_model(cfg, registry, data.task, seed=seeds["torch"])
        # a resume loads the checkpoint's weights; a restart of a session that died before its
        # first checkpoint (no weights to load) initialises like a new run
        resumed = bool(getattr(session, "resumed", False)) and \
            not (session.extras.get("restarted") if session is not None else False)
        parts.init_report = prepare_model(
            parts.model, cfg.model, init=not resumed, logger=log,
            epoch=session.start_epoch if session is not None else None)
    n_params = sum(p.numel() for p in parts.model.parameters())
    log.info("model %s: %s parameters", cfg.model.type, f"{n_params:,}")
    if session is not None:
        session.task = data.task
        tcfg = cfg.trainer
        with stage("trainer"):
            optimizer_params(parts.model, tcfg.optimization.optimizer)  # checks param_groups
            parts.trainer = registry.build("trainer", tcfg.type, tcfg.params,
                                           session=session, model=parts.model, data=data,
                                           registry=registry)
    return parts


def record(session: Any, parts: Assembly) -> None:
    """Write ``logs/splits.json``, ``datasets.txt``, ``task.json``, ``model.txt`` and, when
    ``model.init_from`` was loaded, ``init_from.json`` (rank 0 only; the other ranks return
    at once).

    Raises:
        SessionError: ``logs/init_from.json`` (or ``logs/``) is a symbolic link.
    """
    if not session.is_main:
        return
    data, cfg = parts.data, session.cfg
    logs = session.logs_dir
    summary = {
        "seed": data.seed,
        "datasets": {n: {"size": len(ds), "type": cfg.datasets[n].type,
                         "indices": data.indices.get(n, {})} for n, ds in data.datasets.items()},
        "groups": {n: g for n, ds in data.datasets.items()
                   if (g := group_record(ds, data.indices.get(n, {}))) is not None},
        "sizes": {s: len(sd) for s, sd in data.splits.items()},
    }
    (logs / "splits.json").write_text(json.dumps(summary, indent=1))
    base, augments = data.transforms
    lines = [f"{n}: {cfg.datasets[n].type} {ds!r} -> " + ", ".join(
        f"{s}={len(v)}" for s, v in data.indices.get(n, {}).items())
        for n, ds in data.datasets.items()]
    lines.append(f"base transforms: {Compose(base)!r}")
    lines.append(f"train augments: {Compose(augments)!r}")
    (logs / "datasets.txt").write_text("\n".join(lines) + "\n")
    (logs / "task.json").write_text(json.dumps(data.task.to_dict(), indent=2))
    model = parts.model
    if model is not None:
        spec = cfg.model
        lines = describe(model, spec, cfg.trainer.optimization.optimizer, parts.init_report)
        text = (f"type: {spec.type}\nparams: {spec.params.model_dump()}\n"
                + "\n".join(lines) + f"\n\n{model}\n")
        (logs / "model.txt").write_text(text)
    if parts.init_report is not None:
        from thelper.session import safe_path, write_json

        write_json(safe_path(session.session_dir, "logs/init_from.json"), parts.init_report)
