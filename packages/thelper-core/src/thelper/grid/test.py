"""``thelper grid test``: evaluate the best checkpoint of every completed experiment."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from thelper.exceptions import ConfigError
from thelper.grid.plan import ID_LENGTH, PLAN_FILE, read_plan
from thelper.grid.run import cpu_count, read_run

__all__ = ["test_grid", "config_sets"]

#: Top-level keys of a test config that are not applied to the experiments.
_KEPT = ("name", "description", "seeds", "bases")
#: An experiment id of ``grid.json`` (its directory name): ``ID_LENGTH`` hex digits.
_ID = re.compile(f"[0-9a-f]{{{ID_LENGTH}}}")


def config_sets(path: Path) -> list[str]:
    """The overrides that put a test config's sections (``datasets``, ``loaders``, ...) in
    place of an experiment's: one ``SECTION=<json>`` per top-level key (``name``,
    ``description``, ``seeds`` and ``bases`` excepted; the seeds of a session never change).

    Raises:
        ConfigError: The file cannot be read or composed.
    """
    from thelper.config import load_config

    doc = load_config(path)
    return [f"{k}={json.dumps(v)}" for k, v in doc.data.items() if k not in _KEPT]


def test_grid(grid_dir: Path, config: Path | None, sets: list[str], pm: Any, *,
              max_concurrent: int | None = None, allow_imports: tuple[str, ...] = (),
              blocked: list[str] | None = None, local: list[str] | None = None,
              echo: Any = print) -> dict[str, int]:
    """Evaluate every completed experiment of ``grid_dir`` on the local executor.

    Args:
        grid_dir: The grid directory.
        config: A config whose sections replace each experiment's (``None``: its own).
        sets: ``--set`` overrides applied to every experiment.
        pm: The plugin manager.
        max_concurrent: Most evaluations at once (default: the CPU cores).
        allow_imports: ``--allow-import`` modules.
        blocked: Plugins blocked on the command line, blocked in the workers too.
        local: Local plugin modules (``-p MODULE``) the workers load.
        echo: Prints a line.

    Returns:
        Counts: ``completed``, ``failed``, ``interrupted`` evaluations.

    Raises:
        ConfigError: Not a grid directory, an experiment id of ``grid.json`` that is not
            :data:`~thelper.grid.plan.ID_LENGTH` lowercase hex digits, or the test config
            is unreadable.
    """
    import signal

    from thelper.grid.executors import ExecutorContext, LocalExecutor

    plan = read_plan(grid_dir)
    if plan is None:
        raise ConfigError(f"{str(grid_dir)!r} holds no {PLAN_FILE}: not a grid directory "
                          "(written by 'thelper grid run GRID.yaml')")
    extra = (config_sets(config) if config is not None else []) + list(sets)
    entries = [e for e in plan.get("experiments") or [] if isinstance(e, dict)]
    for i, e in enumerate(entries):
        if not isinstance(e.get("id"), str) or not _ID.fullmatch(e["id"]):
            raise ConfigError(f"{str(grid_dir / PLAN_FILE)!r}: experiments.{i}.id "
                              f"{e.get('id')!r} is not an experiment id ({ID_LENGTH} hex "
                              "digits); plan the grid again with 'thelper grid run GRID.yaml'")
    ids = [e["id"] for e in entries
           if (read_run(grid_dir / e["id"]) or {}).get("status") == "completed"]
    counts = {"completed": 0, "failed": 0, "interrupted": 0}
    if not ids:
        echo(f"no completed experiment in {grid_dir}")
        return counts
    executor = LocalExecutor()
    limit = max_concurrent or cpu_count()
    workers = max(1, min(limit, len(ids)))
    executor.start(ExecutorContext(limit, max(1, cpu_count() // workers), [], grid_dir,
                                   list(blocked or []), list(local or [])), len(ids))
    stopping = {"n": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["n"] += 1
        executor.interrupt(force=stopping["n"] > 1)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pending = list(ids)
    try:
        while pending or executor.running():
            while pending and not stopping["n"] and executor.running() < executor.capacity:
                ident = pending.pop(0)
                executor.submit({"id": ident, "action": "test", "save_dir": str(grid_dir),
                                 "sets": extra, "allow_imports": list(allow_imports)})
            if stopping["n"]:
                pending = []
            for result in executor.poll(0.25):
                counts[result["status"]] = counts.get(result["status"], 0) + 1
                err = f": {result['error']}" if result.get("error") else ""
                echo(f"{result['id']}: evaluation {result['status']}{err}")
    finally:
        executor.close()
        for s, h in previous.items():
            signal.signal(s, h)
    counts["interrupted"] += bool(stopping["n"])
    return counts
