"""Running a grid: decide what each experiment needs, dispatch it, draw the progress.

Rules per experiment directory ``<grid dir>/<id>/`` (see ``docs/commands/grid.md``):

* absent: ``run`` (a new session);
* ``run.json`` status ``completed``: skipped;
* ``failed``: skipped, unless ``rerun_failed``: the directory is moved to
  ``<grid dir>/.failed/<id>.<n>/`` and the experiment runs again from the start;
* ``interrupted`` or ``running`` (a killed process): ``resume`` from its latest checkpoint
  (exactly, through :func:`thelper.runner.resume_session`); a directory with neither a
  checkpoint nor ``config.latest.yaml`` (killed while being created) is started over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thelper.grid.plan import Experiment, GridPlan, write_plan

__all__ = ["GridOutcome", "decide", "run_grid", "read_run", "cpu_count"]


def cpu_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def read_run(session_dir: Path) -> dict[str, Any] | None:
    """A session's ``run.json``, or ``None``."""
    try:
        data = json.loads((session_dir / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def decide(session_dir: Path, rerun_failed: bool) -> str:
    """What an experiment needs: ``run``, ``resume``, ``rerun``, ``skip`` (completed) or
    ``skip-failed``."""
    if not session_dir.exists():
        return "run"
    record = read_run(session_dir)
    status = (record or {}).get("status")
    if status == "completed":
        return "skip"
    if status == "failed":
        return "rerun" if rerun_failed else "skip-failed"
    has_ckpt = any((session_dir / "checkpoints").glob("ckpt.*.pt"))
    if not has_ckpt and not (session_dir / "config.latest.yaml").is_file():
        return "restart"
    return "resume"


@dataclass
class Row:
    """The live state of one experiment."""

    exp: Experiment
    action: str
    status: str = "pending"
    started: float | None = None
    ended: float | None = None
    epoch: int | None = None
    metric: float | None = None
    error: str | None = None
    wall_s: float | None = None


@dataclass
class GridOutcome:
    """What a grid run did.

    Attributes:
        grid_dir: The grid's directory.
        rows: Per experiment: its final status, action, error and session time.
        interrupted: Whether the run was stopped (Ctrl-C, SIGTERM).
        wall_s: Seconds from the first job to the last result.
        executor: The executor's description.
    """

    grid_dir: Path
    rows: list[Row] = field(default_factory=list)
    interrupted: bool = False
    wall_s: float = 0.0
    executor: str = ""
    import_s: list[float] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)


def _progress(row: Row, grid_dir: Path, monitor: str | None) -> None:
    record = read_run(grid_dir / row.exp.id)
    if not record:
        return
    metrics = record.get("metrics") or {}
    train = metrics.get("train") or []
    if train and isinstance(train[-1], dict):
        row.epoch = train[-1].get("epoch")
    best = record.get("best") or {}
    value = best.get("value")
    if value is None and monitor:
        valid = metrics.get("valid") or []
        if valid and isinstance(valid[-1], dict):
            value = valid[-1].get(monitor)
    if isinstance(value, (int, float)):
        row.metric = float(value)


def _table(plan: GridPlan, rows: list[Row], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title, show_edge=False, pad_edge=False)
    for col in ("experiment", "params", "status", "epoch", f"{plan.monitor or 'metric'}",
                "elapsed"):
        table.add_column(col, overflow="fold")
    now = time.monotonic()
    style = {"completed": "green", "failed": "red", "interrupted": "yellow",
             "running": "cyan", "skipped": "dim"}
    for r in rows:
        elapsed = None
        if r.started is not None:
            elapsed = (r.ended or now) - r.started
        table.add_row(r.exp.id, r.exp.label(), f"[{style.get(r.status, '')}]{r.status}",
                      "" if r.epoch is None else str(r.epoch),
                      "" if r.metric is None else f"{r.metric:.4g}",
                      "" if elapsed is None else f"{elapsed:.1f} s")
    return table


def run_grid(plan: GridPlan, grid_dir: Path, executor: Any, *, rerun_failed: bool = False,
             max_concurrent: int | None = None, threads: int | None = None,
             gpus: list[int] | None = None, blocked: list[str] | None = None,
             allow_imports: tuple[str, ...] = (), live: bool | None = None,
             local: list[str] | None = None,
             echo: Any = print) -> GridOutcome:
    """Run every experiment of ``plan`` that is not done, on ``executor``.

    SIGINT/SIGTERM stop every running experiment with a final checkpoint (a second one
    stops them at once); the outcome then says ``interrupted``.

    Args:
        plan: The expanded grid.
        grid_dir: Where ``grid.json`` and the session directories go.
        executor: A built executor (:class:`thelper.grid.executors.Executor`).
        rerun_failed: Run failed experiments again (from the start).
        max_concurrent: Most experiments at once (default: the plan's, else GPUs or cores).
        threads: torch threads per worker (default: cores / workers).
        gpus: GPU indices (default: from the plan's ``devices``).
        blocked: Plugins blocked in the workers.
        local: Local plugin modules (``-p MODULE``) the workers load.
        allow_imports: ``--allow-import`` modules.
        live: Draw a live table (default: when stderr is a terminal).
        echo: Prints one line per finished experiment when there is no live table.

    Returns:
        The outcome.
    """
    from thelper.grid.executors import ExecutorContext
    from thelper.logs import console

    grid_dir.mkdir(parents=True, exist_ok=True)
    write_plan(plan, grid_dir)
    spec = plan.spec
    if gpus is None:
        gpus = _gpus(spec.devices)
    rows: list[Row] = []
    for exp in plan.experiments:
        action = decide(grid_dir / exp.id, rerun_failed)
        row = Row(exp, action)
        if action == "skip":
            row.status = "skipped"
            _progress(row, grid_dir, plan.monitor)
        elif action == "skip-failed":
            row.status = "failed"
            row.error = (read_run(grid_dir / exp.id) or {}).get("error")
        rows.append(row)
    todo = [r for r in rows if r.status == "pending"]
    limit = max_concurrent or spec.max_concurrent or (len(gpus) if gpus else cpu_count())
    workers = max(1, min(limit, len(todo) or 1, len(gpus) if gpus else limit))
    threads = threads or spec.threads_per_worker or max(1, cpu_count() // workers)
    outcome = GridOutcome(grid_dir, rows)
    if not todo:
        return outcome
    grid_id = _grid_id(plan)
    parent = mlflow_parent_run(plan, grid_dir, grid_id, echo)
    ctx = ExecutorContext(limit, threads, gpus, grid_dir, list(blocked or []), list(local or []))
    executor.start(ctx, len(todo))
    outcome.executor = executor.describe()
    if live is None:
        live = console.is_terminal
    stopping = {"n": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["n"] += 1
        executor.interrupt(force=stopping["n"] > 1)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    pending = list(todo)
    by_id = {r.exp.id: r for r in rows}
    start = time.monotonic()
    last_poll = 0.0
    display = None
    try:
        if live:
            from rich.live import Live

            display = Live(_table(plan, rows, plan.name), console=console,
                           refresh_per_second=2, transient=False)
            display.start()
        else:
            echo(f"grid {plan.name}: {len(todo)} to run, {len(rows) - len(todo)} done "
                 f"already; {outcome.executor}")
        while pending or executor.running():
            while pending and not stopping["n"] and executor.running() < executor.capacity:
                row = pending.pop(0)
                _prepare(row, grid_dir)
                job = _job(row, plan, grid_dir, grid_id, allow_imports)
                if parent is not None:  # MLflow: every experiment is a child of the grid's run
                    job["env"]["THELPER_MLFLOW_PARENT_RUN_ID"] = parent
                executor.submit(job)
                row.status, row.started = "running", time.monotonic()
            if stopping["n"] and pending:
                for row in pending:
                    row.status = "not started"
                pending = []
            for result in executor.poll(0.25):
                row = by_id[result["id"]]
                row.status, row.error = result["status"], result.get("error")
                row.wall_s, row.ended = result.get("wall_s"), time.monotonic()
                if result.get("crashed"):
                    _mark_crashed(grid_dir / row.exp.id, row.error or "crashed")
                    done = read_run(grid_dir / row.exp.id) or {}
                    if done.get("status") == "completed":  # it died after finishing
                        row.status, row.error = "completed", None
                _progress(row, grid_dir, plan.monitor)
                if not live:
                    tail = f" ({plan.monitor} {row.metric:.4g})" if row.metric is not None \
                        and plan.monitor else ""
                    err = f": {row.error}" if row.error and row.status != "completed" else ""
                    echo(f"[{sum(r.ended is not None for r in todo)}/{len(todo)}] "
                         f"{row.exp.id} {row.exp.label()}: {row.status}{tail}{err}")
            if time.monotonic() - last_poll > 1.0:
                last_poll = time.monotonic()
                for r in rows:
                    if r.status == "running":
                        _progress(r, grid_dir, plan.monitor)
            if display is not None:
                display.update(_table(plan, rows, plan.name))
    finally:
        outcome.wall_s = time.monotonic() - start
        outcome.import_s = list(getattr(executor, "import_s", []))
        try:
            executor.close()
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if display is not None:
                display.update(_table(plan, rows, plan.name))
                display.stop()
    outcome.interrupted = bool(stopping["n"])
    if parent is not None:
        _end_parent(grid_dir, "KILLED" if outcome.interrupted else "FINISHED")
    return outcome


#: ``grid.mlflow.json``: the grid's MLflow parent run (``tracking_uri``, ``run_id``).
PARENT_FILE = "grid.mlflow.json"


def mlflow_parent_run(plan: GridPlan, grid_dir: Path, grid_id: str, echo: Any = print
                      ) -> str | None:
    """The MLflow run that a grid's experiments are logged under, as children.

    Only when the experiments configure the ``mlflow`` tracker (``trackers:``) without a
    ``parent_run_id`` of their own. The run is created once per grid directory, in the
    tracker's experiment and tracking URI (default: the SQLite store in the grid
    directory, which is every experiment's save dir), and reused when the grid runs again;
    its id is kept in ``grid.mlflow.json``. A tracking server that cannot be reached costs
    the grouping only: a warning, and the experiments log as top-level runs.

    Returns:
        The parent run id, or ``None``.
    """
    specs = [t for e in plan.experiments for t in (e.config.get("trackers") or [])
             if isinstance(t, dict) and t.get("type") == "mlflow"]
    if not specs:
        return None
    params = dict(specs[0].get("params") or {})
    if params.get("parent_run_id"):
        return None
    from thelper.trackers.mlflow import default_tracking_uri

    uri = params.get("tracking_uri") or default_tracking_uri(grid_dir)
    record_path = grid_dir / PARENT_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if record.get("tracking_uri") == uri and record.get("run_id"):
        return str(record["run_id"])
    try:
        from thelper.trackers.upload import _client, _experiment

        client = _client(uri)
        exp_id = _experiment(client, params.get("experiment") or "thelper", uri)
        run = client.create_run(exp_id, run_name=f"grid {plan.name}", tags={
            "thelper.grid": plan.name, "thelper.grid_id": grid_id,
            "thelper.grid_dir": str(grid_dir.resolve()),
            "thelper.experiments": str(len(plan.experiments))})
    except Exception as exc:  # noqa: BLE001 - no parent run: the experiments still log
        echo(f"warning: could not create the grid's MLflow parent run at {uri}: "
             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; the "
             "experiments are logged as top-level runs")
        return None
    from thelper.session import write_json

    write_json(record_path, {"tracking_uri": uri, "run_id": run.info.run_id,
                             "experiment_id": exp_id})
    return str(run.info.run_id)


def _end_parent(grid_dir: Path, status: str) -> None:
    """Mark the grid's parent run finished (or killed, after a Ctrl-C); best effort."""
    try:
        record = json.loads((grid_dir / PARENT_FILE).read_text(encoding="utf-8"))
        from thelper.trackers.upload import _client

        _client(record["tracking_uri"]).set_terminated(record["run_id"], status=status)
    except Exception:  # noqa: BLE001, S110 - the grid's result does not depend on it
        pass


def _grid_id(plan: GridPlan) -> str:
    import hashlib

    text = json.dumps([plan.name, plan.seed, [e.hash for e in plan.experiments]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _gpus(devices: Any) -> list[int]:
    if devices == "cpu":
        return []
    if isinstance(devices, list):
        return list(devices)
    try:
        import torch

        return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU only
        return []


def _prepare(row: Row, grid_dir: Path) -> None:
    """Make the experiment's directory ready for its action."""
    target = grid_dir / row.exp.id
    if row.action == "rerun":
        failed = grid_dir / ".failed"
        failed.mkdir(exist_ok=True)
        n = 1
        while (failed / f"{row.exp.id}.{n}").exists():
            n += 1
        target.rename(failed / f"{row.exp.id}.{n}")
    elif row.action == "restart":
        shutil.rmtree(target)


def _job(row: Row, plan: GridPlan, grid_dir: Path, grid_id: str,
         allow_imports: tuple[str, ...]) -> dict[str, Any]:
    action = "resume" if row.action == "resume" else "run"
    return {"id": row.exp.id, "action": action, "config": row.exp.config,
            "save_dir": str(grid_dir), "allow_imports": list(allow_imports),
            "env": {"THELPER_GRID_ID": grid_id, "THELPER_GRID_NAME": plan.name,
                    "THELPER_GRID_DIR": str(grid_dir.resolve()),
                    "THELPER_GRID_EXPERIMENT": row.exp.id}}


def _mark_crashed(session_dir: Path, error: str) -> None:
    """A session whose worker died keeps ``status: running`` in its ``run.json``; record it
    as failed (``--rerun-failed`` runs it again)."""
    from thelper.session import now, write_json

    record = read_run(session_dir)
    if record is None or record.get("status") != "running":
        return
    record.update({"status": "failed", "error": error, "stopped_reason": "failed",
                   "ended_at": now()})
    try:
        write_json(session_dir / "run.json", record)
    except OSError:
        pass
