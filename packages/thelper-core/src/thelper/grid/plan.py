"""Reading a grid file and expanding it into experiments (no torch import).

Each experiment is a full session config: the base config(s) with the grid's ``set``
overrides, one ``cases`` entry, one value per ``vary`` path, one ``random`` trial and the
seeds of its repeat. Its identity is :func:`thelper.config.compose.config_hash` of the
validated config (seeds included); its session directory is ``<grid dir>/<id>/`` where
``id`` is the first :data:`ID_LENGTH` hex digits of that hash.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thelper.config.source import ConfigDocument, Loc, read_document
from thelper.exceptions import ConfigError, ConfigIssue

__all__ = ["Experiment", "GridPlan", "load_grid", "plan_grid", "read_plan", "write_plan",
           "ID_LENGTH", "PLAN_FILE"]

#: Hex digits of the config hash that name an experiment's directory.
ID_LENGTH = 12
#: The plan recorded in the grid directory.
PLAN_FILE = "grid.json"
#: Most experiments a grid may expand into.
MAX_EXPERIMENTS = 10_000


@dataclass
class Experiment:
    """One experiment of a grid.

    Attributes:
        id: Its directory name: the first :data:`ID_LENGTH` hex digits of ``hash``.
        hash: SHA-256 of its resolved config (seeds included, name excluded).
        params: The values the grid gave it, ``{config path: value}`` (cases, vary, random).
        repeat: Its repeat index (0-based).
        seeds: Its seeds (``split``, ``torch``, ``numpy``, ``random``, ``worker``).
        config: The validated config (``config.latest.yaml``'s content), named ``id``.
    """

    id: str
    hash: str
    params: dict[str, Any]
    repeat: int
    seeds: dict[str, int]
    config: dict[str, Any] = field(repr=False)

    def label(self) -> str:
        """``path=value, ...`` with the last part of each path (for tables and logs)."""
        parts = [f"{k.rsplit('.', 1)[-1]}={_short(v)}" for k, v in self.params.items()]
        return ", ".join(parts + ([f"repeat={self.repeat}"] if self.repeat else [])) or "-"

    def record(self) -> dict[str, Any]:
        """The entry of ``grid.json``."""
        return {"id": self.id, "hash": self.hash, "params": self.params,
                "repeat": self.repeat, "seeds": self.seeds}


@dataclass
class GridPlan:
    """An expanded grid.

    Attributes:
        name: The grid's name (its directory under the save dir).
        file: The grid file.
        spec: The validated grid file (:class:`thelper.grid.params.GridFile` subclass).
        seed: The grid's seed (given, read back from ``grid.json``, or drawn).
        seed_source: ``file``, ``recorded`` or ``drawn``.
        experiments: Every experiment, in plan order.
        varied: The config paths the grid varies, in order.
        monitor: The monitored metric of the first experiment (``trainer.monitor``).
    """

    name: str
    file: Path
    spec: Any
    seed: int
    seed_source: str
    experiments: list[Experiment]
    varied: list[str]
    monitor: str | None = None

    def record(self) -> dict[str, Any]:
        """The content of ``grid.json``."""
        from thelper.session import now

        return {"name": self.name, "grid_file": str(self.file),
                "description": self.spec.description, "seed": self.seed,
                "monitor": self.monitor, "varied": self.varied, "planned_at": now(),
                "experiments": [e.record() for e in self.experiments]}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 30 else text[:27] + "..."


def _issues(exc: Any, doc: ConfigDocument, registry: Any) -> list[ConfigIssue]:
    """A pydantic ``ValidationError`` of the grid file as located issues."""
    from thelper.config.dynamic import UNKNOWN_COMPONENT

    out: list[ConfigIssue] = []
    for err in exc.errors(include_url=False):
        loc: list[Any] = []
        for part in err["loc"]:
            if isinstance(part, str) and part.startswith(("function-", "tagged-union[")):
                continue
            if isinstance(part, str) and part in {"executor_local", "executor_ray"}:
                continue
            loc.append(part)
        etype = err["type"]
        if etype.startswith(UNKNOWN_COMPONENT):
            name = (doc.data.get("executor") or {}).get("type") \
                if isinstance(doc.data.get("executor"), dict) else None
            loc = ["executor", "type"]
            msg = (f"{name!r} is not a registered executor; "
                   f"{registry.suggestion('executor', str(name))}")
        elif etype == "extra_forbidden":
            msg = f"unknown key {loc[-1]!r}"
            if len(loc) == 1:
                from difflib import get_close_matches

                from thelper.grid.params import GridFile

                hits = get_close_matches(str(loc[-1]), list(GridFile.model_fields), 1, 0.6)
                msg += f"; did you mean {hits[0]!r}?" if hits else \
                    f"; valid keys: {', '.join(GridFile.model_fields)}"
        elif etype == "missing":
            msg = "required key is missing"
        else:
            msg = str(err.get("msg", etype)).removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {_short(err['input'])})"
        file, line, col, source = doc.locate(tuple(loc))
        out.append(ConfigIssue(".".join(map(str, loc)), msg, file, line, col, source))
    return out


def load_grid(path: str | Path, registry: Any) -> tuple[Any, ConfigDocument]:
    """Read and validate a grid file (every problem at once).

    Args:
        path: The grid file (YAML or JSON).
        registry: The registry (for the ``executor`` slot).

    Returns:
        ``(spec, document)``.

    Raises:
        ConfigError: The file cannot be read, or its content is invalid (``.issues``).
    """
    from pydantic import ValidationError

    from thelper.config.dynamic import section_model
    from thelper.grid.params import GridFile

    name = str(path)
    data, positions, issues, _ = read_document(path, name)
    doc = ConfigDocument(data, name, positions, issues=issues, files=[name])
    model = section_model(registry, GridFile)
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        found = issues + _issues(exc, doc, registry)
        raise ConfigError(f"{name}: {len(found)} problem(s) found in the grid file:\n"
                          + "\n".join(i.format() for i in found), found) from None
    if issues:
        raise ConfigError(f"{name}: {len(issues)} problem(s) found in the grid file:\n"
                          + "\n".join(i.format() for i in issues), issues)
    return spec, doc


def read_plan(grid_dir: Path) -> dict[str, Any] | None:
    """``<grid_dir>/grid.json``, or ``None`` when absent or unreadable."""
    try:
        data = json.loads((grid_dir / PLAN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_plan(plan: GridPlan, grid_dir: Path) -> None:
    """Write ``grid.json`` (atomically) into ``grid_dir`` (created if needed)."""
    from thelper.session import write_json

    grid_dir.mkdir(parents=True, exist_ok=True)
    write_json(grid_dir / PLAN_FILE, plan.record())


def _place(doc: ConfigDocument, path: str, value: Any, where: tuple[str | None, int | None,
                                                                    int | None]) -> None:
    """Set ``value`` at the dotted ``path``; errors there point at the grid file."""
    from thelper.config.source import _mark_override, _set_path

    loc: Loc = tuple(int(p) if p.isdigit() else p for p in path.split("."))
    stored = _set_path(doc.data, loc, copy.deepcopy(value), f"grid value {path}")
    _mark_override(doc, stored, "grid")
    del doc.overrides[stored]
    if where[0] is not None:
        doc.positions[stored] = (where[0], where[1], where[2])  # type: ignore[assignment]


def _draw_seed(grid_seed: int, repeat: int, name: str) -> int:
    return random.Random(f"thelper-grid:{grid_seed}:{repeat}:{name}").randrange(2**31)


def plan_grid(path: str | Path, registry: Any, *, grid_dir: Path | None = None,
              sets: list[str] | tuple[str, ...] = (), allow_imports: tuple[str, ...] = (),
              failures: Any = ()) -> GridPlan:
    """Read a grid file and expand it into validated experiments.

    Args:
        path: The grid file.
        registry: Registered components.
        grid_dir: The grid's directory; its recorded seed is reused when the file sets
            none. ``None``: ``grids/<name>`` is not consulted.
        sets: ``--set`` overrides applied to every experiment (after the grid's own).
        allow_imports: ``--allow-import`` modules.
        failures: Plugins that failed to load (for install hints).

    Raises:
        ConfigError: The grid file or any expanded config is invalid; every problem of
            every experiment is listed, each prefixed with the experiment's values. Or
            the grid expands into more than :data:`MAX_EXPERIMENTS` experiments.
    """
    from thelper.config import check_document, load_config
    from thelper.config.compose import config_hash
    from thelper.grid.params import SEED_NAMES

    gpath = Path(path)
    spec, gdoc = load_grid(gpath, registry)
    name = spec.name or gpath.stem
    bases = [spec.base] if isinstance(spec.base, str) else list(spec.base)
    base_paths = [gpath.parent / b for b in bases]
    for i, b in enumerate(base_paths):
        if not b.is_file():
            where = ("base",) if isinstance(spec.base, str) else ("base", i)
            file, line, col, _ = gdoc.locate(where)
            raise ConfigError(ConfigIssue(".".join(map(str, where)), f"no config file "
                              f"{str(b)!r} (base paths are relative to the grid file)", file,
                              line, col).format())
    base = load_config(base_paths, list(sets))
    seed, source = spec.seed, "file"
    if seed is None:
        recorded = read_plan(grid_dir) if grid_dir is not None else None
        if recorded is not None and isinstance(recorded.get("seed"), int):
            seed, source = recorded["seed"], "recorded"
        else:
            seed, source = secrets.randbelow(2**31), "drawn"
    n_trials = spec.random.n_trials if spec.random is not None else 1
    count = max(1, len(spec.cases)) * math.prod(len(v) for v in spec.vary.values()) \
        * n_trials * spec.repeats
    if count > MAX_EXPERIMENTS:
        raise ConfigError(f"{gpath}: the grid expands into {count} experiments (cases x vary "
                          f"values x random.n_trials x repeats), more than {MAX_EXPERIMENTS}; "
                          "reduce cases, vary, random.n_trials or repeats")
    rng = random.Random(seed)
    trials: list[dict[str, tuple[Any, tuple]]] = [{}]
    if spec.random is not None:
        trials = [{p: (d.draw(rng), ("random", "params", p)) for p, d in
                   spec.random.params.items()} for _ in range(spec.random.n_trials)]
    cases = [{p: (v, ("cases", i, p)) for p, v in c.items()} for i, c in
             enumerate(spec.cases)] or [{}]
    vary_axes = [[(p, (v, ("vary", p, j))) for j, v in enumerate(values)]
                 for p, values in spec.vary.items()]
    varied: list[str] = []
    for group in ([list(c) for c in cases], [list(spec.vary)],
                  [list(t) for t in trials[:1]] if spec.random else []):
        for keys in group:
            varied += [k for k in keys if k not in varied]
    experiments: list[Experiment] = []
    issues: list[ConfigIssue] = []
    seen: dict[str, int] = {}
    monitor = None
    for case, combo, trial in itertools.product(cases, itertools.product(*vary_axes), trials):
        values: dict[str, tuple[Any, tuple]] = {**case, **dict(combo), **trial}
        for repeat in range(spec.repeats):
            doc = base.copy()
            for p, v in spec.set.items():
                _place(doc, p, v, gdoc.locate(("set", p))[:3])
            for p, (v, where) in values.items():
                _place(doc, p, v, gdoc.locate(where)[:3])
            given = doc.data.get("seeds") if isinstance(doc.data.get("seeds"), dict) else {}
            seeds = {}
            for s in SEED_NAMES:
                v = given.get(s)
                if v is None or (spec.repeats > 1 and s in spec.reseed):
                    v = _draw_seed(seed, repeat, s)
                seeds[s] = v
            doc.data["seeds"] = {**given, **seeds}
            doc.data["name"] = "grid-experiment"
            cfg, found = check_document(doc, registry, failures=failures,
                                        allow_imports=allow_imports, warnings=[])
            params = {p: v for p, (v, _) in values.items()}
            if cfg is None:
                label = ", ".join(f"{p}={_short(v)}" for p, v in params.items()) or "base"
                issues += [ConfigIssue(i.path, f"{i.message} [experiment {label}"
                                       f"{f', repeat {repeat}' if repeat else ''}]", i.file,
                                       i.line, i.column, i.source) for i in found]
                continue
            dump = cfg.model_dump(mode="json", exclude_none=False)
            dump["seeds"] = {k: int(v) for k, v in dump["seeds"].items()}
            digest = config_hash(dump)
            ident = digest[:ID_LENGTH]
            dump["name"] = ident
            monitor = monitor or dump.get("trainer", {}).get("monitor")
            if ident in seen:  # two points that compute the same thing
                continue
            seen[ident] = len(experiments)
            experiments.append(Experiment(ident, digest, params, repeat, dump["seeds"], dump))
    if issues:
        unique = list(dict.fromkeys(issues))
        raise ConfigError(f"{gpath}: {len(unique)} problem(s) in the expanded configs:\n"
                          + "\n".join(i.format() for i in unique), unique)
    return GridPlan(name, gpath, spec, seed, source, experiments, varied, monitor)
