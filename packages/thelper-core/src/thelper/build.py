"""Turn a validated config into datasets, splits, loaders and a model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader

from thelper.data.datasets import check_import_allowed
from thelper.data.loaders import Compose, SplitDataset, make_loader
from thelper.data.splits import SPLITS, dataset_labels, split_indices
from thelper.exceptions import ConfigError, DataError
from thelper.registry import Registry
from thelper.session import Session
from thelper.tasks import Task

__all__ = ["SessionData", "build_data", "build_model", "build_transforms"]


@dataclass
class SessionData:
    """Datasets, the merged task, the split indices and one loader per non-empty split."""

    datasets: dict[str, Any]
    task: Task
    indices: dict[str, dict[str, list[int]]]
    splits: dict[str, SplitDataset]
    loaders: dict[str, DataLoader]


def build_transforms(specs: Sequence[Any], registry: Registry) -> list[Any]:
    """Instantiate transform specs in order."""
    return [registry.build("transform", s.type, s.params) for s in specs]


def _dataset_task(spec: Any, registry: Registry) -> Task | None:
    if spec.task is None:
        return None
    return registry.build("task", spec.task.type, spec.task.params)


def build_data(session: Session, registry: Registry) -> SessionData:
    """Build every dataset, merge their tasks, split them and make the loaders.

    Split indices are drawn from ``seeds.split`` (stratified for classification) and
    logged to ``logs/splits.json``.

    Raises:
        ConfigError: A dataset lacks a task or tasks are incompatible.
        DataError: A dataset cannot be loaded or a split is empty.
    """
    cfg = session.cfg
    log = session.logger
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
        labels = dataset_labels(ds, ds.task)  # stratify on the dataset's own classes
        indices[name] = split_indices(len(ds), ratios, session.seeds["split"], labels)
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
                          seed=session.seeds["torch"],
                          skip_bad_samples=cfg.loaders.skip_bad_samples)
        if len(sd) == 0:
            continue
        splits[split] = sd
        sampler = None
        spec = getattr(cfg.loaders, f"{split}_sampler", None)
        if spec is not None:
            labels = _split_labels(sd, task)
            sampler = registry.build("sampler", spec.type, spec.params, labels=labels,
                                     class_names=getattr(task, "class_names", None),
                                     seed=session.seeds["worker"])
            log.info("%s sampler %s: %d draws per epoch", split, spec.type, len(sampler))
        loaders[split] = make_loader(
            sd, cfg.loaders.batch_size_for(split), train=split == "train",
            workers=cfg.loaders.workers, shuffle=cfg.loaders.shuffle,
            pin_memory=cfg.loaders.pin_memory, drop_last=cfg.loaders.drop_last,
            seed=session.seeds["worker"], collate_fn=task.collate_fn(), sampler=sampler,
        )
    if "train" not in splits:
        raise DataError("the training split is empty; give loaders.train_split a dataset "
                        "and a ratio > 0")
    summary = {
        "seed": session.seeds["split"],
        "datasets": {n: {"size": len(datasets[n]), "type": cfg.datasets[n].type,
                         "indices": indices.get(n, {})} for n in datasets},
        "sizes": {s: len(sd) for s, sd in splits.items()},
    }
    (session.logs_dir / "splits.json").write_text(json.dumps(summary, indent=1))
    lines = [f"{n}: {cfg.datasets[n].type} {datasets[n]!r} -> " + ", ".join(
        f"{s}={len(v)}" for s, v in indices.get(n, {}).items()) for n in datasets]
    lines.append(f"base transforms: {Compose(base)!r}")
    lines.append(f"train augments: {Compose(augments)!r}")
    (session.logs_dir / "datasets.txt").write_text("\n".join(lines) + "\n")
    (session.logs_dir / "task.json").write_text(json.dumps(task.to_dict(), indent=2))
    log.info("splits: %s", ", ".join(f"{s} {len(sd)}" for s, sd in splits.items()))
    return SessionData(datasets, task, indices, splits, loaders)


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


def build_model(session: Session, registry: Registry, task: Task) -> torch.nn.Module:
    """Instantiate the model for ``task`` and log its summary to ``logs/model.txt``."""
    spec = session.cfg.model
    model = registry.build("model", spec.type, spec.params, task=task)
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model.type {spec.type!r} built a {type(model).__name__}, "
                          "not a torch.nn.Module")
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    text = (f"type: {spec.type}\nparams: {spec.params.model_dump()}\n"
            f"parameters: {n_params:,} ({n_train:,} trainable)\n\n{model}\n")
    (session.logs_dir / "model.txt").write_text(text)
    session.logger.info("model %s: %s parameters", spec.type, f"{n_params:,}")
    return model
