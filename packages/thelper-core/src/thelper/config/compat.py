"""thelper 0.6 spellings: normalising a document before validation, and legacy-key hints.

:func:`normalize` returns a rewritten copy of the document plus a map from rewritten paths
back to the paths the user wrote, so that every message still points at the user's text:

- keys written with spaces where 0.6 documented them (``loaders: {batch size: 32}``,
  ``scheduler: {step metric: accuracy}``) become underscores;
- 0.6's augmentation block ``train_augments: {append: false, transforms: [...]}`` becomes
  the list itself (augments run before the base transforms, which is what ``append: false``
  meant); ``append: true`` is left for the schema to report with :func:`legacy_value_hint`;
- the import-path escape hatch: a dataset whose ``type`` is not registered but is an import
  path (``torchvision.datasets.CIFAR10``) becomes the registered import adapter,
  ``{type: torch_dataset, params: {class_path: torchvision.datasets.CIFAR10, params: {...}}}``.
  The allow-list is checked by :mod:`thelper.config.rules`.

:data:`LEGACY_KEYS` gives the modern spelling of 0.6 keys that no longer exist.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from thelper.config.dynamic import import_adapter
from thelper.config.imports import is_import_path
from thelper.config.models import LoadersConfig
from thelper.config.source import Loc
from thelper.registry import Registry

__all__ = ["Normalized", "normalize", "iter_slots", "slot_component", "used_components",
           "legacy_key_hint", "legacy_value_hint", "LEGACY_KEYS"]

#: ``{(parent path pattern, key): hint}`` for thelper 0.6 keys; ``*`` matches one part.
LEGACY_KEYS: dict[tuple[str, str], str] = {
    ("loaders", "test_seed"): "the split seed is 'seeds.split' (one seed for every split)",
    ("loaders", "valid_seed"): "the split seed is 'seeds.split' (one seed for every split)",
    ("loaders", "torch_seed"): "seeds moved to the 'seeds' section: write 'seeds: {torch: N}'",
    ("loaders", "numpy_seed"): "seeds moved to the 'seeds' section: write 'seeds: {numpy: N}'",
    ("loaders", "random_seed"): "seeds moved to the 'seeds' section: write 'seeds: {random: N}'",
    ("loaders", "worker_seed"): "seeds moved to the 'seeds' section: write 'seeds: {worker: N}'",
    ("trainer", "use_tbx"): "TensorBoard logging is always on (the 'tensorboard' plugin); "
                            "remove 'use_tbx' (turn it off with 'thelper -p no:tensorboard')",
    ("model", "ckptdata"): "give the model's 'type', and start from a trained session's "
                           "weights with 'init_from: {path: SESSION_DIR_OR_CHECKPOINT}' "
                           "(see docs/config/finetuning.md; thelper 0.6 pickled checkpoints "
                           "are not loaded); to continue a session use 'thelper resume "
                           "SESSION_DIR'",
    ("loaders", "eval_augments"): "test-time augmentation is not supported: remove "
                                  "'eval_augments' (valid and test samples get only "
                                  "'base_transforms')",
    ("loaders", "task_compat_mode"): "datasets of one session must have compatible tasks "
                                     "(they are merged); remove 'task_compat_mode'",
    ("loaders", "skip_verif"): "splits are always re-drawn from 'seeds.split' and recorded in "
                               "logs/splits.json; remove 'skip_verif'",
    ("loaders", "skip_split_norm"): "split ratios are never normalised (their sum must be at "
                                    "most 1); remove 'skip_split_norm'",
    ("loaders", "skip_class_balancing"): "splits are always stratified by class; remove "
                                         "'skip_class_balancing'",
    ("model.params", "pretrained"): "weights are never downloaded: remove 'pretrained' (random "
                                    "initialisation), or save torchvision's weights once "
                                    "and give 'weights_path: FILE' with 'weights_strict: "
                                    "false' (the 1000-class head is then skipped)",
    ("model.params", "input_size"): "torchvision models take any input size: remove "
                                    "'input_size' (resize the images with a 'resize' "
                                    "transform instead)",
    ("trainer", "viz"): "visualisations are not part of training: remove 'viz' (draw batches "
                        "with 'thelper viz CONFIG' (thelper-vision); t-SNE is not provided)",
    ("trainer", "save_raw"): "checkpoints always hold plain tensors and containers "
                             "(torch.load(weights_only=True)); remove 'save_raw'",
    ("", "cudnn_benchmark"): "cuDNN autotuning is not configurable; remove it",
    ("", "cudnn_deterministic"): "write 'trainer: {deterministic: true}'",
    ("", "export"): "thelper 0.6 export configs are not session configs: export a trained "
                    "session with 'thelper export SESSION_DIR' instead",
}

_SPACED_LOADERS = frozenset(LoadersConfig.model_fields)


def legacy_key_hint(parent: Loc, key: str) -> str | None:
    """The modern spelling of a 0.6 key at ``parent``, or ``None``."""
    text = ".".join(str(p) for p in parent)
    for (pattern, name), hint in LEGACY_KEYS.items():
        if hint and name == key and fnmatch.fnmatchcase(text, pattern):
            return hint
    return None


def legacy_value_hint(loc: Loc, value: Any) -> str | None:
    """Advice for a thelper 0.6 value at ``loc`` that the schema refuses, or ``None``.

    Covers the augmentation block with ``append: true`` (``append: false`` is rewritten by
    :func:`normalize`).
    """
    if tuple(loc) == ("loaders", "train_augments") and isinstance(value, dict) \
            and "transforms" in value:
        return ("thelper 0.6's {append, transforms} block: write the transforms as the list "
                "itself ('train_augments: [...]'); they always run before 'base_transforms' "
                "(0.6's append: false), so with append: true move them to where they apply "
                "(e.g. after a 'torchvision.transforms.ToTensor' at the start of the list)")
    return None


@dataclass
class Normalized:
    """A normalised document and the way back to the user's paths.

    Attributes:
        data: The rewritten document (the input is never modified).
        renames: ``(new path, original path)`` prefixes, most specific first.
        imported: ``{original dataset path: class path}`` of rewritten import-path types.
    """

    data: dict[str, Any]
    renames: list[tuple[Loc, Loc]] = field(default_factory=list)
    imported: dict[Loc, str] = field(default_factory=dict)

    def original(self, loc: Loc) -> Loc:
        """The user's path for ``loc`` in :attr:`data`."""
        loc = tuple(loc)
        best: tuple[Loc, Loc] | None = None
        for new, old in self.renames:
            if loc[:len(new)] == new and (best is None or len(new) > len(best[0])):
                best = (new, old)
        if best is None:
            return loc
        return best[1] + loc[len(best[0]):]


def iter_slots(data: Any) -> Iterator[tuple[Loc, str, Any]]:
    """Every ``{type, params}`` slot of a raw document: ``(path, kind, value)``.

    Defensive: anything that is not shaped like a session config is skipped.
    """
    if not isinstance(data, dict):
        return
    datasets = data.get("datasets")
    if isinstance(datasets, dict):
        for name, spec in datasets.items():
            yield ("datasets", name), "dataset", spec
            if isinstance(spec, dict) and spec.get("task") is not None:
                yield ("datasets", name, "task"), "task", spec["task"]
    loaders = data.get("loaders")
    if isinstance(loaders, dict):
        for key in ("base_transforms", "train_augments"):
            items = loaders.get(key)
            if isinstance(items, list):
                for i, spec in enumerate(items):
                    yield ("loaders", key, i), "transform", spec
        for split in ("train", "valid", "test"):
            spec = loaders.get(f"{split}_sampler")
            if spec is not None:
                yield ("loaders", f"{split}_sampler"), "sampler", spec
    if "model" in data:
        yield ("model",), "model", data["model"]
    trainer = data.get("trainer")
    if isinstance(trainer, dict):
        yield ("trainer",), "trainer", trainer
        optim = trainer.get("optimization")
        if isinstance(optim, dict):
            for key in ("loss", "optimizer", "scheduler"):
                if optim.get(key) is not None:
                    yield ("trainer", "optimization", key), key, optim[key]
        for key in ("metrics", "test_metrics"):
            metrics = trainer.get(key)
            if isinstance(metrics, dict):
                for name, spec in metrics.items():
                    yield ("trainer", key, name), "metric", spec


def slot_component(kind: str, value: Any, registry: Registry) -> str | None:
    """Canonical name of the registered component a slot's ``type`` names, or ``None``.

    A trainer without ``type`` is the ``default`` trainer; thelper 0.6's ``operation`` key is
    read where ``type`` is missing.
    """
    if not isinstance(value, dict):
        return None
    name = value.get("type")
    if name is None:
        name = "default" if kind == "trainer" else value.get("operation")
    return registry.canonical(kind, name) if isinstance(name, str) else None


def used_components(data: Any, registry: Registry) -> dict[str, frozenset[str]]:
    """``{kind: canonical names}`` of the registered components a document names.

    The trainer's default type is always included (a trainer section may omit ``type``).
    """
    used: dict[str, set[str]] = {}
    for _, kind, value in iter_slots(data):
        canonical = slot_component(kind, value, registry)
        if canonical is not None:
            used.setdefault(kind, set()).add(canonical)
    default = registry.canonical("trainer", "default")
    if default is not None:
        used.setdefault("trainer", set()).add(default)
    return {k: frozenset(v) for k, v in used.items()}


def _despace(node: dict[str, Any], allowed: frozenset[str] | set[str], loc: Loc,
             renames: list[tuple[Loc, Loc]]) -> dict[str, Any]:
    """Rename ``'a b'`` keys to ``'a_b'`` when that is an allowed key not given already."""
    if not any(isinstance(k, str) and " " in k for k in node):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        new = key.strip().replace(" ", "_") if isinstance(key, str) else key
        if new != key and new in allowed and new not in node and new not in out:
            out[new] = value
            renames.append(((*loc, new), (*loc, key)))
        else:
            out[key] = value
    return out


def normalize(data: dict[str, Any], registry: Registry) -> Normalized:
    """Rewrite thelper 0.6 spellings (see the module docstring); ``data`` is not modified."""
    out = Normalized(copy.deepcopy(data) if isinstance(data, dict) else data)
    doc = out.data
    if not isinstance(doc, dict):
        return out
    loaders = doc.get("loaders")
    if isinstance(loaders, dict):
        doc["loaders"] = _despace(loaders, _SPACED_LOADERS, ("loaders",), out.renames)
        augments = doc["loaders"].get("train_augments")
        if isinstance(augments, dict) and set(augments) <= {"append", "transforms"} \
                and isinstance(augments.get("transforms"), list) \
                and augments.get("append", False) is False:
            doc["loaders"]["train_augments"] = augments["transforms"]
            out.renames.append((("loaders", "train_augments"),
                                ("loaders", "train_augments", "transforms")))
    trainer = doc.get("trainer")
    optim = trainer.get("optimization") if isinstance(trainer, dict) else None
    sched = optim.get("scheduler") if isinstance(optim, dict) else None
    if isinstance(sched, dict):
        optim["scheduler"] = _despace(sched, {"step_metric"},
                                      ("trainer", "optimization", "scheduler"), out.renames)
    adapter = import_adapter(registry, "dataset")
    datasets = doc.get("datasets")
    if adapter is not None and isinstance(datasets, dict):
        for name, spec in list(datasets.items()):
            if not isinstance(spec, dict):
                continue
            kind_name = spec.get("type")
            if not is_import_path(kind_name) or registry.canonical("dataset", kind_name):
                continue
            loc: Loc = ("datasets", name)
            rewritten = {k: v for k, v in spec.items() if k not in ("type", "params")}
            params = spec.get("params")
            rewritten["type"] = adapter
            rewritten["params"] = {"class_path": kind_name,
                                   "params": {} if params is None else params}
            datasets[name] = rewritten
            out.renames += [((*loc, "params", "params"), (*loc, "params")),
                            ((*loc, "params", "class_path"), (*loc, "type"))]
            out.imported[loc] = kind_name
    return out
