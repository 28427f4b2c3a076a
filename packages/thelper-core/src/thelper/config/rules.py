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
      schedulers that use it; ``reduce_lr_on_plateau``'s ``mode`` agrees with the goal;
    - metric names do not shadow ``loss``/``lr`` and ``test_metrics`` do not redefine
      ``metrics``;
    - ``trainer.device`` names a device.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from thelper.config.compat import Normalized
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

__all__ = ["cross_rules", "DEVICE_PATTERN"]

Emit = Callable[[Loc, str], None]

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


def cross_rules(norm: Normalized, registry: Registry, emit: Emit,
                failures: Iterable[Any] = ()) -> None:
    """Run every rule on ``norm.data``; ``emit(path, message)`` receives each problem.

    ``failures`` (the plugin manager's) complete install hints.
    """
    data = norm.data
    if not isinstance(data, dict):
        return
    _splits(data, emit)
    _tasks(data, registry, emit)
    _imports(data, norm, registry, emit, list(failures))
    _metrics(data, registry, emit)
    _device(data, emit)
