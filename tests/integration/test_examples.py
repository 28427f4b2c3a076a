"""Every example validates; the main example trains to its documented accuracy."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from thelper.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIGS = sorted(ROOT.glob("examples/*/config.yaml")) + sorted(
    ROOT.glob("plugins/*/examples/*.yaml"))


@pytest.mark.parametrize("config", EXAMPLE_CONFIGS, ids=lambda p: p.parent.name + "/" + p.name)
def test_example_validates_and_has_readme(config):
    assert main(["config", "validate", str(config)]) == 0
    readme = config.parent / "README.md"
    if config.parent.parent.name == "examples" and config.parent.parent.parent == ROOT:
        assert readme.is_file() and len(readme.read_text()) > 200


def test_digits_example_smoke(tmp_path):
    """Three epochs of the main example: CNN, augmentations, reports."""
    config = ROOT / "examples" / "digits-classification" / "config.yaml"
    assert main(["run", str(config), "--save-dir", str(tmp_path), "--set", "trainer.epochs=3",
                 "--set", "trainer.device=cpu"]) == 0
    run = json.loads((tmp_path / "digits-classification" / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["test"]["accuracy"] > 0.8
    assert run["test"]["top3"] >= run["test"]["accuracy"]
    out = tmp_path / "digits-classification" / "output" / "digits-classification" / "test"
    assert (out / "report.json").is_file() and (out / "confmat.png").is_file()


@pytest.mark.slow
def test_digits_example_reaches_documented_accuracy(tmp_path):
    """The README's promise: ≥ 0.97 test accuracy with the example as shipped."""
    config = ROOT / "examples" / "digits-classification" / "config.yaml"
    t0 = time.perf_counter()
    assert main(["run", str(config), "--save-dir", str(tmp_path)]) == 0
    elapsed = time.perf_counter() - t0
    run = json.loads((tmp_path / "digits-classification" / "run.json").read_text())
    assert run["test"]["accuracy"] >= 0.97, run["test"]
    print(f"digits example: test accuracy {run['test']['accuracy']:.4f} in {elapsed:.1f} s")
