"""The geo examples run end to end with ``thelper run`` (fewer epochs) and beat their
baselines on the spatially held-out test split; ``logs/splits.json`` records the regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.geo.conftest import EXAMPLES, example_config, run_thelper

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, name: str, epochs: int) -> Path:
    cfg = example_config(name, epochs=epochs, save_freq=epochs, device="cpu", progress=False)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    proc = run_thelper("run", str(path), "--save-dir", str(tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp_path / "runs" / cfg["name"]


def _dataset(session: Path):
    from thelper.plugins import ThelperPluginManager

    cfg = yaml.safe_load((EXAMPLES / session.name / "config.yaml").read_text())
    spec = cfg["datasets"]["rmnp"]
    return ThelperPluginManager().registry.build("dataset", spec["type"], spec["params"])


def _splits(session: Path) -> dict:
    return json.loads((session / "logs" / "splits.json").read_text())


def test_elevation_beats_the_mean_baseline(tmp_path):
    session = _run(tmp_path, "geo-elevation", epochs=8)
    run = json.loads((session / "run.json").read_text())
    splits = _splits(session)
    idx = splits["datasets"]["rmnp"]["indices"]
    assert splits["groups"]["rmnp"]["groups"]["test"] == ["r0:region:test"]
    ds = _dataset(session)
    train = np.concatenate([ds[i]["target"].numpy().ravel() for i in idx["train"]])
    test = np.concatenate([ds[i]["target"].numpy().ravel() for i in idx["test"]])
    baseline = 1 - np.sum((test - train.mean()) ** 2) / np.sum((test - test.mean()) ** 2)
    assert baseline <= 0.0  # the training mean, scored on the east
    assert run["test"]["r2"] > baseline + 0.2, (run["test"], baseline)


def test_treeline_iou_beats_the_majority_baseline(tmp_path):
    session = _run(tmp_path, "geo-treeline", epochs=5)
    run = json.loads((session / "run.json").read_text())
    idx = _splits(session)["datasets"]["rmnp"]["indices"]
    ds = _dataset(session)
    masks = np.concatenate([ds[i]["input"]["mask"].numpy().ravel() for i in idx["test"]])
    masks = masks[masks != 255]
    below = float(np.mean(masks == 0))
    majority_miou = max(below, 1 - below) / 2  # one class everywhere: IoU 0 for the other
    assert run["test"]["miou"] > majority_miou, (run["test"], majority_miou)


def test_vector_glacier_tiles_train_and_record_blocks(tmp_path):
    session = _run(tmp_path, "geo-vectors", epochs=6)
    run = json.loads((session / "run.json").read_text())
    groups = _splits(session)["groups"]["rmnp"]
    assert set(groups["groups"]) == {"train", "valid", "test"}
    mine = [set(v) for v in groups["groups"].values()]
    assert not (mine[0] & mine[1] or mine[0] & mine[2] or mine[1] & mine[2])
    assert all(len(v["bounds"]) == 4 for k, v in groups["regions"].items()
               if not k.startswith("_"))
    ds = _dataset(session)
    assert 0 < sum(ds.targets) < len(ds)  # some tiles hold a glacier, most do not
    assert run["test"]["roc_auc"] > 0.5, run["test"]
