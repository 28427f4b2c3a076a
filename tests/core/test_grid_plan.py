"""Grid files: expansion, identity, seeds, validation errors and the report (no training)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml

from thelper.cli import main
from thelper.exceptions import ConfigError
from thelper.grid.plan import plan_grid
from thelper.grid.report import write_report
from thelper.plugins import get_plugin_manager
from thelper.session import write_json

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "examples" / "digits-classification" / "config.yaml"
LR = "trainer.optimization.optimizer.params.lr"


@pytest.fixture
def grid_file(tmp_path):
    shutil.copy(BASE, tmp_path / "base.yaml")

    def write(**spec) -> Path:
        path = tmp_path / "grid.yaml"
        path.write_text(yaml.safe_dump({"base": "base.yaml", "seed": 1, **spec},
                                       sort_keys=False))
        return path

    return write


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def test_cartesian_product_cases_and_identity(grid_file, registry):
    path = grid_file(vary={LR: [0.1, 0.01], "loaders.batch_size": [16, 32, 64]},
                     cases=[{"model.params.hidden": 32}, {"model.params.hidden": 64}],
                     set={"trainer.epochs": 1})
    plan = plan_grid(path, registry)
    assert len(plan.experiments) == 12
    assert plan.varied == ["model.params.hidden", LR, "loaders.batch_size"]
    combos = {(e.params["model.params.hidden"], e.params[LR], e.params["loaders.batch_size"])
              for e in plan.experiments}
    assert len(combos) == 12
    for e in plan.experiments:
        assert e.config["trainer"]["epochs"] == 1
        assert e.config["model"]["params"]["hidden"] == e.params["model.params.hidden"]
        assert e.config["name"] == e.id == e.hash[:12]
        assert e.seeds == {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0}
    assert len({e.hash for e in plan.experiments}) == 12
    again = plan_grid(path, registry)  # the same file plans the same experiments
    assert [e.hash for e in again.experiments] == [e.hash for e in plan.experiments]


def test_repeats_draw_distinct_recorded_seeds_and_random_search(grid_file, registry):
    path = grid_file(repeats=3, random={"n_trials": 4, "params": {
        LR: {"log_uniform": [1e-4, 1e-1]}, "loaders.batch_size": {"choice": [16, 32]},
        "model.params.hidden": {"int": [8, 12]}}})
    plan = plan_grid(path, registry)
    assert len(plan.experiments) == 12
    lrs = sorted({e.params[LR] for e in plan.experiments})
    assert len(lrs) == 4 and all(1e-4 <= v <= 1e-1 for v in lrs)
    assert all(8 <= e.params["model.params.hidden"] <= 12 for e in plan.experiments)
    by_repeat = {}
    for e in plan.experiments:
        assert e.seeds["split"] == 0  # kept: every repeat sees the same split
        by_repeat.setdefault(e.repeat, set()).add(e.seeds["torch"])
    assert all(len(s) == 1 for s in by_repeat.values())  # same seeds across points
    assert len({next(iter(s)) for s in by_repeat.values()}) == 3  # repeats never collide
    other = plan_grid(grid_file(repeats=3, seed=2, random={"n_trials": 4, "params": {
        LR: {"log_uniform": [1e-4, 1e-1]}}}), registry)
    assert sorted({e.params[LR] for e in other.experiments}) != lrs


def test_unset_seed_is_drawn_then_reused_from_grid_json(grid_file, registry, tmp_path):
    path = grid_file(seed=None, repeats=2)
    first = plan_grid(path, registry, grid_dir=tmp_path / "g")
    assert first.seed_source == "drawn"
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "grid.json").write_text(json.dumps(first.record()))
    second = plan_grid(path, registry, grid_dir=tmp_path / "g")
    assert second.seed_source == "recorded" and second.seed == first.seed
    assert [e.hash for e in second.experiments] == [e.hash for e in first.experiments]


def test_every_problem_at_once_located_in_the_grid_file(grid_file, registry, capsys):
    path = grid_file(vary={LR: [0.1, -1.0], "model.params.hiden": [1]},
                     executor={"type": "lokal"}, max_concurent=2)
    with pytest.raises(ConfigError) as exc:
        plan_grid(path, registry)
    text = str(exc.value)
    assert "executor.type: 'lokal' is not a registered executor" in text
    assert "did you mean 'local'" in text
    assert "max_concurent: unknown key 'max_concurent'; did you mean 'max_concurrent'?" in text
    assert main(["grid", "validate", str(path)]) == 2
    path = grid_file(vary={LR: [0.1, -1.0], "model.params.hiden": [1]})
    assert main(["grid", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "grid.yaml:" in line]
    assert any(f"{LR}:" in line and "-1" in line for line in lines), err
    assert any("model.params.hiden" in line and "unknown key" in line for line in lines), err
    assert all(line.startswith(str(path)) for line in lines)


def test_missing_base_names_the_file(grid_file, registry):
    path = grid_file(base="nope.yaml")
    with pytest.raises(ConfigError, match="no config file .*nope.yaml.*relative to the grid"):
        plan_grid(path, registry)


def test_plan_cli_json_and_table(grid_file, capsys, tmp_path):
    path = grid_file(vary={LR: [0.1, 0.01]})
    assert main(["grid", "plan", str(path), "--save-dir", str(tmp_path / "s"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["experiments"]) == 2 and data["seed"] == 1
    assert {e["action"] for e in data["experiments"]} == {"run"}
    assert main(["grid", "plan", str(path), "--save-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert data["experiments"][0]["id"] in out and "grid seed 1" in out


def test_report_leaves_missing_fields_blank(grid_file, registry, tmp_path):
    plan = plan_grid(grid_file(vary={LR: [0.1, 0.01, 0.001]}), registry)
    grid_dir = tmp_path / "grid"
    grid_dir.mkdir()
    write_json(grid_dir / "grid.json", plan.record())
    done, failed, _ = plan.experiments
    for e, record in ((done, {
        "status": "completed", "seeds": done.seeds,
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:00:42+00:00",
        "best": {"metric": "accuracy", "split": "valid", "value": 0.9, "epoch": 2},
        "metrics": {"train": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5,
                                                         "accuracy": 0.8}],
                    "valid": [{"epoch": 1, "accuracy": 0.7}, {"epoch": 2, "accuracy": 0.9}]},
        "test": {"split": "test", "epoch": 2, "accuracy": 0.85}}), (failed, {
            "status": "failed", "error": "NonFiniteLossError: loss is nan"})):
        (grid_dir / e.id).mkdir()
        write_json(grid_dir / e.id / "run.json", record)
    result = write_report(grid_dir, tmp_path / "r.csv")
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert result.rows == 3 and [r["experiment"] for r in rows] == [
        e.id for e in plan.experiments]
    first, second, third = rows
    assert first["status"] == "completed" and first["best_epoch"] == "2"
    assert first["best.accuracy"] == "0.9" and first["test.accuracy"] == "0.85"
    assert first["train.loss"] == "0.5" and first["valid.accuracy"] == "0.9"
    assert first["duration_s"] == "42.0" and first[LR] == "0.1"
    assert second["status"] == "failed" and second["test.accuracy"] == ""
    assert second["error"].startswith("NonFiniteLossError")
    assert third["status"] == "not started" and third["best_epoch"] == ""
    assert third["seeds.torch"] == "0"  # the planned seeds
    assert [p.name for p in result.plots] == ["r.monitor.png", "r.params.png"]


def test_report_of_a_non_grid_directory_is_a_usage_error(tmp_path, capsys):
    assert main(["grid", "report", str(tmp_path)]) == 2
    assert "holds no grid.json" in capsys.readouterr().err


def _ray_grid(grid_file, **params):
    return grid_file(vary={LR: [0.01]}, executor={"type": "ray", "params": params})


@pytest.mark.parametrize("flags", [[], ["--ray-address", "127.0.0.1:1"]])
def test_file_ray_address_needs_the_same_ray_address_flag(grid_file, tmp_path, capsys, flags):
    grid = _ray_grid(grid_file, address="ray://evil.example:10001")
    code = main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert "executor.params.address 'ray://evil.example:10001'" in err
    assert "--ray-address ray://evil.example:10001" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out" / "grid" / "grid.json").exists()  # nothing started


def test_ray_temp_dir_outside_the_grid_dir_is_refused(grid_file, tmp_path, capsys):
    grid = _ray_grid(grid_file, temp_dir=str(tmp_path / "elsewhere"))
    assert main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "executor.params.temp_dir" in err and "outside the grid directory" in err


def test_ray_address_flag_needs_the_ray_executor(grid_file, tmp_path, capsys):
    grid = grid_file(vary={LR: [0.01]})
    assert main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out"),
                 "--ray-address", "127.0.0.1:1"]) == 2
    assert "--ray-address applies to the ray executor only" in capsys.readouterr().err


def test_confirm_executor_accepts_a_confirmed_or_given_address(tmp_path):
    from thelper.grid.executors import RayExecutor, confirm_executor

    ex = RayExecutor(address="10.0.0.1:6379", temp_dir=str(tmp_path / "g" / "ray"))
    confirm_executor(ex, Path("grid.yaml"), tmp_path / "g", "10.0.0.1:6379")
    ex = RayExecutor()
    confirm_executor(ex, Path("grid.yaml"), tmp_path / "g", "10.0.0.2:6379")
    assert ex.address == "10.0.0.2:6379"
    ex = RayExecutor(address="local")
    confirm_executor(ex, Path("grid.yaml"), tmp_path / "g", None)
    assert ex.address == "local" and "on a local Ray" in ex.describe()


def test_report_replaces_a_planted_symlink_not_its_target(tmp_path):
    grid_dir = tmp_path / "g"
    grid_dir.mkdir()
    write_json(grid_dir / "grid.json", {"name": "g", "varied": [], "experiments": [
        {"id": "0123456789ab", "params": {}, "repeat": 0, "seeds": {}}]})
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (grid_dir / "results.csv").symlink_to(victim)
    result = write_report(grid_dir, plots=False)
    assert victim.read_text() == "precious\n"
    assert not result.csv_path.is_symlink()
    assert result.csv_path.read_text().splitlines()[1].startswith("0123456789ab,")


@pytest.mark.parametrize("bad", ["../x", "/etc", "0123456789AB", "0123456789a"])
def test_grid_test_refuses_ids_that_are_not_experiment_ids(tmp_path, capsys, bad):
    grid_dir = tmp_path / "g"
    grid_dir.mkdir()
    write_json(grid_dir / "grid.json", {"name": "g", "experiments": [{"id": bad}]})
    assert main(["grid", "test", str(grid_dir)]) == 2
    err = capsys.readouterr().err
    assert f"experiments.0.id {bad!r} is not an experiment id" in err
    assert len(err.strip().splitlines()) == 1


def test_grid_test_passes_local_plugin_modules_to_the_workers(tmp_path, monkeypatch):
    from thelper.grid import executors
    from thelper.grid.test import test_grid

    grid_dir = tmp_path / "g"
    (grid_dir / "0123456789ab").mkdir(parents=True)
    write_json(grid_dir / "grid.json", {"name": "g", "experiments": [{"id": "0123456789ab"}]})
    write_json(grid_dir / "0123456789ab" / "run.json", {"status": "completed"})
    seen = []

    class Stop(Exception):
        pass

    def start(self, ctx, n_jobs):
        seen.append(ctx)
        raise Stop

    monkeypatch.setattr(executors.LocalExecutor, "start", start)
    with pytest.raises(Stop):
        test_grid(grid_dir, None, [], get_plugin_manager(), local=["my_plugin"],
                  blocked=["other"])
    assert seen[0].local == ["my_plugin"] and seen[0].blocked == ["other"]


def test_too_many_experiments_are_refused_before_expanding(grid_file, tmp_path, capsys):
    grid = grid_file(repeats=1000, random={"n_trials": 100000, "params": {
        LR: {"log_uniform": [0.0001, 0.1]}}})
    assert main(["grid", "validate", str(grid)]) == 2
    err = capsys.readouterr().err
    assert "expands into 100000000 experiments" in err and "random.n_trials" in err
    assert "repeats" in err and len(err.strip().splitlines()) == 1
