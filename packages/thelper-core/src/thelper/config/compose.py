"""Composing configs: bases, several files, groups, interpolation; and the run identity.

A session config may be assembled from several files (see ``docs/config/composition.md``):

- **bases**: a file's ``bases: [path, ...]`` names files (relative to it) merged before its
  own keys, in order; bases may have bases. Each file is merged once, at its first
  appearance (a base shared by two files is not applied twice); a cycle is an error.
- **several files**: ``thelper run a.yaml b.yaml`` merges ``b.yaml`` (with its bases) over
  ``a.yaml`` (with its bases).
- **groups**: ``--group model=cnn`` merges ``model/cnn.yaml`` of the first config root that
  has it, after the files.
- then ``THELPER_CONFIG__*`` environment overrides, then ``--set``, and finally
  ``${path.to.value}`` / ``${env:VAR,default}`` interpolations.

Merge rules: mappings merge key by key (deeply); lists and plain values replace. A
``{type, params}`` slot (its paths come from the static models of
:mod:`thelper.config.models`; elsewhere, a mapping of only ``type`` and ``params``) merges
deeply when the later file keeps its ``type`` (or omits it) and is replaced whole when the
``type`` changes; the trainer section keeps its other keys and only drops the inherited
``params``. ``_delete_: [key, ...]`` in a mapping removes inherited keys before the
mapping's own keys are merged (``_delete_: true`` replaces the inherited mapping).

Security: files named on the command line are read as given; bases and groups only from
regular files whose real path lies inside a config root (the directories of the files named
on the command line, plus ``--config-root`` directories). Every file goes through the
bounded reader of :mod:`thelper.config.source`; at most :data:`MAX_FILES` files and
:data:`MAX_BASE_DEPTH` levels of bases are read.

Every value keeps the file, line and column it was read at (``ConfigDocument.positions``),
whichever base or group it came from, so validation errors point there.
"""

from __future__ import annotations

import copy
import difflib
import functools
import hashlib
import json
import os
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thelper.config.source import (
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    ConfigDocument,
    Loc,
    Position,
    _override_value,
    apply_overrides,
    has_references,
    read_document,
)
from thelper.exceptions import ConfigError, ConfigIssue

__all__ = ["compose", "config_hash", "config_roots", "interpolate", "list_groups",
           "partial_schema", "resolved_yaml", "sources_yaml", "value_sources", "MAX_FILES", "MAX_BASE_DEPTH", "HASH_EXCLUDED"]

#: Most files one composition reads (bases, files named and groups together).
MAX_FILES = 64
#: Deepest chain of bases (a base of a base of ...).
MAX_BASE_DEPTH = 16
#: Longest chain of references (``${a}`` whose value is ``${b}`` whose value is ...).
MAX_REF_DEPTH = 32
#: Top-level keys left out of :func:`config_hash`: they name or describe a run, or say where
#: it is recorded, without changing what it computes.
HASH_EXCLUDED = ("name", "description", "labels", "trackers")
#: File name endings of config files (bases, groups).
CONFIG_SUFFIXES = (".yaml", ".yml", ".json")

BASES_KEY = "bases"
DELETE_KEY = "_delete_"
_NONE: Any = object()
_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.+-]*"
_GROUP = re.compile(rf"{_NAME}(/{_NAME})*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: ``\${`` (an escaped, literal ``${``) or a ``${...}`` reference.
_REF = re.compile(r"\\\$\{|\$\{([^{}]*)\}")


def _path(loc: Loc) -> str:
    return ".".join(map(str, loc)) or "<root>"


def _error(pos: Position | None, loc: Loc, message: str, label: str | None = None
           ) -> ConfigError:
    """A one-issue error located at ``pos``; without a position (a file named by the
    command line, e.g. ``label`` ``--group X``), a plain error naming ``label``."""
    if pos is None:
        return ConfigError(f"{label}: {message}" if label else message)
    issue = ConfigIssue(".".join(map(str, loc)), message, *pos)
    return ConfigError(issue.format(), [issue])


# ------------------------------------------------------------------------------ roots
@dataclass(frozen=True)
class _Root:
    real: str
    shown: str


def config_roots(files: Sequence[str | Path], extra: Sequence[str | Path] = ()
                 ) -> list[tuple[str, str]]:
    """The directories bases and groups may be read from: ``(real path, as shown)``.

    The directories of ``files`` (in order), then ``extra`` (``--config-root``), without
    duplicates.

    Raises:
        ConfigError: An ``extra`` directory does not exist or is not a directory.
    """
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for f in files:
        shown = os.path.dirname(str(f)) or "."
        real = os.path.realpath(shown)
        if real not in seen:
            seen.add(real)
            out.append((real, shown))
    for d in extra:
        shown = str(d)
        if not os.path.isdir(shown):
            raise ConfigError(f"--config-root {shown!r} is not a directory; give a "
                              "directory holding base or group files")
        real = os.path.realpath(shown)
        if real not in seen:
            seen.add(real)
            out.append((real, shown))
    return out


def _inside(real: str, roots: Sequence[_Root]) -> bool:
    return any(real == r.real or real.startswith(r.real.rstrip(os.sep) + os.sep)
               for r in roots)


# ------------------------------------------------------------------------------- slots
@functools.cache
def _slot_patterns() -> dict[int, list[tuple[tuple[str, ...], str, Any]]]:
    """``{length: [(pattern, kind, default type)]}`` of the ``{type, params}`` slots of the
    static session model: ``kind`` is ``"slot"`` (a component: replaced whole when its type
    changes) or ``"section"`` (a section holding a component's ``type``/``params`` beside
    settings of its own, the trainer: only ``params`` is dropped). ``*`` matches any key."""
    import types

    from pydantic import BaseModel

    from thelper.config.models import ComponentSpec, SessionConfig

    out: dict[int, list[tuple[tuple[str, ...], str, Any]]] = {}

    def walk(tp: Any, prefix: tuple[str, ...], depth: int) -> None:
        while typing.get_origin(tp) is typing.Annotated:
            tp = typing.get_args(tp)[0]
        origin = typing.get_origin(tp)
        if depth > 8:
            return
        if origin in (typing.Union, types.UnionType):
            for arg in typing.get_args(tp):
                if arg is not type(None):
                    walk(arg, prefix, depth)
        elif origin is dict and len(typing.get_args(tp)) == 2:
            walk(typing.get_args(tp)[1], (*prefix, "*"), depth + 1)
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            if issubclass(tp, ComponentSpec):
                out.setdefault(len(prefix), []).append((prefix, "slot", None))
            elif prefix and "type" in fields and "params" in fields:
                out.setdefault(len(prefix), []).append(
                    (prefix, "section", fields["type"].default))
            for name, info in fields.items():
                walk(info.annotation, (*prefix, name), depth + 1)

    walk(SessionConfig, (), 0)
    return out


def _slot_kind(loc: Loc) -> tuple[str, Any] | None:
    for pattern, kind, default in _slot_patterns().get(len(loc), ()):
        if all(p == "*" or p == x for p, x in zip(pattern, loc, strict=True)):
            return kind, default
    return None


_BARE_SLOT = frozenset({"type", "params"})


def _slot_rule(loc: Loc, old: dict[str, Any], new: dict[str, Any]) -> str:
    """How ``new`` (a later file's mapping) combines with ``old`` at ``loc``: ``merge``,
    ``replace`` (a slot whose type changed) or ``component`` (the trainer's type changed:
    its ``params`` are dropped, its other keys merged)."""
    new_type = new.get("type", _NONE)
    if new_type is _NONE:
        return "merge"
    found = _slot_kind(loc)
    if found is None:
        if not (isinstance(old.get("type"), str) and isinstance(new_type, str)
                and old.keys() <= _BARE_SLOT and new.keys() - {DELETE_KEY} <= _BARE_SLOT):
            return "merge"
        found = ("slot", None)
    kind, default = found
    old_type = old.get("type", default)
    if old_type is None or new_type == old_type:  # an earlier file gave only params
        return "merge"
    return "replace" if kind == "slot" else "component"


# ------------------------------------------------------------------------------ layers
@dataclass
class _Layer:
    """One file's own keys (without ``bases``), in merge order."""

    name: str
    data: dict[str, Any]
    positions: dict[Loc, Position]
    issues: list[ConfigIssue]
    has_delete: bool


@dataclass
class _Reader:
    """Reads the files of one composition in merge order (bases first, each once)."""

    roots: list[_Root]
    layers: list[_Layer] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    values: int = 0
    read: int = 0

    def add(self, path: str, name: str, chain: tuple[tuple[str, str], ...],
            at: tuple[Position | None, Loc, str | None] | None) -> None:
        """Read ``path`` (shown as ``name``), its bases first, and append its layer.

        Args:
            path: The file to open.
            name: How positions and messages name it.
            chain: ``(real path, name)`` of the files whose bases led here.
            at: ``(position, path, label)`` of what named it, for messages (``None``: the
                command line).

        Raises:
            ConfigError: A cycle, too many files or too deep bases; or what
                :func:`~thelper.config.source.read_document` raises.
        """
        real = os.path.realpath(path)
        pos, loc, label = at if at is not None else (None, (), None)
        if any(real == r for r, _ in chain):
            names = [n for _, n in chain[[r for r, _ in chain].index(real):]] + [name]
            raise _error(pos, loc, "bases form a cycle: " + " -> ".join(names)
                         + "; remove one of these bases", label)
        if real in self.done:
            return
        if self.read >= MAX_FILES:
            raise _error(pos, loc, f"the config reads more than {MAX_FILES} files (bases, "
                                   "files and groups together); merge some of them", label)
        if len(chain) >= MAX_BASE_DEPTH:
            raise _error(pos, loc, f"bases nest deeper than {MAX_BASE_DEPTH} levels ("
                         + " -> ".join(n for _, n in chain) + f" -> {name}); flatten them",
                         label)
        try:
            data, positions, issues, text = read_document(path, name)
        except ConfigError as exc:
            if exc.issues or at is None:
                raise
            raise _error(pos, loc, str(exc), label) from None
        self.read += 1
        self.values += len(positions)
        if self.values > MAX_NODES:
            raise _error(pos, loc, f"the config files hold more than {MAX_NODES:,} values "
                                   "together; a config is much smaller", label)
        bases = data.pop(BASES_KEY, _NONE)
        if bases is not _NONE:
            base_list = [bases] if isinstance(bases, str) else bases
            if not isinstance(base_list, list) or not all(isinstance(b, str) for b in base_list):
                raise _error(positions.get((BASES_KEY,)), (BASES_KEY,),
                             "'bases' is a list of config files relative to this one, e.g. "
                             "bases: [../_bases/digits.yaml]")
            here = os.path.dirname(path)
            for i, base in enumerate(base_list):
                where = positions.get((BASES_KEY, i)) or positions.get((BASES_KEY,))
                target, shown = self._base(base, here, name, where, i)
                self.add(target, shown, (*chain, (real, name)), (where, (BASES_KEY, i), None))
            positions = {k: v for k, v in positions.items() if k[:1] != (BASES_KEY,)}
        has_delete = DELETE_KEY in text
        self.layers.append(_Layer(name, data, positions, issues, has_delete))
        self.texts[name] = text
        self.done.add(real)

    def _base(self, base: str, here: str, name: str, pos: Position | None, i: int
              ) -> tuple[str, str]:
        """The file base ``base`` of ``name`` (in directory ``here``) names: ``(path to
        open, name to show)``.

        Raises:
            ConfigError: The path is empty, absolute or outside every config root.
        """
        loc = (BASES_KEY, i)
        if not base.strip():
            raise _error(pos, loc, "empty base path; name a config file relative to this one")
        if os.path.isabs(base) or base.startswith("~"):
            raise _error(pos, loc, f"base {base!r} is an absolute path; bases are relative "
                                   "to the file naming them (e.g. ../_bases/digits.yaml)")
        joined = os.path.join(here, base)
        real = os.path.realpath(joined)
        if not _inside(real, self.roots):
            roots = ", ".join(repr(r.shown) for r in self.roots)
            raise _error(pos, loc, f"base {base!r} resolves to {real!r}, outside the config "
                                   f"roots ({roots}); keep bases under the directory of a "
                                   "config named on the command line, or add --config-root "
                                   "DIR")
        shown = os.path.normpath(os.path.join(os.path.dirname(name), base))
        if os.path.realpath(shown) != real:  # symbolic links: name the file read
            shown = real
        return real, shown


def _delete_keys(directive: Any, pos: Position | None, loc: Loc) -> list[str] | bool:
    if directive is True:
        return True
    keys = [directive] if isinstance(directive, str) else directive
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _error(pos, (*loc, DELETE_KEY), f"'{DELETE_KEY}' takes a list of inherited "
                                              "keys to remove (or true to replace the "
                                              f"inherited mapping), got {keys!r}")
    return keys


class _Merger:
    """Folds layers into one document, keeping each value's position."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}
        self.positions: dict[Loc, Position] = {}
        self.issues: list[ConfigIssue] = []
        self.pruned: set[Loc] = set()
        self.layer: _Layer | None = None

    def add(self, layer: _Layer) -> None:
        self.layer = layer
        self.pruned = set()
        self._merge(self.data, layer.data, ())
        positions = self.positions
        if self.pruned:
            pruned = self.pruned
            positions = {k: v for k, v in positions.items()
                         if not any(k[:i] in pruned for i in range(len(k) + 1))}
        if layer.has_delete:  # the directives' own positions served their messages
            positions.update((k, v) for k, v in layer.positions.items() if DELETE_KEY not in k)
        else:
            positions.update(layer.positions)
        self.positions = positions
        self.issues.extend(layer.issues)

    def _pos(self, loc: Loc) -> Position | None:
        assert self.layer is not None
        for i in range(len(loc), -1, -1):
            pos = self.layer.positions.get(loc[:i])
            if pos is not None:
                return pos
        return None

    def _no_delete(self, value: Any, loc: Loc) -> None:
        """Refuse ``_delete_`` in a value that replaces (or adds) rather than merges."""
        if isinstance(value, dict):
            if DELETE_KEY in value:
                raise _error(self._pos((*loc, DELETE_KEY)), (*loc, DELETE_KEY),
                             "nothing is inherited here to delete (no earlier file sets "
                             f"{_path(loc)}, or its type changed); remove '{DELETE_KEY}'")
            for k, v in value.items():
                self._no_delete(v, (*loc, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._no_delete(v, (*loc, i))

    def _merge(self, dst: dict[str, Any], src: dict[str, Any], loc: Loc) -> None:
        assert self.layer is not None
        check = self.layer.has_delete
        if check and DELETE_KEY in src:
            where = (*loc, DELETE_KEY)
            keys = _delete_keys(src[DELETE_KEY], self._pos(where), loc)
            if keys is True:
                dst.clear()
                self.pruned.add(loc)
            else:
                inherited = [str(k) for k in dst]
                for j, key in enumerate(keys):
                    if key not in dst:
                        near = difflib.get_close_matches(key, inherited, 1)
                        hint = f"; did you mean {near[0]!r}?" if near else \
                            f"; inherited keys: {', '.join(inherited) or 'none'}"
                        raise _error(self._pos((*where, j)), where,
                                     f"cannot delete {key!r}: no earlier file sets "
                                     f"{_path((*loc, key))}{hint}")
                    del dst[key]
                    self.pruned.add((*loc, key))
        for key, value in src.items():
            if key == DELETE_KEY and check:
                continue
            here = (*loc, key)
            old = dst.get(key, _NONE)
            if isinstance(old, dict) and isinstance(value, dict):
                rule = _slot_rule(here, old, value)
                if rule == "merge":
                    self._merge(old, value, here)
                    continue
                if rule == "component":
                    old.pop("params", None)
                    self.pruned.add((*here, "params"))
                    self._merge(old, value, here)
                    continue
            if check:
                self._no_delete(value, here)
            dst[key] = value
            if old is not _NONE:
                self.pruned.add(here)


# ------------------------------------------------------------------------ interpolation
class _Skip(Exception):
    """A value could not be resolved (its issue is recorded already, or belongs to the
    value it refers to)."""


class _Literal(str):
    """Text whose ``${`` came from an escaped ``\\${``: never resolved again."""

    __slots__ = ()


class _Resolver:
    """Resolves ``${...}`` references in place, recording one issue per failed value."""

    def __init__(self, doc: ConfigDocument, environ: Mapping[str, str], allow_env: bool
                 ) -> None:
        self.doc = doc
        self.environ = environ
        self.allow_env = allow_env
        self.active: list[tuple[Loc, str]] = []
        self.failed: set[Loc] = set()
        self.issues: list[ConfigIssue] = []
        self.literal = False
        self.expanded = 0

    def run(self) -> None:
        for loc in list(_pending(self.doc.data, ())):
            try:
                self._resolve(loc)
            except _Skip:
                pass
            except RecursionError:  # references through deeply nested copies
                self.active.clear()
                self._fail(loc, "references nest too deeply; write some of the values")
        if self.expanded and _depth(self.doc.data) > MAX_DEPTH:
            raise ConfigError(f"{self.doc.label}: interpolations nest the config deeper than "
                              f"{MAX_DEPTH} levels; copy smaller parts")
        if self.literal:
            self.doc.data = _plain(self.doc.data)
        if self.issues:
            order = {f: i for i, f in enumerate(self.doc.files)}
            self.issues.sort(key=lambda i: (i.source != "file", order.get(i.file, len(order)),
                                            i.line or 0, i.column or 0))
            n = len(self.issues)
            raise ConfigError(f"{self.doc.label}: {n} problem{'s' if n != 1 else ''} with "
                              "interpolations:\n" + "\n".join(i.format() for i in self.issues),
                              self.issues)

    def _fail(self, loc: Loc, message: str) -> _Skip:
        file, line, col, source = self.doc.locate(loc)
        self.issues.append(ConfigIssue(_path(loc) if loc else "", message, file, line, col,
                                       source))
        self.failed.add(loc)
        return _Skip()

    def _container(self, loc: Loc) -> tuple[Any, Any] | None:
        node: Any = self.doc.data
        for part in loc[:-1]:
            node = _child(node, part)
            if node is _NONE:
                return None
        return (node, loc[-1]) if _child(node, loc[-1]) is not _NONE else None

    def _resolve(self, loc: Loc) -> Any:
        """Resolve the text at ``loc`` (if it still holds references); returns its value."""
        found = self._container(loc)
        if found is None:
            return _NONE
        container, key = found
        value = container[key]
        if type(value) is not str or "${" not in value:
            return value
        if loc in self.failed:
            raise _Skip()
        if len(self.active) >= MAX_REF_DEPTH:
            raise self._fail(loc, f"references chain more than {MAX_REF_DEPTH} deep (" + " -> "
                             .join(r for _, r in self.active[:3]) + " -> ...); write a value")
        for i, (active, _) in enumerate(self.active):
            if active == loc:
                steps = self.active[i:]
                for step, _ in steps:
                    self.failed.add(step)
                text = ", ".join(f"{_path(s)} refers to {r}" for s, r in steps)
                raise self._fail(loc, f"interpolation cycle: {text}; write a value in one "
                                      "of them")
        self.active.append((loc, ""))
        try:
            new = self._interpolate(value, loc)
        except _Skip:
            self.failed.add(loc)
            raise
        finally:
            self.active.pop()
        container[key] = new
        return new

    def _interpolate(self, text: str, loc: Loc) -> Any:
        matches = list(_REF.finditer(text))
        rest = _REF.sub("", text)
        if "${" in rest:
            raise self._fail(loc, f"unclosed '${{' in {_clip(text)!r}: write ${{path.to.value}} "
                                  "or ${env:VAR,default}, or \\${ for a literal '${'")
        if len(matches) == 1 and matches[0].span() == (0, len(text)) and matches[0].group(1) \
                is not None:
            return self._reference(matches[0].group(1), loc, whole=True)
        parts: list[str] = []
        last = 0
        literal = False
        for m in matches:
            parts.append(text[last:m.start()])
            last = m.end()
            if m.group(1) is None:
                parts.append("${")
                literal = True
                continue
            parts.append(_format(self._reference(m.group(1), loc, whole=False),
                                 m.group(0), self, loc))
            if sum(map(len, parts)) > MAX_CONFIG_BYTES:
                raise self._fail(loc, f"interpolations make this text longer than "
                                      f"{MAX_CONFIG_BYTES // 2**20} MiB")
        parts.append(text[last:])
        out = "".join(parts)
        if literal:
            self.literal = True
            return _Literal(out)
        return out

    def _reference(self, body: str, loc: Loc, whole: bool) -> Any:
        ref = "${" + body + "}"
        self.active[-1] = (loc, ref)
        body = body.strip()
        scheme, colon, rest = body.partition(":")
        if colon and scheme.strip() == "env":
            return self._env(rest, ref, loc, whole)
        if colon:
            raise self._fail(loc, f"{ref}: unknown resolver {scheme.strip()!r}; write "
                                  "${path.to.value} or ${env:VAR,default}")
        parts = [p.strip() for p in body.split(".")]
        if not body or not all(parts):
            raise self._fail(loc, f"{ref}: expected a dotted path of the config, e.g. "
                                  "${trainer.epochs}")
        value = self._value_at(tuple(parts), ref, loc)
        if whole and isinstance(value, (dict, list)):
            size = _count(value, MAX_NODES - self.expanded + 1)
            self.expanded += size
            if self.expanded > MAX_NODES:
                raise self._fail(loc, f"interpolations copy more than {MAX_NODES:,} values; "
                                      "a config is much smaller")
            return copy.deepcopy(value)
        return value

    def _value_at(self, parts: tuple[str, ...], ref: str, loc: Loc) -> Any:
        node: Any = self.doc.data
        here: Loc = ()
        for part in parts:
            if type(node) is str and "${" in node:
                node = self._resolve(here)
            key: Any = part
            if isinstance(node, list) and part.lstrip("-").isdigit():
                key = int(part)
            child = _child(node, key)
            if child is _NONE:
                hint = ""
                if isinstance(node, dict):
                    near = difflib.get_close_matches(part, [str(k) for k in node], 1)
                    if near:
                        hint = f" (did you mean {_path((*here, near[0]))!r}?)"
                raise self._fail(loc, f"{ref} refers to {'.'.join(parts)}, which the config "
                                      f"does not set{hint}; references read the values "
                                      "written in the config files and overrides (defaults "
                                      "are not filled in yet)")
            node = child
            here = (*here, key)
        return self._resolve_tree(node, here)

    def _resolve_tree(self, node: Any, loc: Loc) -> Any:
        if type(node) is str:
            return self._resolve(loc) if "${" in node else node
        if isinstance(node, dict):
            for k in list(node):
                self._resolve_tree(node[k], (*loc, k))
        elif isinstance(node, list):
            for i in range(len(node)):
                self._resolve_tree(node[i], (*loc, i))
        return node

    def _env(self, rest: str, ref: str, loc: Loc, whole: bool) -> Any:
        name, comma, default = rest.partition(",")
        name = name.strip()
        if not _ENV_NAME.fullmatch(name):
            raise self._fail(loc, f"{ref}: expected ${{env:NAME}} or ${{env:NAME,default}} "
                                  "with a variable name")
        if not name.startswith("THELPER_") and not self.allow_env:
            raise self._fail(loc, f"{ref} reads ${name}: a config only reads THELPER_* "
                                  "variables (it could send others, e.g. tokens, anywhere); "
                                  "rename the variable THELPER_..., or pass --allow-env")
        raw = self.environ.get(name)
        if raw is None:
            if not comma:
                raise self._fail(loc, f"{ref}: ${name} is not set; set it or give a default, "
                                      f"${{env:{name},DEFAULT}}")
            raw = default.strip()
        if not whole:
            return raw
        try:
            return _override_value(raw, ref, loc, empty="")
        except ConfigError as exc:
            raise self._fail(loc, str(exc)) from None


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key, _NONE) if not isinstance(key, int) else node.get(str(key), _NONE)
    if isinstance(node, list) and isinstance(key, int) and -len(node) <= key < len(node):
        return node[key]
    return _NONE


def _format(value: Any, ref: str, resolver: _Resolver, loc: Loc) -> str:
    if isinstance(value, (dict, list)):
        what = "a mapping" if isinstance(value, dict) else "a list"
        raise resolver._fail(loc, f"{ref} is {what}: only a value that is the reference "
                                  "alone (the whole text) can copy it; refer to one of its "
                                  "values")
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _count(node: Any, limit: int) -> int:
    n, stack = 0, [node]
    while stack and n < limit:
        item = stack.pop()
        n += 1
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return n


def _depth(node: Any) -> int:
    deepest, stack = 0, [(node, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth + 1)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict)
                                                  else item))
    return deepest


def _pending(node: Any, loc: Loc) -> Iterator[Loc]:
    """Paths of the texts of ``node`` holding ``${``."""
    if isinstance(node, dict):
        for k, v in node.items():
            if type(v) is str:
                if "${" in v:
                    yield (*loc, k)
            elif isinstance(v, (dict, list)):
                yield from _pending(v, (*loc, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if type(v) is str:
                if "${" in v:
                    yield (*loc, i)
            elif isinstance(v, (dict, list)):
                yield from _pending(v, (*loc, i))


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, _Literal):
        return str.__str__(node)
    return node


def interpolate(doc: ConfigDocument, environ: Mapping[str, str] | None = None,
                allow_env: bool = False) -> ConfigDocument:
    """Resolve the ``${...}`` references of ``doc`` in place and return it.

    ``${a.b.0}`` is the value at that path of the merged document (bases, files, groups and
    overrides), itself resolved first; alone in a text it keeps its type (a number, a list,
    a mapping), inside text it is written out (``true``, ``null``, ``3``). ``${env:VAR}``
    and ``${env:VAR,default}`` read an environment variable, as YAML when alone (like
    ``--set`` values), only ``THELPER_*`` ones unless ``allow_env``. ``\\${`` is a literal
    ``${``.

    Raises:
        ConfigError: With one issue per failed value, located where that value was set:
            a missing target, a cycle, an unknown resolver, a refused or unset variable, a
            mapping or list inserted into text, or a runaway expansion.
    """
    _Resolver(doc, os.environ if environ is None else environ, allow_env).run()
    return doc


# ------------------------------------------------------------------------------ compose
def _group_file(spec: str, roots: Sequence[_Root]) -> tuple[str, str]:
    """The file ``--group NAME=CHOICE`` selects: ``(path, name to show)``.

    Raises:
        ConfigError: ``spec`` is malformed, or no config root has ``NAME/CHOICE.yaml``.
    """
    name, sep, choice = spec.partition("=")
    name, choice = name.strip().strip("/"), choice.strip()
    if not sep or not _GROUP.fullmatch(name) or not _GROUP.fullmatch(choice):
        raise ConfigError(f"--group {spec!r}: expected NAME=CHOICE, e.g. --group model=cnn "
                          "(NAME a folder of a config root, CHOICE a file in it without "
                          "its .yaml)")
    for root in roots:
        for suffix in CONFIG_SUFFIXES:
            candidate = os.path.join(root.real, name, choice + suffix)
            if os.path.isfile(candidate):
                real = os.path.realpath(candidate)
                if not _inside(real, roots):
                    raise ConfigError(f"--group {spec}: {candidate!r} resolves to {real!r}, "
                                      "outside the config roots; replace the link by the "
                                      "file")
                return real, os.path.normpath(os.path.join(root.shown, name, choice + suffix))
    groups = list_groups([(r.real, r.shown) for r in roots])
    shown = ", ".join(repr(r.shown) for r in roots)
    if name in groups:
        hint = f"choices of {name!r}: {', '.join(groups[name]['choices'])}"
    elif groups:
        hint = f"groups: {', '.join(sorted(groups))}"
    else:
        hint = "no groups there (a group is a folder of config files)"
    raise ConfigError(f"--group {spec}: no {name}/{choice}.yaml in the config roots "
                      f"({shown}); {hint} (see 'thelper config groups')")


def list_groups(roots: Sequence[tuple[str, str]], max_depth: int = 3
                ) -> dict[str, dict[str, Any]]:
    """The groups of the config roots: ``{name: {"dir": shown path, "choices": [...]}}``.

    A group is a folder (up to ``max_depth`` levels below a root) holding config files;
    its choices are their names without suffix. Folders whose name starts with ``_`` or
    ``.`` (e.g. ``_bases/``) are not groups, nor are folders reached through links leading
    out of the root. The first root holding a group wins for each choice.
    """
    out: dict[str, dict[str, Any]] = {}
    for real, shown in roots:
        _walk_groups(real, shown, "", max_depth, out, [1000])
    return out


def _walk_groups(real: str, shown: str, rel: str, depth_left: int,
                 out: dict[str, dict[str, Any]], budget: list[int]) -> None:
    budget[0] -= 1
    try:
        entries = sorted(os.scandir(os.path.join(real, rel)), key=lambda e: e.name)
    except OSError:
        return
    choices = [os.path.splitext(e.name)[0] for e in entries
               if e.name.endswith(CONFIG_SUFFIXES) and not e.name.startswith(".")
               and e.is_file()]
    if rel and choices:
        group = out.setdefault(rel.replace(os.sep, "/"), {
            "dir": os.path.normpath(os.path.join(shown, rel)), "choices": []})
        group["choices"] = sorted(set(group["choices"]) | set(choices))
    if depth_left <= 0:
        return
    for e in entries:
        if e.name.startswith(("_", ".")) or budget[0] <= 0 or not e.is_dir():
            continue
        sub = os.path.join(rel, e.name) if rel else e.name
        if _inside(os.path.realpath(os.path.join(real, sub)), [_Root(real, shown)]):
            _walk_groups(real, shown, sub, depth_left - 1, out, budget)


def compose(paths: Sequence[str | Path], sets: Sequence[str] = (),
            environ: Mapping[str, str] | None = None, *, groups: Sequence[str] = (),
            roots: Sequence[str | Path] = (), allow_env: bool = False) -> ConfigDocument:
    """Read, merge and resolve a config: the files (with their bases), the groups,
    environment overrides, ``--set`` overrides, then interpolations.

    Args:
        paths: The files named on the command line, merged in order.
        sets: ``--set`` overrides.
        environ: Environment (default: ``os.environ``).
        groups: ``NAME=CHOICE`` selections, merged after the files.
        roots: ``--config-root`` directories, beside the directories of ``paths``.
        allow_env: Let ``${env:VAR}`` read variables other than ``THELPER_*``.

    Returns:
        The document; every position names the file that set the value.

    Raises:
        ConfigError: A file cannot be read or is refused; a base is absolute, outside the
            config roots or part of a cycle; too many files or too deep bases; a malformed
            ``bases``/``_delete_``/group; a failed override or interpolation.
    """
    if not paths:
        raise ConfigError("no config file given; name one or more YAML/JSON files")
    env = os.environ if environ is None else environ
    root_list = [_Root(r, s) for r, s in config_roots(paths, roots)]
    reader = _Reader(root_list)
    for p in paths:
        reader.add(str(p), str(p), (), None)
    for spec in groups:
        target, shown = _group_file(spec, root_list)
        reader.add(target, shown, (), (None, (), f"--group {spec}"))
    layers = reader.layers
    if len(layers) == 1 and not layers[0].has_delete:
        layer = layers[0]
        data, positions, issues = layer.data, layer.positions, layer.issues
    else:
        merger = _Merger()
        for layer in layers:
            merger.add(layer)
        data, positions, issues = merger.data, merger.positions, merger.issues
    recipe = {"files": [str(p) for p in paths], "groups": list(groups), "sets": list(sets),
              "config_roots": [str(r) for r in roots], "allow_env": bool(allow_env)}
    doc = ConfigDocument(data, str(paths[0]), positions, issues=issues,
                         files=[layer.name for layer in layers], texts=reader.texts,
                         recipe=recipe)
    doc = apply_overrides(doc, tuple(sets), None if environ is None else dict(environ))
    if has_references(doc.data):  # the files' values, the overrides' and the --set ones
        interpolate(doc, env, allow_env)
    return doc


# ----------------------------------------------------------------------- run identity
def config_hash(config: Mapping[str, Any]) -> str:
    """The run identity: SHA-256 (hex) of the canonical resolved config.

    ``config`` is the validated dump (``config.latest.yaml``, ``run.json``'s ``config``:
    defaults filled, bases merged, interpolations resolved, seeds included). Canonical:
    JSON with sorted keys and no spaces, without :data:`HASH_EXCLUDED` (``name``,
    ``description``, ``trackers``). Two runs with the same hash compute the same thing.

    Example:
        >>> config_hash({"name": "a", "trainer": {"epochs": 3}}) == \\
        ...     config_hash({"trainer": {"epochs": 3}, "name": "b"})
        True
    """
    data = {k: v for k, v in config.items() if k not in HASH_EXCLUDED}
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ------------------------------------------------------------------------------ schema
_DELETE_SCHEMA = {
    "description": "Keys inherited from a base to remove before this mapping merges (or "
                   "true: replace the inherited mapping).",
    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"const": True}],
}
_BASES_SCHEMA = {
    "description": "Config files merged before this one, in order (paths relative to this "
                   "file, inside the config roots).",
    "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}],
}
_NAMED = frozenset({"properties", "$defs", "patternProperties"})
_SUBSCHEMA = frozenset({"items", "additionalProperties", "not", "if", "then", "else",
                        "contains", "propertyNames"})
_SUBSCHEMAS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})


def partial_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The variant of a session schema for partial files (bases, groups, files with
    ``bases``): no key is required, ``bases`` is allowed at the top and ``_delete_`` in
    every section; a ``{type, params}`` slot may omit ``type`` (it merges into the
    inherited one), so its alternatives are ``anyOf`` rather than ``oneOf``. Completeness
    is left to ``thelper config validate`` on the composed config."""

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(x) for x in node]
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("required", "minProperties", "discriminator"):
                continue
            if key in _NAMED and isinstance(value, dict):
                out[key] = {k: walk(v) for k, v in value.items()}
            elif key in _SUBSCHEMA and isinstance(value, dict):
                out[key] = walk(value)
            elif key in _SUBSCHEMAS and isinstance(value, list):
                out["anyOf" if key == "oneOf" else key] = [walk(v) for v in value]
            else:
                out[key] = value
        if isinstance(out.get("properties"), dict):
            out["properties"] = {**out["properties"], DELETE_KEY: _DELETE_SCHEMA}
        return out

    out = walk(dict(schema))
    out["properties"] = {BASES_KEY: _BASES_SCHEMA, **out.get("properties", {})}
    out["$id"] = f"{schema.get('$id', 'urn:thelper:session-config')}:partial"
    out["title"] = f"{schema.get('title', 'thelper session config')} (partial file)"
    return out


# ------------------------------------------------------------------------------ output
def _scalar_text(value: Any) -> str:
    import yaml

    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True,
                          width=2**31 - 1)
    if text.endswith("\n...\n"):
        text = text[:-5]
    text = text.rstrip("\n")
    if "\n" in text:  # multi-line text: a JSON string is a valid YAML flow scalar
        text = json.dumps(value, ensure_ascii=False)
    return text


def resolved_yaml(data: Mapping[str, Any], source: Callable[[Loc], str] | None = None
                  ) -> str:
    """``data`` as YAML (keys in order); with ``source``, each value's line ends with
    ``# SOURCE`` (``source(path)``), and the text still loads back to ``data``."""
    import yaml

    if source is None:
        return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
    lines: list[str] = []

    def emit(node: Any, loc: Loc, indent: int) -> None:
        pad = "  " * indent
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            here = (*loc, key)
            head = f"{pad}{_scalar_text(key)}:" if isinstance(node, dict) else f"{pad}-"
            if isinstance(value, (dict, list)) and value:
                lines.append(f"{head}  # {source(here)}")
                emit(value, here, indent + 1)
            else:
                lines.append(f"{head} {_scalar_text(value)}  # {source(here)}")

    emit(dict(data), (), 0)
    return "\n".join(lines) + "\n"


def value_sources(doc: ConfigDocument, registry: Any) -> Callable[[Loc], str]:
    """For :func:`resolved_yaml`: where the value at a path of the validated dump came from,
    ``FILE:LINE`` (the file that set it, whichever base or group), ``--set``, ``env``, or
    ``default`` when no file or override gave it (filled in from the models)."""
    from thelper.config.compat import normalize

    norm = normalize(doc.data, registry)

    def source(loc: Loc) -> str:
        original = norm.original(tuple(loc))
        node: Any = doc.data
        for part in original:
            node = _child(node, part)
            if node is _NONE:
                return "default"
        file, line, _, where = doc.locate(original)
        if where != "file":
            return where
        return f"{file}:{line}" if line is not None else (file or "default")

    return source


def sources_yaml(doc: ConfigDocument) -> str | None:
    """The text of ``config.sources.yaml``: how ``doc`` was composed and every file as
    written, in merge order; ``None`` for a document read from no file."""
    import yaml

    if not doc.texts:
        return None

    class _Dumper(yaml.SafeDumper):
        pass

    def text_block(dumper: yaml.SafeDumper, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, text_block)
    record = {
        "recipe": doc.recipe,
        "files": [{"path": name, "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                   "text": text} for name, text in doc.texts.items()],
    }
    head = ("# The config files of this session as written, in merge order (bases first),\n"
            "# and how they were combined. config.latest.yaml is the resolved config.\n")
    return head + yaml.dump(record, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                            width=100)
