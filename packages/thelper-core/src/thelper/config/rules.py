"""Rules that span several sections, checked on the (normalised) raw document.

Every rule is defensive: the document may be malformed in any way (the schema reports
that); a rule only speaks about values it understands.

Rules:
    - every dataset named in ``loaders.*_split`` is declared, its ratios are numbers whose
      sum is at most 1, and at least one dataset has a training ratio above 0;
    - every dataset has a task (its type provides one, or a ``task`` block), and explicit
      task blocks of several datasets agree on their type and sample keys;
    - ``class_path`` imports (``torch_dataset`` and 0.6 import-path types) are under the
      import allow-list and their top-level package is installed;
    - ``trainer.monitor`` and ``scheduler.step_metric`` are ``loss`` or a metric defined
      under ``trainer.metrics`` with a min/max goal; ``step_metric`` is only given to
      schedulers that use it; ``reduce_lr_on_plateau``'s and ``early_stopping``'s ``mode``
      agree with the goal;
    - metric names do not shadow ``loss``/``lr`` and ``test_metrics`` do not redefine
      ``metrics``;
    - ``trainer.device`` names a device;
    - the numbers in the params of hyperparameter components (optimizer, scheduler, loss,
      metrics, model, sampler, transforms, trainer) are finite, and a boolean is refused
      where the params model expects a number (pydantic would read ``true`` as ``1``);
    - the loss and every metric fit the session's task: a component whose registration
      declares ``metadata["tasks"]`` (e.g. ``("classification", "segmentation")``) is
      refused on another task. Undeclared components are accepted, and so is every
      component on a task that no registered loss or metric declares (a plugin's new task);
    - no evaluation split holds training samples: two datasets holding the same data (same
      type and params) are split with the same permutation (``seeds.split``), so when one
      is in ``train_split`` and the other in ``valid_split``/``test_split`` with overlapping
      shares, the overlap is refused; datasets reading the same files with other params
      (where the overlap cannot be decided) get a warning.

Warnings (``warn``): the paths named by a dataset's ``metadata["paths"]`` params and
``model.init_from.path`` that do not exist on this machine (the machine that validates may
not be the one that runs), the undecidable split overlaps above, and ``model.unfreeze``
steps after ``trainer.epochs`` (they only act when a resume adds epochs). Warnings never make
a config invalid.

Registration metadata read here (all optional): ``tasks`` (losses and metrics: the task
types they fit), ``task`` (datasets that provide their task: its type, e.g.
``"classification"``), ``paths`` (datasets: params that name local files or folders) and
``disjoint_by`` (datasets: params that select disjoint subsets of the same files, such as
the ``split`` of an HDF5 archive).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from thelper.config.compat import Normalized, iter_slots, slot_component
from thelper.config.dynamic import import_adapter
from thelper.config.hints import not_installed
from thelper.config.imports import (
    allow_list_message,
    import_allowed,
    is_import_path,
    top_level_installed,
)
from thelper.config.models import SPLITS
from thelper.config.source import Loc
from thelper.registry import Registry, closest

__all__ = ["cross_rules", "DEVICE_PATTERN", "log_warning"]

Emit = Callable[[Loc, str], None]

log = logging.getLogger("thelper.config")

#: Accepted ``trainer.device`` values.
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|xpu|cuda(:(\d+|all))?)$")
_DEVICE_WORDS = ("auto", "cpu", "cuda", "cuda:0", "cuda:all", "mps", "xpu")
_RESERVED_METRICS = {"loss": "the loss is always tracked under 'loss'",
                     "lr": "the learning rate is always logged under 'lr'"}


def _dict(value: Any) -> dict[Any, Any]:
    return value if isinstance(value, dict) else {}


def _ratio(value: Any) -> float | None:
    """A split ratio as pydantic reads it (numbers and numeric strings), or ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        ratio = float(value)
    except ValueError:
        return None
    return ratio if 0.0 <= ratio <= 1.0 else None


def _hint(name: str, choices: list[str], what: str) -> str:
    hits = closest(name, choices)
    if hits:
        return f"did you mean {hits[0]!r}?"
    return f"{what}: {', '.join(map(repr, choices))}" if choices else f"no {what}"


def _splits(data: dict[str, Any], emit: Emit) -> None:
    datasets = _dict(data.get("datasets"))
    loaders = _dict(data.get("loaders"))
    if not loaders or not datasets:
        return
    names = [str(n) for n in datasets]
    totals: dict[str, float] = {}
    any_train = False
    bad_train = False
    for split in SPLITS:
        key = f"{split}_split"
        ratios = loaders.get(key)
        if not isinstance(ratios, dict):
            continue
        for name, ratio in ratios.items():
            if name not in datasets:
                emit(("loaders", key, name),
                     f"{name!r} is not a dataset declared under 'datasets'; "
                     + _hint(str(name), names, "declared datasets"))
                bad_train |= split == "train"
                continue
            value = _ratio(ratio)
            bad_train |= split == "train" and value is None
            if value is not None:
                totals[name] = totals.get(name, 0.0) + value
                any_train |= split == "train" and value > 0
    for name, total in totals.items():
        if total > 1.0 + 1e-9:
            emit(("loaders",), f"split ratios of dataset {name!r} sum to {total:g} > 1; "
                               "train_split + valid_split + test_split must be at most 1")
    if not any_train and not bad_train and not isinstance(loaders.get("train_split"),
                                                           str | int | float | list):
        emit(("loaders", "train_split"),
             f"no dataset is used for training; add e.g. 'train_split: {{{names[0]}: 0.8}}'")


def _tasks(data: dict[str, Any], registry: Registry, emit: Emit) -> None:
    first: tuple[str, str, tuple[Any, Any]] | None = None
    for name, spec in _dict(data.get("datasets")).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue
        canonical = registry.canonical("dataset", spec["type"])
        task = spec.get("task")
        if canonical is not None and task is None and \
                not registry.get("dataset", canonical).metadata.get("provides_task"):
            emit(("datasets", name),
                 f"dataset type {spec['type']!r} does not define a task; add a 'task' block, "
                 "e.g. task: {type: classification, params: {class_names: [...]}}")
        if not isinstance(task, dict) or not isinstance(task.get("type"), str):
            continue
        ttype = registry.canonical("task", task["type"])
        params = _dict(task.get("params"))
        keys = (params.get("input_key", "input"), params.get("label_key", "label"))
        if ttype is None:
            continue
        if first is None:
            first = (str(name), ttype, keys)
        elif first[1] != ttype:
            emit(("datasets", name, "task", "type"),
                 f"task {ttype!r} differs from dataset {first[0]!r}'s task {first[1]!r}; the "
                 "datasets of a session must share one task type")
        elif tuple(map(str, keys)) != tuple(map(str, first[2])):
            emit(("datasets", name, "task", "params"),
                 f"sample keys (input_key, label_key) = {tuple(map(str, keys))} differ from "
                 f"dataset {first[0]!r}'s {tuple(map(str, first[2]))}; give every dataset "
                 "the same keys")


def _imports(data: dict[str, Any], norm: Normalized, registry: Registry, emit: Emit,
             failures: list[Any]) -> None:
    adapter = import_adapter(registry, "dataset")
    if adapter is None:
        return
    allow_raw = _dict(data.get("imports")).get("allow")
    allow = [a for a in allow_raw if isinstance(a, str)] if isinstance(allow_raw, list) else []
    for name, spec in _dict(data.get("datasets")).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or \
                registry.canonical("dataset", spec["type"]) != adapter:
            continue
        path = _dict(spec.get("params")).get("class_path")
        if not is_import_path(path):
            continue
        loc = ("datasets", name, "params", "class_path")
        hatch = ("datasets", name) in norm.imported
        prefix = (f"{path!r} is not a registered dataset; as an import path, its "
                  if hatch else f"class_path {path!r}: ")
        install = not_installed("dataset", path, registry, failures)
        if install:
            emit(loc, f"{path!r} is not a registered dataset; {install}")
        elif not import_allowed(path, allow):
            emit(loc, prefix + allow_list_message(path, allow))
        elif not top_level_installed(path):
            root = path.split(".")[0].split(":")[0]
            emit(loc, prefix + f"package {root!r} is not installed (pip install it, or fix "
                               "the name)")


def _metrics(data: dict[str, Any], registry: Registry, emit: Emit) -> None:
    trainer = _dict(data.get("trainer"))
    metrics = _dict(trainer.get("metrics"))
    test_metrics = _dict(trainer.get("test_metrics"))
    for name in metrics:
        if name in _RESERVED_METRICS:
            emit(("trainer", "metrics", name),
                 f"metric name {name!r} is reserved ({_RESERVED_METRICS[name]}); rename it")
    for name in test_metrics:
        if name in metrics:
            emit(("trainer", "test_metrics", name),
                 f"{name!r} is already defined under trainer.metrics (which are evaluated "
                 "in the final test too); rename or remove it")
        elif name in _RESERVED_METRICS:
            emit(("trainer", "test_metrics", name),
                 f"metric name {name!r} is reserved ({_RESERVED_METRICS[name]}); rename it")

    def goal(name: Any, loc: Loc, role: str) -> str | None:
        if not isinstance(name, str):
            return None
        if name == "loss":
            return "min"
        if name not in metrics:
            choices = ["loss", *map(str, metrics)]
            hint = _hint(name, choices, "defined metrics")
            if name in test_metrics:
                hint = "test_metrics are only computed in the final test; move it to metrics"
            emit(loc, f"{role} {name!r} is not defined under trainer.metrics; {hint}")
            return None
        spec = metrics[name]
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            canonical = registry.canonical("metric", spec["type"])
            if canonical is None:
                return None
            found = registry.get("metric", canonical).metadata.get("goal")
            if found not in ("max", "min"):
                emit(loc, f"{role} {name!r} ({spec['type']}) has no min/max goal and cannot "
                          "be monitored; pick a scalar metric such as 'loss' or 'accuracy'")
                return None
            return str(found)
        return None

    monitor_goal = goal(trainer.get("monitor"), ("trainer", "monitor"), "monitored metric") \
        if "monitor" in trainer else "min"
    es_mode = _dict(trainer.get("early_stopping")).get("mode")
    if es_mode in ("min", "max") and monitor_goal in ("min", "max") and es_mode != monitor_goal:
        emit(("trainer", "early_stopping", "mode"),
             f"mode {es_mode!r} contradicts the goal of the monitored metric "
             f"{trainer.get('monitor', 'loss')!r} ({monitor_goal}); use mode: {monitor_goal} "
             "or leave mode out (it defaults to the metric's goal)")
    optim = _dict(trainer.get("optimization"))
    sched = _dict(optim.get("scheduler"))
    if not isinstance(sched.get("type"), str):
        return
    canonical = registry.canonical("scheduler", sched["type"])
    if canonical is None:
        return
    needs_metric = bool(registry.get("scheduler", canonical).metadata.get("needs_metric"))
    sloc: Loc = ("trainer", "optimization", "scheduler")
    step_metric = sched.get("step_metric")
    if step_metric is not None and not needs_metric:
        emit((*sloc, "step_metric"),
             f"scheduler {sched['type']!r} does not step on a metric, so 'step_metric' would "
             "be ignored; remove it (or use reduce_lr_on_plateau)")
        return
    if not needs_metric:
        return
    if sched.get("interval") == "step":
        emit((*sloc, "interval"),
             f"scheduler {sched['type']!r} steps on a metric, which is computed once per "
             "epoch; use interval: epoch")
    step_goal = goal(step_metric, (*sloc, "step_metric"), "scheduler step metric") \
        if step_metric is not None else monitor_goal
    mode = _dict(sched.get("params")).get("mode")
    if mode in ("min", "max") and step_goal in ("min", "max") and mode != step_goal:
        metric = step_metric if step_metric is not None else trainer.get("monitor", "loss")
        emit((*sloc, "params", "mode"),
             f"mode {mode!r} contradicts the goal of step metric {metric!r} ({step_goal}); "
             f"use mode: {step_goal} or leave mode out (it defaults to the metric's goal)")


def _device(data: dict[str, Any], emit: Emit) -> None:
    device = _dict(data.get("trainer")).get("device")
    if isinstance(device, str) and not DEVICE_PATTERN.match(device.strip()):
        hits = closest(device.replace("gpu", "cuda"), _DEVICE_WORDS)
        hint = f"did you mean {hits[0]!r}?" if hits else \
            "use auto, cpu, cuda, cuda:N, cuda:all or mps"
        emit(("trainer", "device"), f"{device!r} is not a device; {hint}")
    precision = _dict(data.get("trainer")).get("precision")
    if precision in (16, "16", "16-mixed") and isinstance(device, str) \
            and device.strip() == "cpu":
        emit(("trainer", "precision"), "'16-mixed' needs a CUDA device (float16 autocast "
             "with a gradient scaler); use 'bf16-mixed' on a CPU, or a cuda device")


# ------------------------------------------------------------------ numbers in params
#: Slots whose params are hyperparameters (datasets and tasks describe data: skipped).
_NUMERIC_KINDS = frozenset({"optimizer", "scheduler", "loss", "metric", "sampler", "model",
                            "trainer", "transform"})


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    """The non-``None`` members of a union (``[tp]`` for any other type)."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [_strip(a) for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _expects_number(tp: Any) -> bool:
    """True when every accepted type of ``tp`` (``None`` aside) is ``int`` or ``float``."""
    members = _members(tp)
    return bool(members) and all(m in (int, float) for m in members)


def _expects_numbers(tp: Any) -> bool:
    """True when ``tp`` is a list or tuple of numbers (``None`` aside)."""
    members = _members(tp)
    if len(members) != 1 or typing.get_origin(members[0]) not in (list, tuple, Sequence):
        return False
    args = [a for a in typing.get_args(members[0]) if a is not Ellipsis]
    return bool(args) and all(_expects_number(a) for a in args)


def _schema_refuses(field: Any, value: float) -> bool:
    """Whether the field's own constraints already refuse ``value`` (no second message)."""
    for item in getattr(field, "metadata", ()):
        if getattr(item, "allow_inf_nan", None) is False:
            return True
        for attr, ok in (("gt", lambda b: value > b), ("ge", lambda b: value >= b),
                         ("lt", lambda b: value < b), ("le", lambda b: value <= b)):
            bound = getattr(item, attr, None)
            if isinstance(bound, int | float) and not ok(bound):
                return True
    return False


def _nonfinite(value: Any, loc: Loc, emit: Emit, field: Any = None,
               written: str | None = None) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        if field is None or not _schema_refuses(field, value):
            text = ".nan" if math.isnan(value) else ("-.inf" if value < 0 else ".inf")
            if written is not None:
                text = f"{written!r} (read as {text})"
            emit(loc, f"{text} is not a finite number; give a finite value (a non-finite "
                      "hyperparameter turns the weights or the loss into inf/nan at the "
                      "first step)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _nonfinite(item, (*loc, key), emit)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _nonfinite(item, (*loc, i), emit)


def _as_float(value: Any) -> float | None:
    """A string as pydantic reads it into a float (``"1e999"``, ``"inf"``), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return float(value.strip().replace("_", ""))
    except ValueError:
        return None


def _bool_message(value: bool) -> str:
    return (f"expected a number, got the boolean {str(value).lower()} (YAML reads "
            "true/false/yes/no as booleans, which would be used as 1/0); write the number")


def _numbers(data: dict[str, Any], registry: Registry, emit: Emit) -> None:
    for loc, kind, spec in iter_slots(data):
        if kind not in _NUMERIC_KINDS or not isinstance(spec, dict):
            continue
        params = spec.get("params")
        if not isinstance(params, dict):
            continue
        fields: dict[str, Any] = {}
        canonical = slot_component(kind, spec, registry)
        if canonical is not None:
            try:
                fields = dict(registry.get(kind, canonical).params_model.model_fields)
            except Exception:  # noqa: BLE001 - an unimportable params model is reported
                fields = {}
        for key, value in params.items():
            ploc = (*loc, "params", key)
            field = fields.get(key) if isinstance(key, str) else None
            _nonfinite(value, ploc, emit, field)
            if field is None:
                continue
            if _expects_number(field.annotation):
                items = [(ploc, value)]
            elif isinstance(value, list) and _expects_numbers(field.annotation):
                items = [((*ploc, i), item) for i, item in enumerate(value)]
            else:
                continue
            for iloc, item in items:
                if isinstance(item, bool):
                    emit(iloc, _bool_message(item))
                # YAML 1.1 reads 1e999 (no dot) as a string, which pydantic turns into inf
                _nonfinite(_as_float(item), iloc, emit, field if iloc == ploc else None,
                           written=item if isinstance(item, str) else None)


# -------------------------------------------------------------- components vs the task
def _session_task(data: dict[str, Any], registry: Registry) -> str | None:
    """The one task type of the session's datasets, when it can be told without importing
    anything (a ``task`` block, or the dataset type's ``metadata["task"]``); else ``None``."""
    found: set[str] = set()
    for spec in _dict(data.get("datasets")).values():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            return None
        task = spec.get("task")
        if isinstance(task, dict) and isinstance(task.get("type"), str):
            name = registry.canonical("task", task["type"])
        elif task is None:
            dataset = registry.canonical("dataset", spec["type"])
            provided = registry.get("dataset", dataset).metadata.get("task") \
                if dataset is not None else None
            name = registry.canonical("task", provided) if isinstance(provided, str) else None
        else:
            name = None
        if name is None:
            return None
        found.add(name)
    return found.pop() if len(found) == 1 else None


def _fits(info: Any) -> tuple[str, ...] | None:
    tasks = info.metadata.get("tasks")
    if isinstance(tasks, str):
        return (tasks,)
    if isinstance(tasks, list | tuple | frozenset | set):
        return tuple(str(t) for t in tasks)
    return None


def _task_fit(data: dict[str, Any], registry: Registry, emit: Emit) -> None:
    task = _session_task(data, registry)
    if task is None:
        return
    declared = {t for kind in ("loss", "metric") for info in registry.components(kind)
                for t in (_fits(info) or ())}
    if task not in declared:  # a task no component speaks about: nothing to check
        return
    trainer = _dict(data.get("trainer"))
    slots: list[tuple[Loc, str, Any]] = [
        (("trainer", "optimization", "loss"), "loss",
         _dict(trainer.get("optimization")).get("loss"))]
    for key in ("metrics", "test_metrics"):
        for name, spec in _dict(trainer.get(key)).items():
            slots.append((("trainer", key, name), "metric", spec))
    for loc, kind, spec in slots:
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue
        canonical = registry.canonical(kind, spec["type"])
        fits = _fits(registry.get(kind, canonical)) if canonical is not None else None
        if fits is None or task in fits:
            continue
        good = sorted(info.name for info in registry.components(kind)
                      if task in (_fits(info) or ()))
        alias = f" ({canonical})" if canonical != spec["type"] else ""
        hint = (f"use a {kind} made for {task}: {', '.join(good)}" if good
                else f"no registered {kind} declares {task}")
        if kind == "loss":
            hint += " (or leave 'loss' out for the task's default)"
        else:
            hint = "remove it or " + hint
        emit((*loc, "type"), f"{kind} {spec['type']!r}{alias} does not fit the {task!r} task "
                             f"(it fits: {', '.join(fits)}); {hint}")


# ------------------------------------------------------------------ split leakage
def _meta(registry: Registry, kind: str, name: Any, key: str) -> Any:
    canonical = registry.canonical(kind, name) if isinstance(name, str) else None
    return registry.get(kind, canonical).metadata.get(key) if canonical is not None else None


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value) if isinstance(value, list | tuple) else ()


def _norm_path(value: Any) -> Any:
    return os.path.normpath(os.path.expanduser(value)) if isinstance(value, str) else value


def _shares(loaders: dict[str, Any], name: str) -> dict[str, tuple[float, float]]:
    """Each split's share of dataset ``name`` as a fraction interval of its permutation
    (train first, then valid, then test, as :func:`thelper.data.splits.split_indices`)."""
    out: dict[str, tuple[float, float]] = {}
    start = 0.0
    for split in SPLITS:
        ratio = _ratio(_dict(loaders.get(f"{split}_split")).get(name))
        if ratio:
            out[split] = (start, start + ratio)
            start += ratio
    return out


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _leakage(data: dict[str, Any], registry: Registry, emit: Emit, warn: Emit) -> None:
    datasets = _dict(data.get("datasets"))
    loaders = _dict(data.get("loaders"))
    if len(datasets) < 2 or not loaders:
        return
    facts: dict[str, tuple[Any, ...]] = {}
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue
        dtype = registry.canonical("dataset", spec["type"]) or spec["type"]
        params = spec.get("params") if spec.get("params") is not None else {}
        paths = _names(_meta(registry, "dataset", dtype, "paths"))
        if isinstance(params, dict):
            params = {k: (_norm_path(v) if k in paths else v) for k, v in params.items()}
        files = tuple((k, params[k]) for k in paths
                      if isinstance(params, dict) and isinstance(params.get(k), str))
        subset = tuple((k, _canonical_json(params.get(k)))
                       for k in _names(_meta(registry, "dataset", dtype, "disjoint_by"))
                       if isinstance(params, dict))
        facts[str(name)] = (dtype, _canonical_json(params), _canonical_json(spec.get("task")),
                            files, subset)
    for train, tfacts in facts.items():
        t_share = _shares(loaders, train).get("train")
        if t_share is None:
            continue
        for other, ofacts in facts.items():
            if other == train:
                continue
            same_type = tfacts[0] == ofacts[0]
            same_data = same_type and tfacts[1] == ofacts[1]
            same_files = same_type and bool(tfacts[3]) and tfacts[3] == ofacts[3] \
                and tfacts[4] == ofacts[4]
            if not same_data and not same_files:
                continue
            for split, (lo, hi) in _shares(loaders, other).items():
                if split == "train":
                    continue
                overlap = min(hi, t_share[1]) - max(lo, t_share[0])
                loc = ("loaders", f"{split}_split", other)
                fix = (f"use one dataset with disjoint fractions, e.g. train_split: "
                       f"{{{train}: 0.8}}, {split}_split: {{{train}: 0.2}}")
                if same_data and tfacts[2] == ofacts[2]:
                    if overlap <= 1e-9:
                        continue
                    share = "every" if overlap >= (hi - lo) - 1e-9 else \
                        f"{overlap / (hi - lo):.0%} of the"
                    emit(loc, f"dataset {other!r} holds the same data as {train!r} (same type "
                              f"and params) and both are split with one permutation "
                              f"(seeds.split), so {share} {split} sample of {other!r} is a "
                              f"training sample of {train!r}; {fix}")
                else:
                    what = "the same data" if same_data else \
                        "the same files (" + ", ".join(f"{k}: {v!r}" for k, v in tfacts[3]) + ")"
                    why = "with another task" if same_data else "with other params"
                    warn(loc, f"dataset {other!r} reads {what} as {train!r} {why}, so its "
                              f"{split} samples may be training samples of {train!r} (the "
                              f"overlap cannot be decided here); {fix}")


# ------------------------------------------------------------------ local paths
def _missing_path(value: Any, loc: Loc, warn: Emit) -> None:
    if not isinstance(value, str) or not value or "://" in value:
        return
    path = Path(os.path.expanduser(value))
    try:
        exists = path.exists()
    except OSError:  # e.g. a name too long: the run would not find it either
        exists = False
    if not exists:
        where = "" if path.is_absolute() else f" (relative to {os.getcwd()})"
        warn(loc, f"{value!r} does not exist on this machine{where}; fix the path if the "
                  "session runs here (not an error: it may run on another machine)")


def _paths(data: dict[str, Any], registry: Registry, warn: Emit) -> None:
    for name, spec in _dict(data.get("datasets")).items():
        if not isinstance(spec, dict):
            continue
        params = _dict(spec.get("params"))
        for key in _names(_meta(registry, "dataset", spec.get("type"), "paths")):
            _missing_path(params.get(key), ("datasets", name, "params", key), warn)
    init_from = _dict(_dict(data.get("model")).get("init_from"))
    _missing_path(init_from.get("path"), ("model", "init_from", "path"), warn)


def _unfreeze(data: dict[str, Any], warn: Emit) -> None:
    """Warn about ``model.unfreeze`` steps that ``trainer.epochs`` never reaches."""
    epochs = _dict(data.get("trainer")).get("epochs")
    steps = _dict(data.get("model")).get("unfreeze")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or not isinstance(steps, list):
        return
    for i, step in enumerate(steps):
        at = _dict(step).get("at_epoch")
        if isinstance(at, int) and not isinstance(at, bool) and at > epochs:
            warn(("model", "unfreeze", i, "at_epoch"),
                 f"epoch {at} is after the last epoch (trainer.epochs: {epochs}), so these "
                 "parameters stay frozen (unless a resume adds epochs); lower at_epoch")


def log_warning(norm: Normalized) -> Emit:
    """A ``warn(loc, message)`` that logs ``warning: PATH: MESSAGE`` (the user's path) on
    the ``thelper.config`` logger, once per message."""
    seen: set[str] = set()

    def warn(loc: Loc, message: str) -> None:
        path = ".".join(str(x) for x in norm.original(tuple(loc))) or "<root>"
        text = f"warning: {path}: {message}"
        if text not in seen:
            seen.add(text)
            log.warning("%s", text)

    return warn


def cross_rules(norm: Normalized, registry: Registry, emit: Emit,
                failures: Iterable[Any] = (), warn: Emit | None = None) -> None:
    """Run every rule on ``norm.data``; ``emit(path, message)`` receives each problem.

    Args:
        norm: The normalised document.
        registry: Registered components.
        emit: Receives each problem (the config is invalid).
        failures: The plugin manager's failures, to complete install hints.
        warn: Receives each warning (the config stays valid); by default they are logged by
            :func:`log_warning`.
    """
    data = norm.data
    if not isinstance(data, dict):
        return
    warn = warn if warn is not None else log_warning(norm)
    _splits(data, emit)
    _tasks(data, registry, emit)
    _imports(data, norm, registry, emit, list(failures))
    _metrics(data, registry, emit)
    _device(data, emit)
    _numbers(data, registry, emit)
    _task_fit(data, registry, emit)
    _leakage(data, registry, emit, warn)
    _paths(data, registry, warn)
    _unfreeze(data, warn)
