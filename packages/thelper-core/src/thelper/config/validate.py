"""Validate a config document against the installed plugins, reporting every problem.

Schema depth: nothing here imports torch or a plugin's implementation modules, except
:func:`check_transforms`, the build-depth check of the transform pipelines that
:func:`thelper.build.assemble` runs on built splits.

Steps: :func:`thelper.config.compat.normalize` rewrites thelper 0.6 spellings (remembering
the user's paths), a missing ``name`` becomes the stem of the config file named on the
command line (as thelper 0.6 did: ``configs/classif-cifar10.json`` names its session
``classif-cifar10``), one ``model_validate`` of the run-time session model
(:mod:`thelper.config.dynamic`) checks every section and every component's params, then the
cross-section rules (:mod:`thelper.config.rules`) run. Each problem becomes a
:class:`~thelper.exceptions.ConfigIssue` with the user's dotted path and ``file:line:col``.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Collection, Iterable
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, RootModel, ValidationError

from thelper.config.compat import (
    Normalized,
    iter_slots,
    legacy_key_hint,
    legacy_value_hint,
    normalize,
    slot_component,
    used_components,
)
from thelper.config.dynamic import UNKNOWN_COMPONENT, import_adapter, session_model
from thelper.config.hints import legacy_type_hint, not_installed, suggest
from thelper.config.imports import confirm_imports, is_import_path
from thelper.config.models import NAME_PATTERN
from thelper.config.rules import cross_rules
from thelper.config.source import ConfigDocument, Loc
from thelper.exceptions import ConfigError, ConfigIssue, PluginError
from thelper.registry import Registry, closest

__all__ = ["validate_document", "check_document", "format_issues", "check_transforms"]

_MISSING = object()


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


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
        if isinstance(tp, type) and issubclass(tp, RootModel):  # a section that is one slot
            tp = _unwrap(tp.model_fields["root"].annotation)
        if _is_union(tp):
            member = _tagged_member(tp, item)
            if member is not None:  # a discriminated-union tag: not part of the data path
                tp = member
                continue
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = _unwrap(members[0]) if len(members) == 1 else None
            if isinstance(tp, type) and issubclass(tp, RootModel):
                tp = _unwrap(tp.model_fields["root"].annotation)
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
        elif typing.get_origin(tp) is dict and len(typing.get_args(tp)) == 2:
            tp = typing.get_args(tp)[1]
        elif typing.get_origin(tp) is list and typing.get_args(tp):
            tp = typing.get_args(tp)[0]
        else:
            tp = None
    return tuple(out), tp


def _model_at(root: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model found by walking ``loc`` (with union tags) from ``root``."""
    _, tp = _walk(root, loc)
    tp = _unwrap(tp)
    if _is_union(tp):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1:
            tp = _unwrap(members[0])
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _get(data: Any, loc: Loc) -> Any:
    node = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            node = node[item]
        elif isinstance(node, list) and isinstance(item, int) and 0 <= item < len(node):
            node = node[item]
        else:
            return _MISSING
    return node


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr must never break a report
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _first_sentence(text: str | None) -> str | None:
    if not text:
        return None
    sentence = " ".join(text.replace("``", "'").split()).split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= 120 else sentence[:117] + "..."


class _Reporter:
    """Collects issues in the user's coordinates, without duplicates."""

    def __init__(self, doc: ConfigDocument, norm: Normalized) -> None:
        self.doc = doc
        self.norm = norm
        self.issues: list[ConfigIssue] = list(doc.issues)
        self._seen: set[tuple[str, str]] = {(i.path, i.message) for i in doc.issues}

    def emit(self, loc: Loc, message: str) -> None:
        original = self.norm.original(tuple(loc))
        path = ".".join(str(x) for x in original)
        if (path, message) in self._seen:
            return
        self._seen.add((path, message))
        file, line, col, source = self.doc.locate(original)
        self.issues.append(ConfigIssue(path, message, file, line, col, source))


def _unknown_component(kind: str, value: Any, loc: Loc, registry: Registry,
                       failures: Iterable[Any]) -> tuple[Loc, str]:
    if not isinstance(value, dict):
        if isinstance(value, str) and registry.canonical(kind, value):
            return loc, (f"expected a mapping with 'type' and 'params' for a {kind} "
                         f"(got {_short(value)}); write {{type: {value}}}")
        return loc, (f"expected a mapping with 'type' and 'params' for a {kind} "
                     f"(got {_short(value)})")
    key = "type" if "type" in value or "operation" not in value else "operation"
    name = value.get(key)
    if name is None:
        legacy = [h for k in value if isinstance(k, str)
                  for h in [legacy_key_hint(loc, k)] if h]
        if legacy:
            return loc, f"missing 'type': {legacy[0]}"
        return loc, f"missing 'type': name a registered {kind}; {suggest(registry, kind, '')}"
    if not isinstance(name, str):
        return (*loc, key), (f"'type' must be the name of a registered {kind} "
                             f"(got {_short(name)})")
    parts = [f"{name!r} is not a registered {kind}"]
    refused = next((f for f in failures if getattr(f, "kind", None) == kind
                    and name in getattr(f, "names", ())), None)
    if refused is not None:  # e.g. its params module does not exist
        dist = f" ({refused.distribution})" if refused.distribution else ""
        parts.append(f"plugin {refused.name!r}{dist} registers it, but it was refused: "
                     f"{refused.error}")
        return (*loc, key), "; ".join(parts)
    legacy = legacy_type_hint(kind, name, value)
    if legacy:
        parts.append(legacy)
    install = not_installed(kind, name, registry, failures)
    if install:
        parts.append(install)
    if not legacy and not install:
        parts.append(suggest(registry, kind, name))
        if is_import_path(name) and import_adapter(registry, kind) is None:
            article = "an" if kind[:1] in "aeiou" else "a"
            parts.append(f"{article} {kind} cannot be imported by path; register it in a plugin "
                         "(see docs/writing-plugins.md)")
    return (*loc, key), "; ".join(parts)


def _schema_issues(report: _Reporter, exc: ValidationError, registry: Registry,
                   model: type[BaseModel], failures: Iterable[Any],
                   reported: Collection[tuple[str, str]] = (),
                   missing_name: str | None = None) -> None:
    data = report.norm.data
    for err in exc.errors(include_url=False):
        raw_loc = tuple(err["loc"])
        loc, _ = _walk(model, raw_loc)
        etype = err["type"]
        if etype.startswith(UNKNOWN_COMPONENT + ":"):
            kind = etype.split(":", 1)[1]
            value = _get(data, loc)
            if (kind, slot_component(kind, value, registry)) in reported:
                continue  # its params model cannot be imported: already reported
            loc, msg = _unknown_component(kind, value, loc, registry, failures)
        elif etype == "extra_forbidden":
            key = str(loc[-1] if loc else raw_loc[-1])
            parent = report.norm.original(loc[:-1])
            parent_model = _model_at(model, raw_loc[:-1])
            fields = list(parent_model.model_fields) if parent_model is not None else []
            msg = f"unknown key {key!r}"
            hint = legacy_key_hint(parent, key)
            install = not_installed("", key, registry, failures, section=True) \
                if not parent else None
            hits = closest(key, fields)
            if hint:
                msg += f"; {hint}"
            elif install:
                msg += f"; {install}"
            elif hits:
                msg += f"; did you mean {hits[0]!r}?"
            elif fields:
                msg += f"; valid keys: {', '.join(fields)}"
        elif etype == "missing" and loc and isinstance(loc[-1], int):
            _, seq_type = _walk(model, raw_loc[:-1])
            size = len(typing.get_args(_unwrap(seq_type)))
            given = _get(data, loc[:-1])
            loc = loc[:-1]
            msg = f"expected {size} values" if size else "an item is missing"
            if isinstance(given, list):
                text = repr(given)
                msg += f" (got {len(given)}: {text if len(text) <= 60 else text[:57] + '...'})"
        elif etype == "missing":
            msg = "required key is missing"
            parent_model = _model_at(model, raw_loc[:-1])
            field = parent_model.model_fields.get(str(raw_loc[-1])) \
                if parent_model is not None and raw_loc else None
            description = _first_sentence(field.description if field else None)
            if description:
                msg += f" ({description})"
            if loc == ("name",) and missing_name:
                msg += f"; {missing_name}"
        else:
            msg = str(err.get("msg", etype))
            value = err.get("input", _MISSING)
            if value is not _MISSING:
                msg += f" (got {_short(value)})"
            legacy = legacy_value_hint(report.norm.original(loc), _get(data, loc))
            if legacy:
                msg += f"; {legacy}"
        report.emit(loc, msg)


def _sort_key(files: dict[str | None, int]) -> Any:
    """Issues in merge order of their files (bases first), then by position; then the
    overrides."""

    def key(item: tuple[int, ConfigIssue]) -> tuple[int, int, int, int, int]:
        index, issue = item
        if issue.source == "file" and issue.line is not None:
            return 0, files.get(issue.file, len(files)), issue.line, issue.column or 0, index
        return 1, 0, 0, 0, index

    return key


def _unimportable_params(registry: Registry,
                         used: dict[str, frozenset[str]]) -> dict[tuple[str, str], str]:
    """``{(kind, name): message}`` of the used components whose params model (a lazy
    reference) cannot be imported; importing the others here warms their cache."""
    broken: dict[tuple[str, str], str] = {}
    for kind, names in used.items():
        for name in names:
            try:
                _ = registry.get(kind, name).params_model
            except PluginError as exc:
                broken[(kind, name)] = str(exc)
    return broken


def _command_line_file(doc: ConfigDocument) -> str | None:
    """The one config file named on the command line, or ``None`` (in-memory documents,
    several files)."""
    named = doc.recipe.get("files") or ([doc.file] if doc.file else [])
    return str(named[0]) if len(named) == 1 else None


def _name_from_stem(doc: ConfigDocument, norm: Normalized) -> str | None:
    """Give ``norm.data`` the stem of its file as ``name`` when it has none (thelper 0.6).

    Returns:
        Why no name could be taken (appended to the "missing" message), or ``None``.
    """
    data = norm.data
    if not isinstance(data, dict) or data.get("name") is not None:
        return None
    file = _command_line_file(doc)
    if file is None:
        return ("give 'name', or name a single config file: its stem becomes the name"
                if doc.files else None)
    stem = PurePath(file).stem
    if not re.fullmatch(NAME_PATTERN, stem):
        return (f"the file's stem {stem!r} cannot be a session name (letters, digits, "
                "'_', '.', '+', '-'): give 'name', or rename the file")
    data["name"] = stem
    return None


def check_document(doc: ConfigDocument, registry: Registry, *,
                   failures: Iterable[Any] = (), allow_imports: Iterable[str] = (),
                   warnings: list[ConfigIssue] | None = None
                   ) -> tuple[Any, list[ConfigIssue]]:
    """Validate ``doc``; return the typed config (or ``None``) and every issue found.

    Args:
        doc: The merged document (files with their bases and groups, environment and
            ``--set`` overrides); each issue is located in the file that set the value.
        registry: Registered components.
        failures: Plugins that failed to load (``PluginFailure``), for install hints.
        allow_imports: Modules the command line allows (``--allow-import``). Each entry of
            the document's ``imports.allow`` must be covered by one of them (a config is
            data and cannot widen what runs by itself); the typed config's ``imports.allow``
            is the union of both.
        warnings: Receives what may be a problem but leaves the config valid (a local
            dataset path missing on this machine, a possible split overlap), located like
            the issues. ``None``: they are logged as ``warning: PATH: MESSAGE``.

    Returns:
        ``(config, issues)``: the :class:`~thelper.config.models.SessionConfig` subclass
        instance when there is no issue, else ``None``; issues in file order, then
        overrides.
    """
    failures = list(failures)
    doc, unconfirmed = _confirmed_imports(doc, allow_imports)
    norm = normalize(doc.data, registry)
    no_stem = _name_from_stem(doc, norm)
    report = _Reporter(doc, norm)
    for index, module in unconfirmed:
        report.emit(("imports", "allow", index),
                    f"{module!r} widens what this config may import (importing runs its "
                    f"code); confirm it on the command line with --allow-import {module}, or "
                    "remove it")
    used = used_components(norm.data, registry)
    broken = _unimportable_params(registry, used)
    unplaced = dict(broken)
    for loc, kind, value in iter_slots(norm.data):
        key = (kind, slot_component(kind, value, registry) or "")
        if key in broken:
            report.emit((*loc, "type") if "type" in value else loc, broken[key])
            unplaced.pop(key, None)
    for message in unplaced.values():  # e.g. the implicit default trainer
        report.emit((), message)
    used = {k: frozenset(n for n in names if (k, n) not in broken) for k, names in used.items()}
    config: Any = None
    try:
        model = session_model(registry, used)
    except PluginError as exc:  # e.g. the params model of a plugin's top-level section
        report.emit((), str(exc))
    else:
        try:
            config = model.model_validate(norm.data)
        except ValidationError as exc:
            _schema_issues(report, exc, registry, model, failures, reported=broken,
                           missing_name=no_stem)
        except Exception as exc:  # noqa: BLE001 - a params model's own validator crashed
            report.emit((), f"a params model raised {type(exc).__name__} while validating: "
                            f"{exc} (this is a bug in the plugin that registers it)")
    notes = None
    if warnings is not None:
        notes = _Reporter(doc, norm)
        notes.issues, notes._seen = [], set()  # the document's issues are not warnings
    cross_rules(norm, registry, report.emit, failures,
                warn=None if notes is None else notes.emit)
    if notes is not None and warnings is not None:
        warnings.extend(notes.issues)
    order = {f: i for i, f in enumerate(doc.files or [doc.file])}
    issues = [i for _, i in sorted(enumerate(report.issues), key=_sort_key(order))]
    return (config if not issues else None), issues


def _confirmed_imports(doc: ConfigDocument, allow_imports: Iterable[str]
                       ) -> tuple[ConfigDocument, list[tuple[int, str]]]:
    """``doc`` with its ``imports.allow`` set to the effective list, and the unconfirmed
    entries ``(index, module)`` of the original list."""
    allow_imports = list(allow_imports)
    imports = doc.data.get("imports")
    raw = imports.get("allow") if isinstance(imports, dict) else None
    if not allow_imports and not raw:
        return doc, []
    if imports is None:
        imports = {}
    if not isinstance(imports, dict) or (raw is not None and not isinstance(raw, list)):
        return doc, []  # malformed: the schema reports it
    effective, unconfirmed = confirm_imports(raw, allow_imports)
    out = doc.copy()
    out.data["imports"] = {**imports, "allow": effective}
    return out, [(i, str(raw[i])) for i in unconfirmed]


def format_issues(issues: list[ConfigIssue]) -> str:
    """One line per issue."""
    return "\n".join(i.format() for i in issues)


def validate_document(doc: ConfigDocument, registry: Registry, *,
                      failures: Iterable[Any] = (), allow_imports: Iterable[str] = (),
                      warnings: list[ConfigIssue] | None = None) -> Any:
    """Validate ``doc`` and return the typed config.

    Args:
        doc: The merged document.
        registry: Registered components.
        failures: Plugins that failed to load, for install hints.
        allow_imports: The command line's ``--allow-import`` modules (see
            :func:`check_document`).
        warnings: Collects warnings instead of logging them (see :func:`check_document`).

    Raises:
        ConfigError: With every issue found (``.issues``), each naming its config path.
    """
    config, issues = check_document(doc, registry, failures=failures,
                                    allow_imports=allow_imports, warnings=warnings)
    if config is None:
        n = len(issues)
        raise ConfigError(
            f"{doc.label}: {n} problem{'s' if n != 1 else ''} found:\n"
            + format_issues(issues),
            issues,
        )
    return config


# ------------------------------------------------------------------ build depth: transforms

def _describe_input(value: Any) -> str:
    """``PIL image (mode RGB, 64x64)``, ``tensor torch.uint8 (3, 64, 64)``, ... for messages."""
    module = type(value).__module__ or ""
    if module.startswith("PIL."):
        size = getattr(value, "size", None)
        shown = f", {size[0]}x{size[1]}" if isinstance(size, tuple) and len(size) == 2 else ""
        return f"a PIL image (mode {getattr(value, 'mode', '?')}{shown})"
    shape = getattr(value, "shape", None)
    if shape is not None:
        kind = "tensor" if module.startswith("torch") else type(value).__name__
        return f"a {kind} {getattr(value, 'dtype', '')} {tuple(int(s) for s in shape)}"
    if isinstance(value, dict):
        return "a sample mapping (keys " + ", ".join(map(str, list(value)[:6])) + ")"
    return f"a {type(value).__name__}"


def _transform_fix(value: Any, exc: BaseException) -> str:
    text = str(exc)
    if type(value).__module__.startswith("PIL.") or "PIL" in text:
        return ("move it after 'torchvision.transforms.ToTensor' (to_float), which turns PIL "
                "images into tensors, or add one before it")
    if hasattr(value, "shape") and not type(value).__module__.startswith("torch"):
        return "add 'torchvision.transforms.ToTensor' (to_float) before it"
    return "check its params and the order of the transforms before it"


def check_transforms(splits: dict[str, Any], cfg: Any) -> None:
    """Apply each split's transform pipeline to the split's first sample, one transform at a
    time, in this process, so that a transform given the wrong type of input (a PIL image
    where a tensor is expected, ...) is reported with its config path and the fix before any
    loader worker starts (a worker would only say "Caught TypeError in DataLoader worker
    process 0").

    The random number generators (torch's CPU generator, NumPy's and ``random``'s global
    ones) are restored afterwards, so that checking changes no result. A split whose first
    sample cannot be read is skipped (reading it again in the loader reports it).

    Args:
        splits: ``{split: SplitDataset}`` as built (:func:`thelper.build.build_data`); each
            transform is ``Compose`` of ``train_augments + base_transforms`` (train) or
            ``base_transforms`` (valid, test).
        cfg: The validated session config (for the transforms' types and config paths).

    Raises:
        ConfigError: A transform raised ``TypeError`` or ``ValueError`` on the sample; the
            message names ``loaders.<list>[i]``, its type, the input it got and the fix.
    """
    import random

    import numpy as np
    import torch

    from thelper.data.datasets import as_sample

    base = [("base_transforms", i, s) for i, s in enumerate(cfg.loaders.base_transforms)]
    augments = [("train_augments", i, s) for i, s in enumerate(cfg.loaders.train_augments)]
    for split, sd in splits.items():
        stages = getattr(sd.transform, "transforms", None)
        specs = (augments + base) if split == "train" else base
        if not stages or len(stages) != len(specs) or len(sd) == 0:
            continue
        try:
            name, ds, index = sd.locate(0)
            value = as_sample(ds[index])[sd.input_key]
        except Exception:  # noqa: BLE001 - unreadable samples are the loader's to report
            continue
        states = (torch.default_generator.get_state(), np.random.get_state(), random.getstate())
        try:
            torch.default_generator.manual_seed(sd.seed)
            for (key, i, spec), transform in zip(specs, stages, strict=True):
                try:
                    value = transform(value)
                except (TypeError, ValueError) as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    raise ConfigError(
                        f"loaders.{key}[{i}] ({spec.type}) cannot transform {split} sample 0 "
                        f"of dataset {name!r}: it got {_describe_input(value)} "
                        f"({type(exc).__name__}: {reason}); {_transform_fix(value, exc)}"
                    ) from exc
        finally:
            torch.default_generator.set_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
