"""Reading config documents with positions, and merging overrides.

A config is read from YAML or JSON (JSON is parsed by the YAML loader, so both keep line and
column numbers), then overridden by ``THELPER_CONFIG__A__B=value`` environment variables and
finally by ``--set a.b.c=value`` arguments. Every value remembers where it came from so that
validation errors point at ``file:line:col`` or at the override.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thelper.exceptions import ConfigError, ConfigIssue

__all__ = ["ConfigDocument", "load_config", "parse_override", "ENV_PREFIX"]

ENV_PREFIX = "THELPER_CONFIG__"
Loc = tuple[str | int, ...]


@dataclass
class ConfigDocument:
    """A config as plain data plus where each value came from.

    Attributes:
        data: The merged document (dicts, lists, scalars).
        file: Path of the file it was read from (``None`` for in-memory documents).
        positions: ``{path: (line, column)}`` (1-based) for values read from the file.
        overrides: ``{path: source}`` for values set by ``--set`` or the environment.
        issues: Problems found while reading (duplicate keys), reported with the others.
    """

    data: dict[str, Any]
    file: str | None = None
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)
    overrides: dict[Loc, str] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)

    def locate(self, loc: Loc) -> tuple[str | None, int | None, int | None, str]:
        """Where the value at ``loc`` (or its closest ancestor) came from.

        Returns:
            ``(file, line, column, source)`` with source ``"file"``, ``"--set"`` or ``"env"``.
        """
        for i in range(len(loc), -1, -1):
            prefix = tuple(loc[:i])
            if prefix in self.overrides:
                return None, None, None, self.overrides[prefix]
            if prefix in self.positions:
                line, col = self.positions[prefix]
                return self.file, line, col, "file"
        return self.file, None, None, "file"

    def copy(self) -> ConfigDocument:
        return ConfigDocument(copy.deepcopy(self.data), self.file, dict(self.positions),
                              dict(self.overrides), list(self.issues))


# libyaml's parser is ~25x faster than the pure-Python one and keeps line/column marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


#: Most nodes a document may expand to (YAML aliases can grow a small file exponentially).
MAX_NODES = 200_000


class _Walk:
    """State of one document construction: positions, problems, alias guard."""

    def __init__(self, loader: yaml.SafeLoader, file: str | None) -> None:
        self.loader = loader
        self.file = file
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.issues: list[ConfigIssue] = []
        self.active: set[int] = set()
        self.count = 0

    def fail(self, node: yaml.Node, loc: Loc, message: str) -> ConfigError:
        line, col = self.positions.get(loc) or (node.start_mark.line + 1,
                                                node.start_mark.column + 1)
        path = ".".join(map(str, loc))
        issue = ConfigIssue(path, message, self.file, line, col)
        return ConfigError(f"{self.file or '<config>'}:{line}:{col}: {path or '<root>'}: "
                           f"{message}", [issue])

    def construct(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.fail(node, loc, f"the document expands to more than {MAX_NODES:,} "
                                       "values (YAML aliases?); a config is much smaller")
        if id(node) in self.active:
            raise self.fail(node, loc, "recursive YAML alias: this value contains itself")
        if loc not in self.positions or not isinstance(loc[-1], str):
            self.positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            self.active.add(id(node))
            try:
                return self._mapping(node, loc)
            finally:
                self.active.discard(id(node))
        if isinstance(node, yaml.SequenceNode):
            self.active.add(id(node))
            try:
                return [self.construct(child, (*loc, i)) for i, child in enumerate(node.value)]
            finally:
                self.active.discard(id(node))
        return self.loader.construct_object(node, deep=True)

    def _key(self, key_node: yaml.Node) -> str:
        key: Any = self.loader.construct_object(key_node, deep=True)
        return key if isinstance(key, str) else ("null" if key is None else str(key))

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:  # explicit keys only: '<<' merges may be overridden
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self._key(key_node), key_node.start_mark.line + 1
            if key in first:
                self.issues.append(ConfigIssue(
                    ".".join(map(str, (*loc, key))),
                    f"duplicate key {key!r} (first given at line {first[key]}); only the "
                    "last one would count: remove one", self.file, line,
                    key_node.start_mark.column + 1))
            first.setdefault(key, line)
        self.loader.flatten_mapping(node)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            self.positions[(*loc, key)] = where
            out[key] = self.construct(value_node, (*loc, key))
            # point at the key for the value's location: editors jump there
            self.positions[(*loc, key)] = where
        return out


def _parse_text(text: str, file: str | None
                ) -> tuple[Any, dict[Loc, tuple[int, int]], list[ConfigIssue]]:
    loader: yaml.SafeLoader | None = None
    try:
        loader = _Loader(text)
        walk = _Walk(loader, file)
        node = loader.get_single_node()
        if node is None:
            return None, walk.positions, walk.issues
        return walk.construct(node, ()), walk.positions, walk.issues
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        col = mark.column + 1 if mark is not None else None
        position = getattr(exc, "position", None)  # ReaderError: bad characters
        if mark is None and isinstance(position, int):
            line = text.count("\n", 0, position) + 1
            col = position - (text.rfind("\n", 0, position) + 1) + 1
        if isinstance(exc, yaml.reader.ReaderError):
            problem = f"character U+{exc.character:04X} is not allowed in YAML/JSON"
        else:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = (file or "<config>") + (f":{line}:{col}" if line is not None else "")
        raise ConfigError(
            f"{where}: cannot parse YAML/JSON: {problem}",
            [ConfigIssue("", f"cannot parse YAML/JSON: {problem}", file, line, col)],
        ) from None
    except RecursionError:
        raise ConfigError(f"{file or '<config>'}: the document is nested too deeply",
                          [ConfigIssue("", "the document is nested too deeply", file)]) \
            from None
    finally:
        if loader is not None:
            loader.dispose()


def parse_override(text: str) -> tuple[Loc, Any]:
    """Parse one ``a.b.c=value`` override; the value is read as a YAML scalar or flow node.

    Numeric path parts index lists (``datasets.x.params.items.0=3``).

    Raises:
        ConfigError: The text has no ``=`` or an empty path.
    """
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not p for p in path.split(".")):
        raise ConfigError(
            f"--set {text!r}: expected 'dotted.path=value', e.g. --set trainer.epochs=5"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    loc: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    return tuple(loc), value


def _set_path(data: dict[str, Any], loc: Loc, value: Any, label: str) -> None:
    node: Any = data
    for i, part in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise ConfigError(f"{label}: index {part} is out of range at "
                                  f"{'.'.join(map(str, loc[:i + 1]))}")
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{label}: {'.'.join(map(str, loc[:i]))} is not a mapping")
        key = str(part)
        if key not in node or node[key] is None:
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
    last = loc[-1]
    if isinstance(node, list) and isinstance(last, int):
        if last < len(node):
            node[last] = value
        elif last == len(node):
            node.append(value)
        else:
            raise ConfigError(f"{label}: index {last} is out of range")
    elif isinstance(node, dict):
        node[str(last)] = value
    else:
        raise ConfigError(f"{label}: {'.'.join(map(str, loc[:-1]))} is not a mapping")


def apply_overrides(doc: ConfigDocument, sets: list[str] | tuple[str, ...] = (),
                    environ: dict[str, str] | None = None) -> ConfigDocument:
    """Apply environment then ``--set`` overrides (later wins) to a copy of ``doc``.

    Environment variables ``THELPER_CONFIG__TRAINER__EPOCHS=3`` map to ``trainer.epochs``
    (double underscores separate levels, names are lower-cased).
    """
    out = doc.copy()
    env = os.environ if environ is None else environ
    for key in sorted(k for k in env if k.startswith(ENV_PREFIX)):
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        loc = tuple(int(p) if p.isdigit() else p for p in parts)
        try:
            value = yaml.safe_load(env[key])
        except yaml.YAMLError:
            value = env[key]
        _set_path(out.data, loc, value, f"${key}")
        out.overrides[loc] = "env"
    for text in sets:
        loc, value = parse_override(text)
        _set_path(out.data, loc, value, f"--set {text!r}")
        out.overrides[loc] = "--set"
    return out


def load_config(path: str | Path, sets: list[str] | tuple[str, ...] = (),
                environ: dict[str, str] | None = None) -> ConfigDocument:
    """Read a YAML/JSON config file and apply overrides.

    Raises:
        ConfigError: The file is missing, unreadable, not parseable or not a mapping.
    """
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {str(p)!r} does not exist; check the path "
                          "(or create one with 'thelper config init')")
    if p.is_dir():
        raise ConfigError(f"config path {str(p)!r} is a directory; pass a .yaml or .json file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc}") from None
    data, positions, issues = _parse_text(text, str(p))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a config must be a mapping of sections "
                          f"(name, datasets, loaders, model, trainer), got {type(data).__name__}")
    return apply_overrides(ConfigDocument(data, str(p), positions, issues=issues), sets,
                           environ)


def document_from_dict(data: dict[str, Any], sets: list[str] | tuple[str, ...] = ()) -> ConfigDocument:
    """Wrap an in-memory config (e.g. one stored in a checkpoint) and apply ``--set``."""
    return apply_overrides(ConfigDocument(copy.deepcopy(data)), sets, environ={})
