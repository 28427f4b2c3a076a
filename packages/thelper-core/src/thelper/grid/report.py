"""``thelper grid report``: one CSV row per experiment, and plots of the monitored metric.

Reads ``<grid dir>/grid.json`` (the plan) and each experiment's ``run.json``; a field an
experiment does not have (not started, failed early, no test) stays blank, as the 0.6
grid analyzer did.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from thelper.exceptions import ConfigError
from thelper.grid.plan import PLAN_FILE, read_plan
from thelper.grid.run import read_run

__all__ = ["grid_rows", "write_report", "ReportResult"]

SEEDS = ("split", "torch", "numpy", "random", "worker")


def _scalars(entry: Any, prefix: str, skip: tuple[str, ...] = ("epoch",)) -> dict[str, Any]:
    if not isinstance(entry, dict):
        return {}
    return {f"{prefix}.{k}": v for k, v in entry.items()
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _duration(record: dict[str, Any]) -> float | None:
    try:
        start = datetime.fromisoformat(record["started_at"])
        end = datetime.fromisoformat(record["ended_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def grid_rows(grid_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The plan and one row per planned experiment.

    Raises:
        ConfigError: ``grid_dir`` holds no readable ``grid.json``.
    """
    plan = read_plan(grid_dir)
    if plan is None or not isinstance(plan.get("experiments"), list):
        raise ConfigError(f"{str(grid_dir)!r} holds no {PLAN_FILE}: not a grid directory "
                          "(written by 'thelper grid run GRID.yaml')")
    varied = [str(v) for v in plan.get("varied") or []]
    rows = []
    for exp in plan["experiments"]:
        if not isinstance(exp, dict) or not isinstance(exp.get("id"), str):
            continue
        record = read_run(grid_dir / exp["id"]) or {}
        params = exp.get("params") or {}
        row: dict[str, Any] = {"experiment": exp["id"]}
        row.update({p: params.get(p) for p in varied})
        row["repeat"] = exp.get("repeat")
        row["status"] = record.get("status") or ("not started" if not (
            grid_dir / exp["id"]).exists() else "unknown")
        row["stopped_reason"] = record.get("stopped_reason")
        seeds = record.get("seeds") or exp.get("seeds") or {}
        row.update({f"seeds.{s}": seeds.get(s) for s in SEEDS})
        best = record.get("best") or {}
        row["best_epoch"] = best.get("epoch")
        row[f"best.{best.get('metric') or plan.get('monitor') or 'metric'}"] = best.get("value")
        metrics = record.get("metrics") or {}
        train, valid = metrics.get("train") or [], metrics.get("valid") or []
        row["epochs"] = train[-1].get("epoch") if train and isinstance(train[-1], dict) \
            else None
        row.update(_scalars(train[-1] if train else None, "train"))
        row.update(_scalars(valid[-1] if valid else None, "valid"))
        row.update(_scalars(record.get("test"), "test"))
        evaluations = record.get("evaluations") or []
        if evaluations and isinstance(evaluations[-1], dict):
            row.update(_scalars(evaluations[-1].get("metrics"), "eval"))
        row["duration_s"] = _duration(record)
        row["error"] = record.get("error")
        rows.append(row)
    return plan, rows


class ReportResult:
    """Files written by :func:`write_report`."""

    def __init__(self, csv_path: Path, rows: int, plots: list[Path]) -> None:
        self.csv_path, self.rows, self.plots = csv_path, rows, plots


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value)
    return str(value)


def write_report(grid_dir: Path, out: Path | None = None, plots: bool = True
                 ) -> ReportResult:
    """Write the CSV (and the PNGs beside it).

    Args:
        grid_dir: The grid directory.
        out: The CSV (default: ``<grid_dir>/results.csv``).
        plots: Also write ``<stem>.monitor.png`` (the monitored metric per epoch of every
            experiment) and ``<stem>.params.png`` (best value against each of the first
            two numeric varied parameters).

    Files are written atomically: a symbolic link at an output path is replaced by the
    file, its target left alone.

    Raises:
        ConfigError: ``grid_dir`` is not a grid directory.
    """
    plan, rows = grid_rows(grid_dir)
    out = out or grid_dir / "results.csv"
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tail = ["duration_s", "error"]
    columns = [c for c in columns if c not in tail] + tail
    from thelper.session import write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    fh = io.StringIO(newline="")
    writer = csv.writer(fh)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text(row.get(c)) for c in columns])
    write_text(out, fh.getvalue())  # atomic; a symbolic link there is replaced, not followed
    written: list[Path] = []
    if plots and rows:
        written = _plots(grid_dir, plan, rows, out)
    return ReportResult(out, len(rows), written)


def _save(fig: Any, path: Path) -> None:
    """Save ``fig`` as PNG atomically (temporary file, rename): a symbolic link at ``path``
    is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plots(grid_dir: Path, plan: dict[str, Any], rows: list[dict[str, Any]], out: Path
           ) -> list[Path]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    monitor = plan.get("monitor") or "loss"
    varied = [str(v) for v in plan.get("varied") or []]
    label = {r["experiment"]: ", ".join(f"{p.rsplit('.', 1)[-1]}={r.get(p)}" for p in varied)
             or r["experiment"] for r in rows}
    written = []
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    drawn = 0
    for row in rows:
        record = read_run(grid_dir / row["experiment"]) or {}
        valid = (record.get("metrics") or {}).get("valid") or []
        pts = [(e.get("epoch"), e.get(monitor)) for e in valid if isinstance(e, dict)]
        pts = [(x, y) for x, y in pts if isinstance(x, int) and isinstance(y, (int, float))]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker="o", ms=3,
                    label=label[row["experiment"]] if drawn < 20 else None)
            drawn += 1
    if drawn:
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{monitor} (valid)")
        ax.set_title(f"{plan.get('name')}: {monitor} per epoch")
        ax.legend(fontsize=7)
        path = out.with_suffix(".monitor.png")
        _save(fig, path)
        written.append(path)
    numeric = [p for p in varied if any(isinstance(r.get(p), (int, float)) for r in rows)
               and all(r.get(p) is None or (isinstance(r.get(p), (int, float))
                                            and not isinstance(r.get(p), bool)) for r in rows)]
    best_key = next((k for r in rows for k in r if k.startswith("best.")), None)
    if numeric and best_key:
        params = numeric[:2]
        fig = Figure(figsize=(5 * len(params), 4), layout="constrained")
        FigureCanvasAgg(fig)
        for i, p in enumerate(params):
            ax = fig.add_subplot(1, len(params), i + 1)
            pts = [(r[p], r[best_key], r.get(params[1 - i]) if len(params) == 2 else None)
                   for r in rows if isinstance(r.get(best_key), (int, float))
                   and r.get(p) is not None]
            if not pts:
                continue
            xs, ys, cs = zip(*pts, strict=True)
            if len(params) == 2 and all(c is not None for c in cs):
                sc = ax.scatter(xs, ys, c=cs, cmap="viridis")
                fig.colorbar(sc, ax=ax, label=params[1 - i].rsplit(".", 1)[-1])
            else:
                ax.scatter(xs, ys)
            if min(xs) > 0 and max(xs) / min(xs) >= 100:
                ax.set_xscale("log")
            ax.set_xlabel(p)
            ax.set_ylabel(f"best {best_key[5:]} (valid)")
        path = out.with_suffix(".params.png")
        _save(fig, path)
        written.append(path)
    return written
