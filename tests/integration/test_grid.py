"""``thelper grid`` on the local executor: a 4-experiment digits grid on 2 warm workers.

Real data (scikit-learn's digits through the digits example config, made tiny: 1 epoch, a
4/8-channel CNN). Faults are scheduled by progress (a session's ``run.json`` status), never
by wall-clock time.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from thelper.cli import main

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "examples" / "digits-classification" / "config.yaml"

GRID = {
    "name": "g4",
    "base": "base.yaml",
    "seed": 3,
    "set": {"trainer.epochs": 1, "trainer.device": "cpu", "trainer.progress": False,
            "model.params.channels": [4, 8], "model.params.hidden": 16},
    "vary": {"trainer.optimization.optimizer.params.lr": [0.01, 0.002],
             "model.params.dropout": [0.0, 0.25]},
    "max_concurrent": 2,
    "threads_per_worker": 1,
}


def _grid_file(folder: Path, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BASE, folder / "base.yaml")
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({**GRID, **changes}, sort_keys=False))
    return path


def _runs(grid_dir: Path) -> dict[str, dict]:
    plan = json.loads((grid_dir / "grid.json").read_text())
    out = {}
    for e in plan["experiments"]:
        p = grid_dir / e["id"] / "run.json"
        out[e["id"]] = json.loads(p.read_text()) if p.exists() else {}
    return out


def _weights(session_dir: Path) -> dict:
    return torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The grid run once, uninterrupted, through the CLI."""
    tmp = tmp_path_factory.mktemp("grid-ref")
    grid = _grid_file(tmp / "cfg")
    code = main(["grid", "run", str(grid), "--save-dir", str(tmp / "out")])
    return code, grid, tmp / "out" / "g4"


def test_grid_runs_four_sessions_reports_and_skips(reference, capsys, tmp_path):
    code, grid, grid_dir = reference
    assert code == 0
    runs = _runs(grid_dir)
    assert len(runs) == 4 and all(r["status"] == "completed" for r in runs.values())
    plan = json.loads((grid_dir / "grid.json").read_text())
    for e in plan["experiments"]:  # identity: the hash of the resolved config, seeds in
        assert runs[e["id"]]["config_hash"] == e["hash"] and e["id"] == e["hash"][:12]
        assert runs[e["id"]]["seeds"] == e["seeds"]
        cfg = runs[e["id"]]["config"]
        assert cfg["trainer"]["optimization"]["optimizer"]["params"]["lr"] == \
            e["params"]["trainer.optimization.optimizer.params.lr"]
        assert cfg["model"]["params"]["dropout"] == e["params"]["model.params.dropout"]
    assert len({r["config"]["trainer"]["optimization"]["optimizer"]["params"]["lr"]
                for r in runs.values()}) == 2
    # both workers were used, each for several sessions (warm workers, not one per session)
    logs = sorted((grid_dir / "logs").glob("worker-*.log"))
    assert [p.name for p in logs] == ["worker-0.log", "worker-1.log"]

    out = tmp_path / "results.csv"
    assert main(["grid", "report", str(grid_dir), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4
    assert {r["experiment"] for r in rows} == set(runs)
    for r in rows:
        assert r["status"] == "completed" and r["best_epoch"] == "1"
        assert r["seeds.split"] == "0" and r["error"] == ""
        assert float(r["test.accuracy"]) == runs[r["experiment"]]["test"]["accuracy"]
        assert float(r["valid.accuracy"]) == runs[r["experiment"]]["metrics"]["valid"][-1][
            "accuracy"]
        assert r["trainer.optimization.optimizer.params.lr"] in ("0.01", "0.002")
        assert float(r["duration_s"]) >= 0
    assert (tmp_path / "results.monitor.png").stat().st_size > 1000
    assert (tmp_path / "results.params.png").stat().st_size > 1000

    before = {i: (grid_dir / i / "run.json").stat().st_mtime_ns for i in runs}
    capsys.readouterr()
    assert main(["grid", "run", str(grid), "--save-dir", str(grid_dir.parent)]) == 0
    out_text = capsys.readouterr().out
    assert "4 skipped" in out_text, out_text
    assert {i: (grid_dir / i / "run.json").stat().st_mtime_ns for i in runs} == before


def _wait(proc: subprocess.Popen, condition, what: str) -> None:
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the grid ended ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL])
def test_killed_grid_resumes_exactly(reference, tmp_path, signum):
    """Kill the grid once one experiment finished and another is training; the re-run
    skips the finished one and resumes the interrupted one, which then matches the
    uninterrupted run exactly (weights, metrics, test)."""
    _, _, ref_dir = reference
    grid = _grid_file(tmp_path / "cfg")
    save = tmp_path / "out"
    grid_dir = save / "g4"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "thelper", "grid", "run", str(grid),
                             "--save-dir", str(save)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)

    def statuses() -> list[str]:
        if not (grid_dir / "grid.json").exists():
            return []
        return [r.get("status") for r in _runs(grid_dir).values()]

    def one_done_one_training() -> bool:
        s = statuses()
        if "completed" not in s:
            return False
        for i, r in _runs(grid_dir).items():  # in its training epoch (no metrics yet)
            if r.get("status") == "running" and not (r.get("metrics") or {}).get(
                    "train") and (grid_dir / i / "logs" / "splits.json").exists():
                return True
        return False

    try:
        _wait(proc, one_done_one_training, "one experiment finished and one started")
        done_before = {i for i, r in _runs(grid_dir).items() if r.get("status") == "completed"}
        ended = {i: _runs(grid_dir)[i]["ended_at"] for i in done_before}
        os.kill(proc.pid, signum)
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    if signum == signal.SIGINT:
        assert proc.returncode == 130, proc.stderr.read()
    else:  # the orphaned workers stop their sessions themselves, with a checkpoint
        deadline_ok = lambda: "running" not in statuses()  # noqa: E731
        while not deadline_ok():
            time.sleep(0.05)
    runs = _runs(grid_dir)
    interrupted = {i for i, r in runs.items() if r.get("status") == "interrupted"}
    assert interrupted, {i: r.get("status") for i, r in runs.items()}
    for i in interrupted:
        assert (grid_dir / i / "checkpoints" / "ckpt.latest.pt").exists()

    assert main(["grid", "run", str(grid), "--save-dir", str(save)]) == 0
    runs = _runs(grid_dir)
    ref = _runs(ref_dir)
    assert set(runs) == set(ref)
    for i in done_before:  # skipped: untouched
        assert runs[i]["ended_at"] == ended[i]
    for i, r in runs.items():
        assert r["status"] == "completed", (i, r.get("error"))
        assert r["metrics"] == ref[i]["metrics"], i
        assert r["test"] == ref[i]["test"], i
        wa, wb = _weights(grid_dir / i), _weights(ref_dir / i)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), i
    for i in interrupted:
        log = (grid_dir / i / "logs" / "trainer.log").read_text()
        assert "resuming from" in log


@pytest.mark.slow
def test_grid_experiments_are_mlflow_children_of_one_grid_run(tmp_path):
    """With the mlflow tracker (default SQLite store in the grid directory), the grid
    creates one parent run and every experiment logs as its child; a re-run reuses it."""
    from mlflow import MlflowClient

    grid = _grid_file(tmp_path / "cfg", name="gml", max_concurrent=1,
                      vary={"trainer.optimization.optimizer.params.lr": [0.01, 0.002]},
                      set={**GRID["set"], "trackers": [{"type": "mlflow", "params": {
                          "experiment": "grid-test", "log_artifacts": False}}]})
    assert main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out")]) == 0
    grid_dir = tmp_path / "out" / "gml"
    parent = json.loads((grid_dir / "grid.mlflow.json").read_text())
    client = MlflowClient(tracking_uri=parent["tracking_uri"])
    runs = client.search_runs([parent["experiment_id"]])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent["run_id"]]
    assert len(runs) == 3 and len(children) == 2
    top = client.get_run(parent["run_id"])
    assert top.info.status == "FINISHED" and top.data.tags["thelper.grid"] == "gml"
    for run_record in _runs(grid_dir).values():
        logged = run_record["mlflow"]
        entry = logged[0] if isinstance(logged, list) else next(iter(logged.values()))
        assert entry["parent_run_id"] == parent["run_id"]
    # a second run of the grid (everything skipped) keeps the same parent
    assert main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out")]) == 0
    assert json.loads((grid_dir / "grid.mlflow.json").read_text())["run_id"] == parent["run_id"]
