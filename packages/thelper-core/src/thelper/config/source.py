"""Reading config documents with positions, and merging overrides.

A config is read from YAML or JSON (JSON is parsed by the YAML loader, so both keep line and
column numbers), composed with its bases, other files and groups
(:mod:`thelper.config.compose`), then overridden by ``THELPER_CONFIG__A__B=value``
environment variables and finally by ``--set a.b.c=value`` arguments. Every value remembers
the file, line and column it came from, or the override that set it, so that validation
errors point at ``file:line:col`` or at the override.
"""

from __future__ import annotations

import copy
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from thelper.exceptions import ConfigError, ConfigIssue

__all__ = ["ConfigDocument", "load_config", "parse_override", "ENV_PREFIX"]

ENV_PREFIX = "THELPER_CONFIG__"
Loc = tuple[str | int, ...]
#: Where a value was read: ``(file, line, column)``, 1-based (``file`` is ``None`` for text
#: read without a file).
Position = tuple[str | None, int, int]


@dataclass
class ConfigDocument:
    """A config as plain data plus where each value came from.

    Attributes:
        data: The merged document (dicts, lists, scalars).
        file: Path of the first file named (``None`` for in-memory documents).
        positions: ``{path: (file, line, column)}`` (1-based) for values read from a file:
            each value knows the file it came from (a base, a group, any of several files).
        overrides: ``{path: source}`` for values set by ``--set`` or the environment.
        issues: Problems found while reading (duplicate keys), reported with the others.
        files: Every file read, in merge order (bases before the files naming them).
        texts: ``{file: text}`` of every file read, as written.
        recipe: How the document was composed: ``files`` (named on the command line),
            ``groups`` (``NAME=CHOICE``), ``sets``, ``config_roots`` and ``allow_env``;
            empty for in-memory documents.
    """

    data: dict[str, Any]
    file: str | None = None
    positions: dict[Loc, Position] = field(default_factory=dict)
    overrides: dict[Loc, str] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The files named on the command line, joined with ``+`` (for messages)."""
        named = self.recipe.get("files") or ([self.file] if self.file else [])
        return " + ".join(str(f) for f in named) or "config"

    def locate(self, loc: Loc) -> tuple[str | None, int | None, int | None, str]:
        """Where the value at ``loc`` (or its closest ancestor) came from.

        Returns:
            ``(file, line, column, source)`` with source ``"file"``, ``"--set"`` or ``"env"``;
            ``file`` is the file that set the value, whichever base or group it is.
        """
        for i in range(len(loc), -1, -1):
            prefix = tuple(loc[:i])
            if prefix in self.overrides:
                return None, None, None, self.overrides[prefix]
            if prefix in self.positions:
                file, line, col = self.positions[prefix]
                return file, line, col, "file"
        return self.file, None, None, "file"

    def copy(self) -> ConfigDocument:
        return ConfigDocument(copy.deepcopy(self.data), self.file, dict(self.positions),
                              dict(self.overrides), list(self.issues), list(self.files),
                              dict(self.texts), copy.deepcopy(self.recipe))


# libyaml's parser is ~25x faster than the pure-Python one and keeps line/column marks.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # type: ignore[assignment]


#: Most nodes a document may expand to (YAML aliases can grow a small file exponentially).
MAX_NODES = 200_000
#: Deepest nesting of mappings and lists (a config nests ~10 levels; the YAML composer
#: recurses in C and would crash the process on tens of thousands).
MAX_DEPTH = 100
#: Largest config file read, in bytes.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: Most digits of an integer (Python's own bound on int/str conversion).
MAX_INT_DIGITS = 4300

_CORE = "tag:yaml.org,2002:"
_STR, _INT, _MERGE, _VALUE, _MAP, _SEQ = (
    _CORE + t for t in ("str", "int", "merge", "value", "map", "seq"))
#: Tags a scalar may carry: YAML's core schema (explicit ``!!int 3`` or resolved ``3``).
_SCALAR_TAGS = frozenset(_CORE + t for t in ("str", "int", "float", "bool", "null"))
#: Tags only accepted when the resolver gave them to a plain scalar (``2024-01-31``, ``=``).
_IMPLICIT_TAGS = frozenset(_CORE + t for t in ("timestamp", "value"))
_KIND = {yaml.MappingNode: "mapping", yaml.SequenceNode: "list", yaml.ScalarNode: "value"}


def _tag_text(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


#: Nesting the composer handles safely: libyaml's recurses in C (~0.4 KiB of stack per
#: level), PyYAML's pure-Python one would raise RecursionError.
_SAFE_COMPOSE_DEPTH = 1000 if _Loader is not yaml.SafeLoader else MAX_DEPTH
_TOO_DEEP = (f"the document nests mappings and lists deeper than {MAX_DEPTH} levels; a "
             "config nests a few levels: flatten it")


def _check_events(text: str, file: str | None) -> None:
    """Refuse documents nested too deeply to compose, before they are composed.

    libyaml's parser is iterative, its composer is not: walking the events first keeps a
    ``[[[[...`` bomb from overflowing the C stack (a segfault, not an exception). Each
    mapping or list starts at an indicator (``[ { - ? :``), so a text with few of them is
    shallow and skips the walk; :meth:`_Walk.construct` enforces :data:`MAX_DEPTH` with the
    value's path.
    """
    if sum(map(text.count, "[{-?:")) <= _SAFE_COMPOSE_DEPTH:
        return
    loader = _Loader(text)
    try:
        depth = 0
        step = {yaml.MappingStartEvent: 1, yaml.SequenceStartEvent: 1,
                yaml.MappingEndEvent: -1, yaml.SequenceEndEvent: -1}
        get = loader.get_event
        end = yaml.StreamEndEvent
        while True:
            event = get()
            kind = event.__class__
            if kind is end:
                return
            depth += step.get(kind, 0)
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line, col = mark.line + 1, mark.column + 1
                raise ConfigError(f"{file or '<config>'}:{line}:{col}: {_TOO_DEEP}",
                                  [ConfigIssue("", _TOO_DEEP, file, line, col)])
    finally:
        loader.dispose()


class _Walk:
    """State of one document construction: positions, problems, alias and merge guards."""

    def __init__(self, loader: yaml.SafeLoader, file: str | None) -> None:
        self.loader = loader
        self.file = file
        self.positions: dict[Loc, tuple[int, int]] = {}
        self.issues: list[ConfigIssue] = []
        self.active: set[int] = set()
        self.merged: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}
        self.count = 0
        self.depth = 0

    def fail(self, node: yaml.Node, loc: Loc, message: str, at_node: bool = False
             ) -> ConfigError:
        mark = (node.start_mark.line + 1, node.start_mark.column + 1)
        line, col = mark if at_node else (self.positions.get(loc) or mark)
        path = ".".join(map(str, loc))
        issue = ConfigIssue(path, message, self.file, line, col)
        return ConfigError(f"{self.file or '<config>'}:{line}:{col}: {path or '<root>'}: "
                           f"{message}", [issue])

    def _grow(self, node: yaml.Node, loc: Loc, n: int) -> None:
        self.count += n
        if self.count > MAX_NODES:
            raise self.fail(node, loc, f"the document expands to more than {MAX_NODES:,} "
                                       "values (YAML aliases?); a config is much smaller")

    def _tag(self, node: yaml.Node, loc: Loc) -> None:
        """Refuse tags outside YAML's core schema (``!!python/object``, ``!local``, ...)."""
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            if tag in _SCALAR_TAGS or tag == _MERGE:
                return
            if tag in _IMPLICIT_TAGS and not node.style and self.loader.resolve(
                    yaml.ScalarNode, node.value, (True, False)) == tag:
                return
        elif tag == (_MAP if isinstance(node, yaml.MappingNode) else _SEQ):
            return
        raise self.fail(node, loc, f"YAML tag {_tag_text(tag)!r} is not allowed on a "
                                   f"{_KIND.get(type(node), 'value')} in a config (only plain "
                                   "values, mappings and lists are read); remove the tag",
                        at_node=True)

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        tag = node.tag
        if tag == _STR or tag == _VALUE or tag == _MERGE:  # "=" and "<<" as values: text
            return node.value
        if tag == _INT and ":" in node.value and not node.style:
            # YAML 1.1 reads 12:00:00 as a base-60 integer (43200): in a config it is a
            # duration or a time of day (trainer.max_time), so it stays text
            return node.value
        if tag == _INT:
            digits = len(node.value) - node.value.count("_") - (node.value[:1] in "+-")
            if digits > MAX_INT_DIGITS:
                raise self.fail(node, loc, f"integer too large ({digits:,} digits; at most "
                                           f"{MAX_INT_DIGITS:,}): quote it to make it text",
                                at_node=True)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except (ValueError, OverflowError, KeyError) as exc:  # !!int abc, 2024-13-45
            raise self.fail(node, loc, f"cannot read {node.value[:40]!r} as "
                                       f"{_tag_text(tag)}: {exc}; fix it, or quote it to make "
                                       "it text", at_node=True) from None

    def construct(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            self._grow(node, loc, 0)
        positions = self.positions
        if loc not in positions or not isinstance(loc[-1], str):
            positions[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if node.__class__ is yaml.ScalarNode:
            if node.tag not in _SCALAR_TAGS:
                self._tag(node, loc)
            return self._scalar(node, loc)
        if id(node) in self.active:
            raise self.fail(node, loc, "recursive YAML alias: this value contains itself")
        self._tag(node, loc)
        if self.depth >= MAX_DEPTH:  # the path is cut: its first levels locate it
            raise self.fail(node, loc[:8], _TOO_DEEP, at_node=True)
        self.active.add(id(node))
        self.depth += 1
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self.construct(child, (*loc, i)) for i, child in enumerate(node.value)]
        finally:
            self.depth -= 1
            self.active.discard(id(node))

    def _key(self, key_node: yaml.Node, loc: Loc) -> str:
        """A mapping key as text; keys must be scalars (a list or mapping is refused)."""
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.fail(key_node, loc, f"a key must be a name or a number, not a "
                                           f"{_KIND.get(type(key_node), 'value')}; write a "
                                           "plain name before ':'", at_node=True)
        if key_node.tag == _STR:
            return key_node.value
        if key_node.tag not in _SCALAR_TAGS:
            self._tag(key_node, loc)
        key: Any = self._scalar(key_node, loc)
        return key if isinstance(key, str) else ("null" if key is None else str(key))

    def _pairs(self, node: yaml.MappingNode, loc: Loc) -> list[tuple[yaml.Node, yaml.Node]]:
        """The key/value nodes of ``node`` with its ``<<`` merges expanded (not in place).

        PyYAML's ``flatten_mapping`` rewrites shared (aliased) nodes and has no size bound:
        a few lines of nested merges would expand to billions of pairs.
        """
        done = self.merged.get(id(node))
        if done is not None:
            return done
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        self.merged[id(node)] = own  # a mapping merging itself adds nothing (as PyYAML)
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                own.append((key_node, value_node))
                continue
            self._tag(value_node, (*loc, "<<"))
            subs = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            parts = []
            for sub in subs:
                if not isinstance(sub, yaml.MappingNode):
                    raise self.fail(sub, (*loc, "<<"), "'<<' merges a mapping or a list of "
                                                       "mappings; give an alias of a mapping",
                                    at_node=True)
                self._tag(sub, (*loc, "<<"))
                parts.append(self._pairs(sub, loc))
            for part in reversed(parts):  # the first mapping listed wins, as in PyYAML
                self._grow(value_node, loc, len(part))
                merged.extend(part)
        pairs = merged + own if merged else own
        self.merged[id(node)] = pairs
        return pairs

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        first: dict[str, int] = {}
        for key_node, _ in node.value:  # explicit keys only: '<<' merges may be overridden
            if key_node.tag == _MERGE:
                continue
            key, line = self._key(key_node, loc), key_node.start_mark.line + 1
            if key in first:
                self.issues.append(ConfigIssue(
                    ".".join(map(str, (*loc, key))),
                    f"duplicate key {key!r} (first given at line {first[key]}); only the "
                    "last one would count: remove one", self.file, line,
                    key_node.start_mark.column + 1))
            first.setdefault(key, line)
        out: dict[str, Any] = {}
        for key_node, value_node in self._pairs(node, loc):
            key = self._key(key_node, loc)
            where = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            self.positions[(*loc, key)] = where
            out[key] = self.construct(value_node, (*loc, key))
            # point at the key for the value's location: editors jump there
            self.positions[(*loc, key)] = where
        return out


def _construct(text: str, file: str | None
               ) -> tuple[Any, dict[Loc, tuple[int, int]], list[ConfigIssue]]:
    """Compose and construct one document under the guards of :class:`_Walk`.

    Raises:
        yaml.YAMLError: The text is not YAML/JSON.
        ConfigError: A guard refused it (nesting, size, tags, non-scalar keys, big integers).
    """
    _check_events(text, file)
    loader = _Loader(text)
    try:
        walk = _Walk(loader, file)
        try:
            node = loader.get_single_node()
            if node is None:
                return None, walk.positions, walk.issues
            return walk.construct(node, ()), walk.positions, walk.issues
        except RecursionError:  # merges chained through many aliases
            message = "the document is nested too deeply (YAML aliases or merges?): flatten it"
            raise ConfigError(f"{file or '<config>'}: {message}",
                              [ConfigIssue("", message, file)]) from None
    finally:
        loader.dispose()


def _parse_text(text: str, file: str | None
                ) -> tuple[Any, dict[Loc, tuple[int, int]], list[ConfigIssue]]:
    try:
        return _construct(text, file)
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


def _override_value(raw: str, label: str, loc: Loc, empty: Any = "") -> Any:
    """Read an override's value as YAML under the same guards as a file.

    Text that is not YAML stays text (``--set name=[oops``); refused YAML is an error.

    Raises:
        ConfigError: The value uses a refused tag, is nested too deeply, expands too much or
            holds a too large integer (named with ``label``).
    """
    if not raw.strip():
        return empty
    try:
        value, _, _ = _construct(raw, None)
    except yaml.YAMLError:
        return raw
    except ConfigError as exc:
        issue = exc.issues[0] if exc.issues else None
        inner = tuple(issue.path.split(".")) if issue is not None and issue.path else ()
        path = ".".join(map(str, (*loc, *inner)))
        message = issue.message if issue is not None else str(exc)
        raise ConfigError(f"{label}: {path}: {message}") from None
    return value


def parse_override(text: str) -> tuple[Loc, Any]:
    """Parse one ``a.b.c=value`` override; the value is read as a YAML scalar or flow node.

    Numeric path parts index lists (``datasets.x.params.items.0=3``). Values are read under
    the guards of config files (core YAML tags only, bounded nesting, size and integers);
    text that is not YAML stays text.

    Raises:
        ConfigError: The text has no ``=`` or an empty path, or the value is refused.
    """
    path, sep, raw = text.partition("=")
    path = path.strip()
    if not sep or not path or any(not p for p in path.split(".")):
        raise ConfigError(
            f"--set {text!r}: expected 'dotted.path=value', e.g. --set trainer.epochs=5"
        )
    loc: Loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    return loc, _override_value(raw, f"--set {_short(text)}", loc)


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:77] + "...")


def _set_path(data: dict[str, Any], loc: Loc, value: Any, label: str) -> Loc:
    """Set ``value`` at ``loc``; returns the path as stored (mapping keys as text)."""
    node: Any = data
    stored: list[str | int] = []
    for i, part in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(node, list) and isinstance(part, int):
            if part >= len(node):
                raise ConfigError(f"{label}: index {part} is out of range at "
                                  f"{'.'.join(map(str, loc[:i + 1]))}")
            node = node[part]
            stored.append(part)
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"{label}: {'.'.join(map(str, loc[:i]))} is not a mapping")
        key = str(part)
        if key not in node or node[key] is None:
            node[key] = [] if isinstance(nxt, int) else {}
        node = node[key]
        stored.append(key)
    last = loc[-1]
    if isinstance(node, list) and isinstance(last, int):
        if last < len(node):
            node[last] = value
        elif last == len(node):
            node.append(value)
        else:
            raise ConfigError(f"{label}: index {last} is out of range")
        stored.append(last)
    elif isinstance(node, dict):
        node[str(last)] = value
        stored.append(str(last))
    else:
        raise ConfigError(f"{label}: {'.'.join(map(str, loc[:-1]))} is not a mapping")
    return tuple(stored)


def _mark_override(doc: ConfigDocument, loc: Loc, source: str) -> None:
    """Record that ``loc`` came from ``source``: what the file or an earlier override said
    at or under ``loc`` no longer locates anything (errors there are the override's)."""
    n = len(loc)
    for table in (doc.positions, doc.overrides):
        for key in [k for k in table if k[:n] == loc]:
            del table[key]
    doc.overrides[loc] = source


def apply_overrides(doc: ConfigDocument, sets: list[str] | tuple[str, ...] = (),
                    environ: dict[str, str] | None = None) -> ConfigDocument:
    """Apply environment then ``--set`` overrides (later wins) to a copy of ``doc``.

    Environment variables ``THELPER_CONFIG__TRAINER__EPOCHS=3`` map to ``trainer.epochs``
    (double underscores separate levels, names are lower-cased). Values are read like
    :func:`parse_override`'s.

    Raises:
        ConfigError: An override's path does not fit the document, or its value is refused.
    """
    out = doc.copy()
    env = os.environ if environ is None else environ
    for key in sorted(k for k in env if k.startswith(ENV_PREFIX)):
        parts = [p.lower() for p in key[len(ENV_PREFIX):].split("__") if p]
        if not parts:
            continue
        loc: Loc = tuple(int(p) if p.isdigit() else p for p in parts)
        value = _override_value(env[key], f"${key}", loc, empty=None)
        _mark_override(out, _set_path(out.data, loc, value, f"${key}"), "env")
    for text in sets:
        loc, value = parse_override(text)
        _mark_override(out, _set_path(out.data, loc, value, f"--set {_short(text)}"), "--set")
    return out


def _read_config(p: Path | str, name: str | None = None) -> str:
    """The text of config file ``p``: a regular file (or a link to one) of at most
    :data:`MAX_CONFIG_BYTES`, opened without blocking (a FIFO would wait for a writer).

    Args:
        p: The file to open.
        name: How messages name it (default: ``p``).

    Raises:
        ConfigError: ``p`` is missing, a directory, not a regular file, too large,
            unreadable or not UTF-8.
    """
    name = str(p) if name is None else name
    try:
        st = os.stat(p)  # refuse devices and FIFOs before opening them at all
    except FileNotFoundError:
        raise ConfigError(f"config file {name!r} does not exist; check the path "
                          "(or create one with 'thelper config init')") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name!r}: {exc.strerror or exc}") from None
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = -1
    try:
        if stat.S_ISREG(st.st_mode):
            fd = os.open(p, flags)
            st = os.fstat(fd)  # the file opened, not the one stat()ed before
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"config path {name!r} is a directory; pass a .yaml or .json "
                              "file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"config path {name!r} is {_file_kind(st.st_mode)}, not a "
                              "regular file; pass a .yaml or .json file")
        with os.fdopen(fd, "rb") as f:
            fd = -1
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {name!r}: {exc.strerror or exc}") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {name!r} is larger than "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB; a config is a few KiB: pass "
                          "the config, not a data file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config file {name!r}: {exc}; save it as UTF-8"
                          ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


def _file_kind(mode: int) -> str:
    for test, what in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character "
                       "device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def read_document(p: Path | str, name: str | None = None
                  ) -> tuple[dict[str, Any], dict[Loc, Position], list[ConfigIssue], str]:
    """Read one config file under every guard; no bases, overrides or interpolation.

    Args:
        p: The file to open.
        name: How positions and messages name it (default: ``p``).

    Returns:
        ``(data, positions, issues, text)``: the mapping, ``{path: (name, line, column)}``,
        the duplicate keys found, and the text as read.

    Raises:
        ConfigError: The file is missing, not a regular file, too large, unreadable, not
            parseable, refused by a guard of :func:`load_config`, or not a mapping.
    """
    name = str(p) if name is None else name
    text = _read_config(p, name)
    data, positions, issues = _parse_text(text, name)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name}: a config must be a mapping of sections "
                          f"(name, datasets, loaders, model, trainer), got {type(data).__name__}")
    return data, {k: (name, line, col) for k, (line, col) in positions.items()}, issues, text


def has_references(node: Any) -> bool:
    """Whether a string value of ``node`` (a parsed config) holds ``${``: the values are
    searched, not the file's text, so that a reference written with a YAML escape
    (``"\\x24{...}"``) is one, and one in a comment is not."""
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if "${" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_config(path: str | Path | Sequence[str | Path], sets: list[str] | tuple[str, ...] = (),
                environ: dict[str, str] | None = None, *, groups: Sequence[str] = (),
                roots: Sequence[str | Path] = (), allow_env: bool = False) -> ConfigDocument:
    """Read a YAML/JSON config (or several, merged in order) and apply overrides.

    Each file must be a regular file (symbolic links to one are followed) of at most
    :data:`MAX_CONFIG_BYTES`; the document may nest at most :data:`MAX_DEPTH` levels,
    expand to at most :data:`MAX_NODES` values (YAML aliases) and use only YAML's core
    tags (``!!python/...`` and local ``!tags`` are refused). A file's ``bases``, the
    ``groups``, and ``${...}`` interpolations are composed as described in
    :func:`thelper.config.compose.compose`; a single file without any of them reads exactly
    as in thelper 0.6.

    Args:
        path: The config file, or several merged in order (later files win).
        sets: ``--set`` overrides (``a.b=value``), applied last.
        environ: Environment (default: ``os.environ``) for ``THELPER_CONFIG__*`` overrides
            and ``${env:VAR}`` interpolations.
        groups: ``NAME=CHOICE`` selections (``--group``), merged after the files.
        roots: Extra directories (``--config-root``) bases and groups may be read from,
            beside the directories of the files given.
        allow_env: Let ``${env:VAR}`` read variables other than ``THELPER_*``.

    Raises:
        ConfigError: A file is missing, not a regular file, too large, unreadable, not
            parseable, refused by a guard above, or not a mapping; or the composition
            fails (a base outside the config roots, a cycle, a bad interpolation).
    """
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if len(paths) == 1 and not groups and not roots:  # a plain file reads without compose
        name = str(paths[0])
        data, positions, issues, text = read_document(paths[0], name)
        env = os.environ if environ is None else environ
        if "bases" not in data and "_delete_" not in text and not has_references(data) \
                and not any("${" in v for v in (*sets, *(v for k, v in env.items()
                                                         if k.startswith(ENV_PREFIX)))):
            recipe = {"files": [name], "groups": [], "sets": list(sets), "config_roots": [],
                      "allow_env": bool(allow_env)}
            doc = ConfigDocument(data, name, positions, issues=issues, files=[name],
                                 texts={name: text}, recipe=recipe)
            return apply_overrides(doc, sets, environ)
    from thelper.config.compose import compose

    return compose(paths, sets, environ, groups=groups, roots=roots, allow_env=allow_env)


def document_from_dict(data: dict[str, Any], sets: list[str] | tuple[str, ...] = ()) -> ConfigDocument:
    """Wrap an in-memory config (e.g. one stored in a checkpoint) and apply ``--set``."""
    return apply_overrides(ConfigDocument(copy.deepcopy(data)), sets, environ={})
