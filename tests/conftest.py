"""Shared fixtures: small real configs (scikit-learn's digits) written to temporary files."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: A fast core-only session on scikit-learn's digits (flat 64-feature vectors, MLP).
MLP_CONFIG: dict[str, Any] = {
    "name": "digits-mlp",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "sklearn", "params": {"name": "digits", "as_image": False}}},
    "loaders": {
        "batch_size": 64,
        "train_split": {"digits": 0.8},
        "valid_split": {"digits": 0.1},
        "test_split": {"digits": 0.1},
    },
    "model": {"type": "mlp", "params": {"in_features": 64, "hidden": [64], "dropout": 0.1}},
    "trainer": {
        "epochs": 3,
        "device": "cpu",
        "monitor": "accuracy",
        "progress": False,
        "optimization": {
            "loss": {"type": "cross_entropy"},
            "optimizer": {"type": "adam", "params": {"lr": 0.005}},
            "scheduler": {"type": "reduce_lr_on_plateau", "params": {"patience": 1},
                          "step_metric": "loss"},
        },
        "metrics": {"accuracy": {"type": "accuracy"},
                    "confmat": {"type": "confusion_matrix"}},
        "test_metrics": {"report": {"type": "classification_report"}},
    },
}


@pytest.fixture
def mlp_config() -> dict[str, Any]:
    """A deep copy of :data:`MLP_CONFIG` to modify freely."""
    return copy.deepcopy(MLP_CONFIG)


@pytest.fixture
def write_config(tmp_path: Path):
    """Write a config dict as YAML (or JSON with ``suffix='.json'``) and return its path."""

    def _write(data: dict[str, Any], name: str = "config.yaml") -> Path:
        path = tmp_path / name
        if name.endswith(".json"):
            import json

            path.write_text(json.dumps(data, indent=2))
        else:
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    return _write


@pytest.fixture(autouse=True)
def _no_config_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("THELPER_"):
            monkeypatch.delenv(key)
