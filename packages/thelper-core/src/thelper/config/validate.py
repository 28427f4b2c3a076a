"""Validate a config document against the installed plugins, reporting every problem.

Schema depth only: nothing here imports torch or a plugin's implementation modules.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from thelper.config.dynamic import UNKNOWN_COMPONENT, session_model
from thelper.config.models import SPLITS, SessionConfig
from thelper.config.source import ConfigDocument, Loc
from thelper.exceptions import ConfigError, ConfigIssue
from thelper.registry import Registry, closest

__all__ = ["validate_document", "check_document", "format_issues"]

_MISSING = object()


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _tagged_member(tp: Any, tag: Any) -> Any | None:
    for a in typing.get_args(tp):
        if any(getattr(x, "tag", None) == tag for x in getattr(a, "__metadata__", ())):
            return a
    return None


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[Loc, Any]:
    """Walk ``loc`` from ``root``: return the data path (union tags dropped) and the type."""
    tp: Any = root
    out: list[Any] = []
    for item in loc:
        tp = _unwrap(tp)
        if _is_union(tp):
            member = _tagged_member(tp, item)
            if member is not None:  # a discriminated-union tag: not part of the data path
                tp = member
                continue
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = _unwrap(members[0]) if len(members) == 1 else None
            if tp is not None and _is_union(tp):
                member = _tagged_member(tp, item)
                if member is not None:
                    tp = member
                    continue
        out.append(item)
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(item) if isinstance(item, str) else None
            tp = field.annotation if field is not None else None
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list:
            tp = typing.get_args(tp)[0]
        else:
            tp = None
    return tuple(out), tp


def _get(data: Any, loc: Loc) -> Any:
    node = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and item < len(node):
            node = node[item]
        else:
            return _MISSING
    return node


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _model_fields_at(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the model found by walking ``loc`` (with union tags) from ``root``."""
    _, tp = _walk(root, loc)
    tp = _unwrap(tp)
    if _is_union(tp):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            tp = _unwrap(members[0])
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _issue(doc: ConfigDocument, loc: Loc, message: str) -> ConfigIssue:
    file, line, col, source = doc.locate(loc)
    return ConfigIssue(".".join(str(x) for x in loc), message, file, line, col, source)


def _schema_issues(doc: ConfigDocument, exc: ValidationError, registry: Registry,
                   model: type[BaseModel]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: set[tuple[str, str]] = set()
    for err in exc.errors(include_url=False):
        raw_loc = tuple(err["loc"])
        loc, _ = _walk(model, raw_loc)
        etype = err["type"]
        if etype.startswith(UNKNOWN_COMPONENT + ":"):
            kind = etype.split(":", 1)[1]
            value = _get(doc.data, loc)
            name = value.get("type", value.get("operation")) if isinstance(value, dict) else None
            if not isinstance(value, dict):
                msg = (f"expected a mapping with 'type' and 'params' for a {kind} "
                       f"(got {_short(value)})")
            elif name is None:
                msg = (f"missing 'type': name a registered {kind}; "
                       f"{registry.suggestion(kind, '')}")
            else:
                loc = (*loc, "type") if "type" in value else (*loc, "operation")
                msg = (f"{name!r} is not a registered {kind}; "
                       f"{registry.suggestion(kind, str(name))}")
        elif etype == "extra_forbidden":
            key = loc[-1] if loc else raw_loc[-1]
            fields = _model_fields_at(model, raw_loc[:-1]) or []
            hits = closest(str(key), fields)
            msg = f"unknown key {str(key)!r}"
            if hits:
                msg += f"; did you mean {hits[0]!r}?"
            elif fields:
                msg += f"; valid keys: {', '.join(fields)}"
        elif etype == "missing":
            msg = "required key is missing"
        else:
            msg = err["msg"]
            value = err.get("input", _MISSING)
            if value is not _MISSING and not isinstance(value, dict | list):
                msg += f" (got {_short(value)})"
        key = (".".join(map(str, loc)), msg)
        if key in seen:
            continue
        seen.add(key)
        issues.append(_issue(doc, loc, msg))
    return issues


def _metric_names(trainer: dict[str, Any]) -> dict[str, Any]:
    metrics = trainer.get("metrics") if isinstance(trainer.get("metrics"), dict) else {}
    return dict(metrics or {})


def _cross_issues(doc: ConfigDocument, registry: Registry) -> list[ConfigIssue]:
    """Rules spanning several sections, checked on the raw document (defensively)."""
    data = doc.data
    issues: list[ConfigIssue] = []
    datasets = data.get("datasets") if isinstance(data.get("datasets"), dict) else {}
    loaders = data.get("loaders") if isinstance(data.get("loaders"), dict) else {}
    totals: dict[str, float] = {}
    any_train = False
    for split in SPLITS:
        key = f"{split}_split"
        ratios = loaders.get(key)
        if not isinstance(ratios, dict):
            continue
        for name, ratio in ratios.items():
            if datasets and name not in datasets:
                hits = closest(str(name), datasets)
                hint = f"did you mean {hits[0]!r}?" if hits else \
                    f"declared datasets: {', '.join(map(str, datasets))}"
                issues.append(_issue(doc, ("loaders", key, name),
                                     f"{name!r} is not a dataset declared under 'datasets'; {hint}"))
                continue
            if isinstance(ratio, int | float) and not isinstance(ratio, bool):
                totals[name] = totals.get(name, 0.0) + float(ratio)
                if split == "train" and ratio > 0:
                    any_train = True
    for name, total in totals.items():
        if total > 1.0 + 1e-9:
            issues.append(_issue(doc, ("loaders",),
                                 f"split ratios of dataset {name!r} sum to {total:g} > 1; "
                                 "train_split + valid_split + test_split must be at most 1"))
    if loaders and datasets and not any_train and not any(
            i.path.startswith("loaders.train_split") for i in issues):
        issues.append(_issue(doc, ("loaders", "train_split"),
                             "no dataset is used for training; add e.g. "
                             f"'train_split: {{{next(iter(datasets))}: 0.8}}'"))
    for name, spec in datasets.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            continue
        canonical = registry.canonical("dataset", spec["type"])
        if canonical is None:
            continue
        info = registry.get("dataset", canonical)
        if not info.metadata.get("provides_task") and not spec.get("task"):
            issues.append(_issue(doc, ("datasets", name),
                                 f"dataset type {spec['type']!r} does not define a task; add a "
                                 "'task' block, e.g. task: {type: classification, params: "
                                 "{class_names: [...]}}"))
    trainer = data.get("trainer") if isinstance(data.get("trainer"), dict) else {}
    metrics = _metric_names(trainer)

    def check_metric(name: Any, loc: Loc, role: str) -> None:
        if not isinstance(name, str):
            return
        if name == "loss":
            return
        if name not in metrics:
            choices = ["loss", *metrics]
            hits = closest(name, choices)
            hint = f"did you mean {hits[0]!r}?" if hits else \
                f"defined metrics: {', '.join(choices)}"
            issues.append(_issue(doc, loc, f"{role} {name!r} is not defined under "
                                           f"trainer.metrics; {hint}"))
            return
        spec = metrics[name]
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            canonical = registry.canonical("metric", spec["type"])
            if canonical is not None and registry.get("metric", canonical).metadata.get(
                    "goal") not in ("max", "min"):
                issues.append(_issue(doc, loc, f"{role} {name!r} ({spec['type']}) has no "
                                               "min/max goal and cannot be monitored; pick "
                                               "a scalar metric such as 'loss' or 'accuracy'"))

    if "monitor" in trainer:
        check_metric(trainer.get("monitor"), ("trainer", "monitor"), "monitored metric")
    optim = trainer.get("optimization") if isinstance(trainer.get("optimization"), dict) else {}
    sched = optim.get("scheduler") if isinstance(optim.get("scheduler"), dict) else {}
    step_metric = sched.get("step_metric", sched.get("step metric"))
    if step_metric is not None:
        check_metric(step_metric, ("trainer", "optimization", "scheduler", "step_metric"),
                     "scheduler step metric")
    return issues


def check_document(doc: ConfigDocument, registry: Registry) -> tuple[SessionConfig | None,
                                                                      list[ConfigIssue]]:
    """Validate ``doc``; return the typed config (or ``None``) and every issue found."""
    model = session_model(registry)
    config: SessionConfig | None = None
    issues: list[ConfigIssue] = []
    try:
        config = model.model_validate(doc.data)
    except ValidationError as exc:
        issues.extend(_schema_issues(doc, exc, registry, model))
    seen = {(i.path, i.message) for i in issues}
    for issue in _cross_issues(doc, registry):
        if (issue.path, issue.message) not in seen:
            issues.append(issue)
    if issues:
        config = None
    return config, issues


def format_issues(issues: list[ConfigIssue]) -> str:
    """One line per issue."""
    return "\n".join(i.format() for i in issues)


def validate_document(doc: ConfigDocument, registry: Registry) -> SessionConfig:
    """Validate ``doc`` and return the typed config.

    Raises:
        ConfigError: With every issue found (``.issues``), each naming its config path.
    """
    config, issues = check_document(doc, registry)
    if config is None:
        n = len(issues)
        raise ConfigError(
            f"{doc.file or 'config'}: {n} problem{'s' if n != 1 else ''} found:\n"
            + format_issues(issues),
            issues,
        )
    return config
