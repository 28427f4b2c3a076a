"""Grid overhead: 100 ~1 s experiments on 2 workers against the ideal.

Each experiment is a tiny MLP session on scikit-learn's digits (flat 64 features), its
epochs chosen so that one session takes about a second here. The session's own time (the
``run_session`` wall time inside the worker, reported by the worker) is summed; the ideal
grid time is that sum / workers. Side by side, in one run:

* ``local`` executor, warm workers (torch imported once per worker);
* ``local`` with ``max_experiments_per_worker: 1``: a fresh process per experiment, which
  pays torch's import (and the plugins' loading) every time (the baseline);
* ``ray`` executor on a local Ray (when Ray is installed; ``--no-ray`` skips it).

Usage::

    uv run python benchmarks/bench_grid.py            # 100 experiments per executor
    uv run python benchmarks/bench_grid.py --quick    # 8 experiments, smaller sessions

Target (issue 19): local <= 1.10x the ideal.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def _base(epochs: int) -> dict:
    from conftest import MLP_CONFIG  # the tests' fast digits MLP

    cfg = yaml.safe_load(yaml.safe_dump(MLP_CONFIG))
    cfg["trainer"]["epochs"] = epochs
    cfg["trainer"]["metrics"] = {"accuracy": {"type": "accuracy"}}
    cfg["trainer"]["test_metrics"] = {}
    return cfg


def _grid(folder: Path, n: int, epochs: int, executor: dict, workers: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.yaml").write_text(yaml.safe_dump(_base(epochs)))
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": "bench", "base": "base.yaml", "seed": 0,
        "random": {"n_trials": n, "params": {
            "trainer.optimization.optimizer.params.lr": {"log_uniform": [1e-3, 1e-2]}}},
        "max_concurrent": workers, "threads_per_worker": 1, "devices": "cpu",
        "executor": executor}))
    return path


def _run(name: str, grid: Path, save: Path) -> dict:
    from thelper.grid.plan import plan_grid
    from thelper.grid.run import run_grid
    from thelper.plugins import get_plugin_manager

    pm = get_plugin_manager()
    plan = plan_grid(grid, pm.registry)
    executor = plan.spec.executor.build(pm.registry)
    start = time.perf_counter()
    outcome = run_grid(plan, save / "bench", executor, live=False, echo=lambda *_: None)
    wall = time.perf_counter() - start
    own = [r.wall_s for r in outcome.rows if r.wall_s is not None]
    workers = plan.spec.max_concurrent
    ideal = sum(own) / workers
    ok = sum(r.status == "completed" for r in outcome.rows)
    return {"executor": name, "experiments": len(outcome.rows), "completed": ok,
            "mean_session_s": sum(own) / max(1, len(own)), "wall_s": wall,
            "ideal_s": ideal, "ratio": wall / ideal if ideal else float("nan"),
            "workers_started": getattr(executor, "started_workers", None)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 experiments, 1 epoch each")
    parser.add_argument("-n", type=int, default=None, help="experiments per executor")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per experiment")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-ray", action="store_true", help="skip the ray executor")
    args = parser.parse_args(argv)
    n = args.n or (8 if args.quick else 100)
    epochs = args.epochs or (1 if args.quick else 6)  # 0.7-1.1 s a session here
    cases = [("local (warm workers)", {"type": "local"}),
             ("local, fresh process per experiment",
              {"type": "local", "params": {"max_experiments_per_worker": 1}})]
    if not args.no_ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            pass
        else:
            cases.append(("ray (local Ray)", {"type": "ray", "params": {
                "local_num_cpus": args.workers}}))
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tgb", dir="/tmp") as tmp:
        for i, (name, executor) in enumerate(cases):
            if executor["type"] == "ray":
                executor["params"]["temp_dir"] = str(Path(tmp) / "ray")
            grid = _grid(Path(tmp) / f"c{i}", n, epochs, executor, args.workers)
            rows.append(_run(name, grid, Path(tmp) / f"o{i}"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"Grid overhead: {n} experiments of {epochs} epoch(s), {args.workers} workers, "
          f"{os.cpu_count()} CPU(s), load average {load:.1f} at the end")
    print("| executor | completed | mean session (s) | wall (s) | ideal (s) | wall / ideal | "
          "workers started |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['executor']} | {r['completed']}/{r['experiments']} | "
              f"{r['mean_session_s']:.2f} | {r['wall_s']:.1f} | {r['ideal_s']:.1f} | "
              f"{r['ratio']:.2f}x | {r['workers_started'] or '-'} |")
    base = rows[0]["wall_s"]
    for r in rows[1:]:
        print(f"{r['executor']}: {r['wall_s'] / base:.2f}x the warm local executor's wall time")
    return 0 if all(r["completed"] == r["experiments"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
