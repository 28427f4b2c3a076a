"""Fine-tuning: initialise a model from saved weights, freeze and unfreeze parameters by name,
and split its parameters into optimizer groups.

Config keys (see ``docs/config/finetuning.md``):

- ``model.init_from: {path, key_map, exclude, strict}``: :func:`load_init`;
- ``model.freeze: [pattern, ...]``: :func:`apply_freeze`;
- ``model.unfreeze: [{match, at_epoch}, ...]``: :func:`check_unfreeze`, then
  :func:`apply_unfreeze` at the start of every epoch;
- ``trainer.optimization.optimizer.param_groups: [{match, lr, weight_decay}, ...]``:
  :func:`optimizer_params`.

Patterns (:func:`matches`) are matched against the names of ``model.named_parameters()``
(and of ``model.state_dict()`` for ``init_from.exclude``): a pattern holding ``*``, ``?`` or
``[`` is a case-sensitive glob (``features.*``, ``*.bias``; ``*`` also matches dots);
any other pattern names a module or a parameter and matches it and everything under it
(``features`` and ``features.`` match ``features.0.weight``, not ``features2.weight``).

Frozen parameters stay in the optimizer (``requires_grad`` false: their gradient stays
``None``, which every ``torch.optim`` optimizer skips, weight decay included), so unfreezing
them later needs no new optimizer and keeps the optimizer's state of the others.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from thelper.exceptions import CheckpointError, ConfigError

__all__ = ["matches", "load_init", "read_state_dict", "apply_freeze", "check_unfreeze",
           "apply_unfreeze", "optimizer_params", "describe"]

INIT = "model.init_from"
GROUPS = "trainer.optimization.optimizer.param_groups"
_GLOB = frozenset("*?[")
_SHOWN = 5  # names listed in a message


# ------------------------------------------------------------------------ patterns
def matches(name: str, pattern: str) -> bool:
    """Whether a parameter (or state dict key) ``name`` matches ``pattern``.

    Args:
        name: A dotted name, e.g. ``features.0.weight``.
        pattern: A glob when it holds ``*``, ``?`` or ``[`` (:func:`fnmatch.fnmatchcase`),
            else a module or parameter name matching itself and the names under it (a
            trailing dot is ignored).
    """
    if _GLOB & set(pattern):
        return fnmatch.fnmatchcase(name, pattern)
    prefix = pattern.rstrip(".")
    return bool(prefix) and (name == prefix or name.startswith(prefix + "."))


def _patterns(match: str | Sequence[str]) -> list[str]:
    return [match] if isinstance(match, str) else list(match)


def _field(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key)


def _listing(names: Sequence[str], limit: int = _SHOWN) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _name_hint(pattern: str, names: Sequence[str]) -> str:
    """``did you mean ...?`` and a few of the model's names (one per module)."""
    firsts: dict[str, str] = {}
    for n in names:
        firsts.setdefault(n.rpartition(".")[0], n)
    modules = [m for m in firsts if m]
    tops = list(dict.fromkeys(n.split(".")[0] for n in names))
    leaves = list(dict.fromkeys(f"*.{n.rpartition('.')[2]}" for n in names))
    candidates = [f"{t}.*" for t in tops] + modules + [f"{m}.*" for m in modules] + leaves \
        + list(names)
    close = difflib.get_close_matches(pattern, candidates, n=1, cutoff=0.6)
    shown = list(firsts.values())
    text = (f"the model's parameters are named like {', '.join(shown[:_SHOWN])}"
            f"{', ...' if len(shown) > _SHOWN else ''} ({len(names)} parameter tensors; "
            "logs/model.txt shows the modules)")
    return (f"did you mean {close[0]!r}? " if close else "") + text


def _check_matches(pattern: str, names: Sequence[str], where: str) -> list[str]:
    hit = [n for n in names if matches(n, pattern)]
    if not hit:
        raise ConfigError(f"{where}: pattern {pattern!r} matches no parameter of the model; "
                          + _name_hint(pattern, names))
    return hit


# ------------------------------------------------------------------------ freezing
def apply_freeze(model: torch.nn.Module, patterns: Sequence[str]) -> list[str]:
    """Set ``requires_grad = False`` on every parameter a pattern of ``model.freeze``
    matches.

    Args:
        model: The model.
        patterns: ``model.freeze``.

    Returns:
        The names of the frozen parameters, in ``named_parameters()`` order.

    Raises:
        ConfigError: A pattern matches no parameter (names the pattern and a few names).
    """
    names = [n for n, _ in model.named_parameters()]
    for i, pattern in enumerate(patterns):
        _check_matches(pattern, names, f"model.freeze[{i}]")
    frozen = []
    for name, param in model.named_parameters():
        if any(matches(name, p) for p in patterns):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


def check_unfreeze(model: torch.nn.Module, schedule: Sequence[Any]) -> None:
    """Check ``model.unfreeze`` against the model once ``model.freeze`` is applied.

    Args:
        model: The model, with its frozen parameters.
        schedule: ``[{match, at_epoch}, ...]`` (config models or dicts).

    Raises:
        ConfigError: A pattern matches no parameter, or only trainable ones (nothing to
            unfreeze: a typo, or a pattern missing from ``model.freeze``).
    """
    params = dict(model.named_parameters())
    names = list(params)
    for i, step in enumerate(schedule):
        for pattern in _patterns(_field(step, "match")):
            hit = _check_matches(pattern, names, f"model.unfreeze[{i}].match")
            if all(params[n].requires_grad for n in hit):
                raise ConfigError(
                    f"model.unfreeze[{i}].match: pattern {pattern!r} matches no frozen "
                    f"parameter ({len(hit)} trainable ones, e.g. {hit[0]}); freeze them first "
                    "with model.freeze, or fix the pattern")


def apply_unfreeze(model: torch.nn.Module, schedule: Sequence[Any], epoch: int,
                   logger: logging.Logger | None = None) -> list[str]:
    """Make trainable the parameters of every ``model.unfreeze`` entry whose ``at_epoch`` is
    at most ``epoch``.

    Idempotent: call it at the start of every epoch. The checkpoint does not store which
    parameters are frozen: a resume builds the model anew with ``model.freeze`` applied
    (:func:`thelper.build.prepare_model`), and this call for its first epoch unfreezes every
    step due by then, which re-derives the state of that epoch. Under
    DistributedDataParallel, re-wrap the model when it returns patterns: DDP only reduces the
    gradients of the parameters that were trainable when it wrapped the model.

    Args:
        model: The (unwrapped) model.
        schedule: ``[{match, at_epoch}, ...]`` (config models or dicts).
        epoch: The 1-based epoch about to start.
        logger: Where to log what was unfrozen (default: the ``thelper`` logger).

    Returns:
        The patterns that made at least one parameter trainable now (empty most epochs).
    """
    done: list[str] = []
    count = 0
    params = list(model.named_parameters())
    for step in schedule:
        if int(_field(step, "at_epoch")) > epoch:
            continue
        for pattern in _patterns(_field(step, "match")):
            thawed = [p for n, p in params if not p.requires_grad and matches(n, pattern)]
            for p in thawed:
                p.requires_grad_(True)
            if thawed:
                done.append(pattern)
                count += sum(p.numel() for p in thawed)
    if done:
        (logger or logging.getLogger("thelper")).info(
            "epoch %d: unfroze %s (%s parameters)", epoch, ", ".join(done), f"{count:,}")
    return done


# ------------------------------------------------------------------------ optimizer groups
def _groups(model: torch.nn.Module, specs: Sequence[Any]
            ) -> tuple[list[tuple[str, torch.nn.Parameter]],
                       list[list[tuple[str, torch.nn.Parameter]]]]:
    """``(default group, [group of each spec])`` as ``(name, parameter)`` lists."""
    named = list(model.named_parameters())
    names = [n for n, _ in named]
    pats = [_patterns(_field(s, "match")) for s in specs]
    for i, group in enumerate(pats):
        for pattern in group:
            _check_matches(pattern, names, f"{GROUPS}[{i}].match")
    default: list[tuple[str, torch.nn.Parameter]] = []
    groups: list[list[tuple[str, torch.nn.Parameter]]] = [[] for _ in specs]
    for name, param in named:
        for i, group in enumerate(pats):
            if any(matches(name, p) for p in group):
                groups[i].append((name, param))
                break
        else:
            default.append((name, param))
    for i, members in enumerate(groups):
        if not members:
            first = next(j for j in range(i) if any(
                matches(n, p) for n, _ in groups[j] for p in pats[i]))
            raise ConfigError(
                f"{GROUPS}[{i}].match: every parameter it matches is already in "
                f"param_groups[{first}] (a parameter goes to the first group that matches "
                "it); put the narrower group first or remove this one")
    return default, groups


def _label(spec: Any) -> str:
    return ", ".join(_patterns(_field(spec, "match")))


def optimizer_params(model: torch.nn.Module, spec: Any) -> list[Any]:
    """What the optimizer receives as ``params``: the model's parameters, or its parameter
    groups when ``spec.param_groups`` is set.

    Groups: the default group first (the parameters no pattern matches; the optimizer's own
    params; left out when empty), then one group per ``param_groups`` entry with its ``lr``
    and ``weight_decay`` when given. Each group holds a ``name`` key (``default`` or its
    patterns). Frozen parameters are in their group too.

    Args:
        model: The model (unwrapped: parameter names without a ``module.`` prefix).
        spec: ``trainer.optimization.optimizer`` (anything with a ``param_groups`` list of
            ``{match, lr, weight_decay}``, or ``None``).

    Returns:
        A list of parameters, or a list of ``{"params": [...], "name": ..., ...}`` dicts.

    Raises:
        ConfigError: A pattern matches no parameter, or a group matches only parameters
            that an earlier group took.
    """
    specs = list(getattr(spec, "param_groups", None) or [])
    if not specs:
        return list(model.parameters())
    default, groups = _groups(model, specs)
    out: list[dict[str, Any]] = []
    if default:
        out.append({"params": [p for _, p in default], "name": "default"})
    for s, members in zip(specs, groups, strict=True):
        group: dict[str, Any] = {"params": [p for _, p in members], "name": _label(s)}
        for key in ("lr", "weight_decay"):
            if _field(s, key) is not None:
                group[key] = float(_field(s, key))
        out.append(group)
    return out


def describe(model: torch.nn.Module, model_spec: Any, optimizer_spec: Any = None,
             init_report: Mapping[str, Any] | None = None) -> list[str]:
    """The fine-tuning lines of ``logs/model.txt``: parameter counts, freeze and unfreeze
    settings, the optimizer groups and the ``init_from`` summary."""
    params = list(model.named_parameters())
    total = sum(p.numel() for _, p in params)
    trainable = sum(p.numel() for _, p in params if p.requires_grad)
    lines = [f"parameters: {total:,} ({trainable:,} trainable, {total - trainable:,} frozen)"]
    if init_report is not None:
        lines.append("init_from: " + _init_summary(init_report)
                     + "; details in logs/init_from.json")
    freeze = list(getattr(model_spec, "freeze", None) or [])
    if freeze:
        frozen = [(n, p) for n, p in params if any(matches(n, f) for f in freeze)]
        lines.append(f"freeze: {', '.join(freeze)} ({len(frozen)} tensors, "
                     f"{sum(p.numel() for _, p in frozen):,} parameters)")
    for step in getattr(model_spec, "unfreeze", None) or []:
        lines.append(f"unfreeze at epoch {_field(step, 'at_epoch')}: "
                     f"{', '.join(_patterns(_field(step, 'match')))}")
    specs = list(getattr(optimizer_spec, "param_groups", None) or [])
    if specs:
        base = getattr(optimizer_spec, "params", None)
        base = base.model_dump() if hasattr(base, "model_dump") else dict(base or {})
        default, groups = _groups(model, specs)
        rows = [("default", base.get("lr"), base.get("weight_decay"), default)] if default \
            else []
        rows += [(_label(s), _field(s, "lr") if _field(s, "lr") is not None else base.get("lr"),
                  _field(s, "weight_decay") if _field(s, "weight_decay") is not None
                  else base.get("weight_decay"), m) for s, m in zip(specs, groups, strict=True)]
        lines.append(f"optimizer groups ({getattr(optimizer_spec, 'type', '?')}):")
        for label, lr, wd, members in rows:
            n = sum(p.numel() for _, p in members)
            off = sum(p.numel() for _, p in members if not p.requires_grad)
            lines.append(f"  {label}: lr {lr:g}, weight_decay {wd if wd is not None else '-'}: "
                         f"{len(members)} tensors, {n:,} parameters"
                         + (f" ({off:,} frozen)" if off else ""))
    return lines


# ------------------------------------------------------------------------ init_from
def _resolve(path: str) -> tuple[Path, bool]:
    """The file to load, and whether it is a session's checkpoint."""
    from thelper.checkpoint import find_checkpoint

    p = Path(path).expanduser()
    if p.is_dir():
        for which in ("best", "latest"):
            try:
                return find_checkpoint(p, which), True
            except CheckpointError:
                continue
        raise ConfigError(f"{INIT}.path: {path!r} is a directory without "
                          "checkpoints/ckpt.best.pt or ckpt.latest.pt; give a thelper session "
                          "directory, a checkpoint file or a state dict file")
    if not p.is_file():
        raise ConfigError(f"{INIT}.path: {path!r} does not exist; give a thelper session "
                          "directory, a checkpoint file or a state dict file")
    return p, False


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the weights of a session, a thelper checkpoint or a state dict file on the CPU,
    with ``torch.load(weights_only=True)`` (a file that pickles objects is refused).

    Accepted: a session directory (``checkpoints/ckpt.best.pt``, else ``ckpt.latest.pt``),
    a thelper checkpoint (its ``model``, or its ``ema`` when it has one), a mapping of names to tensors (e.g. torchvision's
    weights), or a mapping holding one under ``state_dict`` (Lightning) or ``model``.
    Zip-format files have their records' CRC-32 verified first.

    Args:
        path: The file or session directory (``~`` expanded).

    Returns:
        ``(state dict, source)``; ``source`` gives the ``file``, its ``kind``
        (``thelper-checkpoint`` or ``state_dict``) and, for a thelper checkpoint, its
        ``epoch``, ``model_type`` and ``name``.

    Raises:
        ConfigError: Nothing at ``path``, or the file holds no state dict.
        CheckpointError: The file is corrupted, truncated or pickles objects.
    """
    from thelper.checkpoint import FORMAT, evaluated_weights, load_checkpoint, verify_checkpoint

    file, in_session = _resolve(str(path))
    if in_session:
        data: Any = load_checkpoint(file, "cpu")
    else:
        verify_checkpoint(file)
        try:
            data = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - every failure means the same to the user
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = next((ln for ln in lines if "Unsupported global" in ln),
                          lines[0] if lines else "")
            raise CheckpointError(
                f"{INIT}.path: cannot load {str(file)!r} with torch.load(weights_only=True): "
                f"{type(exc).__name__}: {detail}; the file is truncated, corrupted or pickles "
                "objects (thelper only loads tensors and containers: save "
                "model.state_dict() instead)") from None
    source: dict[str, Any] = {"file": str(file.absolute()), "kind": "state_dict"}
    if isinstance(data, Mapping) and data.get("format") == FORMAT:
        source.update(kind="thelper-checkpoint", epoch=data.get("epoch"),
                      model_type=data.get("model_type"), name=data.get("name"))
        data, which = evaluated_weights(data) if data.get("model") is not None \
            else (None, "model")
        if which == "ema":
            source["kind"] = "thelper-checkpoint (EMA of the weights)"
    elif isinstance(data, Mapping) and not _all_tensors(data):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping) and _all_tensors(data[key]):
                source["kind"] = f"state_dict (under {key!r})"
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data or not _all_tensors(data):
        what = type(data).__name__
        if isinstance(data, Mapping):
            bad = next((k for k, v in data.items() if not isinstance(v, torch.Tensor)), None)
            what = "an empty mapping" if not data else \
                f"a mapping whose {bad!r} is a {type(data[bad]).__name__}"
        raise ConfigError(f"{INIT}.path: {str(file)!r} holds {what}, not a state dict (names "
                          "to tensors); save it with torch.save(model.state_dict(), path)")
    return {str(k): v for k, v in data.items()}, source


def _all_tensors(data: Mapping[Any, Any]) -> bool:
    return all(isinstance(v, torch.Tensor) for v in data.values())


def _renamer(key_map: Mapping[str, str]) -> Any:
    rules = sorted(key_map.items(), key=lambda kv: len(kv[0]), reverse=True)

    def rename(key: str) -> str:
        for src, dst in rules:
            if key.startswith(src):
                return dst + key[len(src):]
        return key

    return rename


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(int(s)) for s in t.shape) + ")"


def load_init(model: torch.nn.Module, spec: Any,
              logger: logging.Logger | None = None) -> dict[str, Any]:
    """Load ``model.init_from`` into ``model`` (in place, on its device).

    Each checkpoint key is renamed by ``key_map`` (the longest matching prefix; keys that no
    prefix starts are kept), then dropped when an ``exclude`` pattern matches its old or new
    name. A model key that an ``exclude`` pattern matches keeps its initialisation and is not
    missing.

    Args:
        model: The freshly built model.
        spec: ``model.init_from`` (``path``, ``key_map``, ``exclude``, ``strict``).
        logger: Where to log the summary (default: the ``thelper`` logger).

    Returns:
        The report written to ``logs/init_from.json``: ``source`` (file, kind, epoch),
        ``key_map``, ``strict``, ``loaded`` (model keys), ``renamed`` (``{checkpoint key:
        model key}`` of the loaded keys that changed name), ``missing`` (model keys not in
        the checkpoint), ``unexpected`` (checkpoint keys that fit no model key),
        ``excluded`` (``{"checkpoint": [...], "model": [...]}``) and ``counts``.

    Raises:
        ConfigError: Nothing to load at the path; no checkpoint key matches the model;
            two keys renamed to one; shapes that differ (names both keys and shapes);
            with ``strict``, missing or unexpected keys.
        CheckpointError: An unreadable, corrupted or pickle-holding file.
    """
    state, source = read_state_dict(_field(spec, "path"))
    key_map = dict(_field(spec, "key_map") or {})
    exclude = list(_field(spec, "exclude") or [])
    strict = bool(_field(spec, "strict"))
    rename = _renamer(key_map)
    own = model.state_dict()

    def dropped(*names: str) -> bool:
        return any(matches(n, p) for n in names for p in exclude)

    loaded: dict[str, torch.Tensor] = {}
    renamed: dict[str, str] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    excluded_ckpt: list[str] = []
    mismatched: list[str] = []
    for key, tensor in state.items():
        new = rename(key)
        if dropped(key, new):
            excluded_ckpt.append(key)
            continue
        if new in origin:
            raise ConfigError(f"{INIT}.key_map: checkpoint keys {origin[new]!r} and {key!r} "
                              f"are both renamed to {new!r}; make the prefixes distinct")
        origin[new] = key
        if new not in own:
            unexpected.append(key)
        elif own[new].shape != tensor.shape:
            arrow = f"{key} -> {new}" if new != key else key
            mismatched.append(f"{arrow}: checkpoint {_shape(tensor)} vs model "
                              f"{_shape(own[new])}")
        else:
            loaded[new] = tensor
            if new != key:
                renamed[key] = new
    where = f"{INIT} ({source['file']})"
    if mismatched:
        raise ConfigError(
            f"{where}: {len(mismatched)} tensor(s) do not fit the model's shapes: "
            f"{'; '.join(mismatched[:_SHOWN])}"
            + (f"; ... ({len(mismatched)} in all)" if len(mismatched) > _SHOWN else "")
            + f"; add them to {INIT}.exclude to keep their fresh initialisation (e.g. a new "
              "head for another number of classes), or fix key_map")
    excluded_model = [k for k in own if dropped(k)]
    missing = [k for k in own if k not in loaded and not dropped(k)]
    if not loaded:
        raise ConfigError(
            f"{where}: none of its {len(state)} tensors fits a model key (checkpoint keys "
            f"look like {_listing(list(state), 3)}; the model's like {_listing(list(own), 3)}); "
            f"rename them with {INIT}.key_map, e.g. {{'': 'backbone.'}} or {{'module.': ''}}")
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"{len(missing)} model key(s) are not in the checkpoint "
                         f"(missing: {_listing(missing)})")
        if unexpected:
            shown = [k if rename(k) == k else f"{k} -> {rename(k)}" for k in unexpected]
            parts.append(f"{len(unexpected)} checkpoint key(s) fit no model key "
                         f"(unexpected: {_listing(shown)})")
        raise ConfigError(f"{where}: {' and '.join(parts)}; add them to {INIT}.exclude, "
                          f"rename them with {INIT}.key_map, or set {INIT}.strict: false")
    model.load_state_dict(loaded, strict=False)
    report = {
        "source": source, "key_map": key_map, "exclude": exclude, "strict": strict,
        "loaded": list(loaded), "renamed": renamed, "missing": missing,
        "unexpected": unexpected,
        "excluded": {"checkpoint": excluded_ckpt, "model": excluded_model},
        "counts": {"checkpoint": len(state), "model": len(own), "loaded": len(loaded),
                   "missing": len(missing), "unexpected": len(unexpected),
                   "excluded": len(excluded_ckpt)},
    }
    log = logger or logging.getLogger("thelper")
    log.info("init_from %s", _init_summary(report))
    if missing:
        log.warning("init_from: %d model key(s) not in the checkpoint keep their "
                    "initialisation: %s", len(missing), _listing(missing))
    if unexpected:
        log.warning("init_from: %d checkpoint key(s) fit no model key and are ignored: %s",
                    len(unexpected), _listing(unexpected))
    return report


def _init_summary(report: Mapping[str, Any]) -> str:
    src, c = report["source"], report["counts"]
    kind = src["kind"] + (f", epoch {src['epoch']}" if src.get("epoch") is not None else "")
    return (f"{src['file']} ({kind}): {c['loaded']} of {c['model']} model tensors loaded, "
            f"{c['missing']} missing, {c['unexpected']} unexpected, {c['excluded']} excluded")
