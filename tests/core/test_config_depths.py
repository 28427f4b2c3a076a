"""Validation depths: schema (no torch), --build and --dry-run (CPU, temporary directory)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from thelper.cli import main
from thelper.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(__file__).parent / "configs"
EXAMPLES = sorted((ROOT / "examples").glob("*/config.yaml"))
SCHEMA_DEPTH_FILES = [*EXAMPLES, *sorted((ROOT / "plugins").glob("*/examples/*.yaml")),
                      *sorted((CONFIGS / "valid").iterdir())]
HEAVY = ("torch", "torchvision", "sklearn", "matplotlib", "PIL", "cv2", "numpy.linalg",
         "tensorboard")


def test_schema_depth_imports_no_torch_nor_plugin_implementations():
    """Every example (and the valid corpus) validates without importing implementations."""
    files = [str(p) for p in SCHEMA_DEPTH_FILES]
    code = f"""
import sys
from thelper.cli import main
from thelper.plugins import get_plugin_manager
registry = get_plugin_manager().registry
# a config section's factory is its params model (validated at schema depth by design)
factories = {{c.factory.split(":")[0] for c in registry.components() if c.kind != "section"}}
before = set(sys.modules)
for path in {files!r}:
    assert main(["config", "validate", path]) == 0, path
new = set(sys.modules) - before
loaded = sorted(m for m in new if m in factories)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r} or m in {HEAVY!r})
print("LOADED", loaded, "HEAVY", heavy)
assert not loaded and not heavy
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "LOADED [] HEAVY []" in res.stdout


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """Point tempfile at an empty folder to check that deep checks clean up."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _leftovers(folder: Path) -> list[str]:
    """Temporary session folders left behind (torch's own caches do not count)."""
    return [p.name for p in folder.iterdir() if p.name.startswith("thelper-")]


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_build_checks_every_component(mlp_config, write_config, capsys, private_tmp):
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path), "--build", "-f", "json"]) == 0
    report = _json(capsys)
    assert report["valid"] and report["depth"]["level"] == "build"
    steps = {s["step"]: s["detail"] for s in report["depth"]["steps"]}
    assert {"imports", "datasets", "model", "trainer", "batch"} <= set(steps)
    assert "(10 classes)" in steps["datasets"] and "train 1" in steps["datasets"]
    assert "output (64, 10) matches the task" in steps["batch"]
    assert _leftovers(private_tmp) == []


@pytest.mark.parametrize("max_time", [None, 0.001])
def test_dry_run_trains_one_batch_and_round_trips_a_checkpoint(mlp_config, write_config,
                                                               capsys, private_tmp,
                                                               monkeypatch, tmp_path,
                                                               max_time):
    """Also with a ``trainer.max_time`` shorter than one batch: the dry run checks the
    config's parts, not its time budget."""
    monkeypatch.chdir(tmp_path)
    mlp_config["trainer"]["max_time"] = max_time
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "train: one batch per split: train loss" in out
    assert "checkpoint: ckpt.latest.pt" in out and "weights_only=True" in out
    assert "dry-run on CPU passed" in out
    assert _leftovers(private_tmp) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "tmp"]  # no sessions/


def test_build_failure_is_an_issue_at_the_component(mlp_config, write_config, capsys,
                                                    private_tmp):
    mlp_config["model"]["params"]["in_features"] = 32  # digits have 64 features
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path), "--build", "-f", "json"]) == 2
    report = _json(capsys)
    (issue,) = report["issues"]
    assert issue["path"] == "model" and issue["line"] is not None
    assert issue["message"].startswith("build failed: RuntimeError:")
    assert "shapes cannot be multiplied" in issue["message"]
    assert _leftovers(private_tmp) == []


def test_deep_checks_are_skipped_for_invalid_configs(mlp_config, write_config, capsys):
    mlp_config["trainer"]["epochs"] = 0
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path), "--dry-run", "-f", "json"]) == 2
    report = _json(capsys)
    assert "depth" not in report and report["issues"][0]["path"] == "trainer.epochs"


@pytest.mark.slow
@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.parent.name)
def test_examples_dry_run(example, capsys, private_tmp):
    if get_plugin_manager().registry.canonical("model", "simple_cnn") is None:
        pytest.skip("needs thelper-vision")
    if (example.parent / "prepare.py").exists():
        pytest.skip("its data is prepared by prepare.py (the example's own tests run it)")
    assert main(["config", "validate", str(example), "--dry-run"]) == 0, \
        capsys.readouterr().err
    assert _leftovers(private_tmp) == []
