"""The example plugin's components, and its example config trained end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from plugin_test_helpers import MOONS_CONFIG

from thelper.cli import main
from thelper.plugins import get_plugin_manager
from thelper.runner import resume_session
from thelper.tasks import Classification
from thelper_plugin_example.datasets import TwoMoons
from thelper_plugin_example.metrics import BalancedAccuracy
from thelper_plugin_example.models import RBFNet
from thelper_plugin_example.plugin import EPOCHS_CSV

TASK = Classification(["upper", "lower"])


# ---------------------------------------------------------------------------- dataset
def test_moons_samples_task_and_targets() -> None:
    ds = TwoMoons(n_samples=101, noise=0.2, seed=7)
    assert len(ds) == 101
    sample = ds[0]
    assert set(sample) == {"input", "label"}
    assert sample["input"].shape == (2,) and sample["input"].dtype == torch.float32
    assert sample["label"].shape == () and sample["label"].dtype == torch.int64
    assert ds.task == TASK
    assert ds.targets == [int(ds[i]["label"]) for i in range(len(ds))]
    assert sorted(set(ds.targets)) == [0, 1] and ds.targets.count(0) == 50
    # label 0 is the upper moon: without noise its points have y >= 0, the lower's y <= 0.5
    clean = TwoMoons(n_samples=40, noise=0.0)
    ys = clean.inputs[:, 1]
    assert bool((ys[clean.labels == 0] >= 0).all()) and bool((ys[clean.labels == 1] <= 0.5).all())


def test_moons_are_reproducible_from_the_seed() -> None:
    a, b, c = TwoMoons(50, 0.2, 1), TwoMoons(50, 0.2, 1), TwoMoons(50, 0.2, 2)
    assert torch.equal(a.inputs, b.inputs) and a.targets == b.targets
    assert not torch.equal(a.inputs, c.inputs)


# ------------------------------------------------------------------------------ model
def test_rbf_net_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    model = RBFNet(in_features=2, num_centers=5, task=Classification(["a", "b", "c"]))
    x = torch.randn(7, 2)
    logits = model(x)
    assert logits.shape == (7, 3)
    feats = model.features(x)
    assert feats.shape == (7, 5) and bool(((feats > 0) & (feats <= 1)).all())
    logits.sum().backward()
    assert model.centers.grad is not None and model.log_widths.grad is not None
    # a unit responds 1 at its own centre
    assert model.features(model.centers.detach()[:1])[0, 0].item() == pytest.approx(1.0)


def test_rbf_net_fixed_widths_and_missing_task() -> None:
    model = RBFNet(num_centers=3, init_width=0.25, learn_widths=False, task=TASK)
    assert not model.log_widths.requires_grad
    assert torch.exp(model.log_widths).tolist() == pytest.approx([0.25] * 3)
    with pytest.raises(ValueError, match="classification task"):
        RBFNet(task=None)


# ----------------------------------------------------------------------------- metric
@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
@pytest.mark.parametrize("adjusted", [False, True])
def test_balanced_accuracy_matches_scikit_learn(adjusted: bool) -> None:
    from sklearn.metrics import balanced_accuracy_score

    gen = torch.Generator().manual_seed(0)
    task = Classification(["a", "b", "c", "d"])
    metric = BalancedAccuracy(adjusted=adjusted, task=task)
    assert metric.compute() is None
    outs, tgts = [], []
    for _ in range(4):  # imbalanced targets, class "d" never present, one ignored target
        out = torch.randn(25, 4, generator=gen)
        tgt = torch.multinomial(torch.tensor([0.6, 0.3, 0.1]), 25, replacement=True, generator=gen)
        tgt[0] = -100
        metric.update(out, tgt)
        outs.append(out)
        tgts.append(tgt)
    y_true, y_pred = torch.cat(tgts), torch.cat(outs).argmax(dim=1)
    keep = y_true >= 0
    expected = balanced_accuracy_score(
        y_true[keep].numpy(), y_pred[keep].numpy(), adjusted=adjusted
    )
    assert metric.compute() == pytest.approx(expected)
    metric.reset()
    assert metric.compute() is None


def test_balanced_accuracy_is_not_fooled_by_the_majority_class() -> None:
    metric = BalancedAccuracy(task=TASK)
    targets = torch.tensor([0] * 9 + [1])
    always_upper = torch.tensor([[1.0, 0.0]]).repeat(10, 1)
    metric.update(always_upper, targets)
    assert metric.compute() == pytest.approx(0.5)  # plain accuracy would say 0.9
    assert BalancedAccuracy.goal == "max"


def test_balanced_accuracy_update_never_reads_values_back() -> None:
    """On the meta device, any host read (``.item()``, boolean indexing, ``bincount``) fails:
    ``update`` must only queue device work, so CUDA training never syncs per step."""
    metric = BalancedAccuracy(task=Classification(["a", "b", "c"]))
    for _ in range(2):
        metric.update(
            torch.empty(8, 3, device="meta"), torch.empty(8, dtype=torch.int64, device="meta")
        )
    assert metric._counts is not None and metric._counts.device.type == "meta"


# ------------------------------------------------------------------ end to end (CLI)
def test_example_config_trains_via_thelper_run(
    tmp_path: Path, one_thread: None, clean_thelper_env: None
) -> None:
    get_plugin_manager(refresh=True)  # a fresh process-wide manager: nothing blocked
    epochs = yaml.safe_load(MOONS_CONFIG.read_text())["trainer"]["epochs"]
    assert main(["config", "validate", str(MOONS_CONFIG)]) == 0
    code = main(
        ["run", str(MOONS_CONFIG), "--save-dir", str(tmp_path), "--set", "trainer.device=cpu"]
    )
    assert code == 0
    session_dir = tmp_path / "example-moons"
    record = json.loads((session_dir / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["test"]["split"] == "test"
    assert record["test"]["accuracy"] >= 0.9
    assert record["test"]["balanced_accuracy"] >= 0.9
    assert record["best"]["metric"] == "balanced_accuracy"

    path = session_dir / "output" / "example-moons" / EPOCHS_CSV
    lines = path.read_text().splitlines()
    assert lines[0] == "epoch,split,loss,accuracy,balanced_accuracy,lr"
    assert len(lines) == 1 + 2 * epochs  # header, then train and valid per epoch
    rows = list(csv.DictReader(lines))
    history = record["metrics"]["valid"]
    valid = [r for r in rows if r["split"] == "valid"]
    assert [int(r["epoch"]) for r in valid] == [h["epoch"] for h in history]
    assert [float(r["balanced_accuracy"]) for r in valid] == pytest.approx(
        [h["balanced_accuracy"] for h in history], rel=1e-5
    )


def test_epoch_csv_continues_on_resume(
    tmp_path: Path, one_thread: None, clean_thelper_env: None
) -> None:
    pm = get_plugin_manager(refresh=True)
    assert (
        main(
            [
                "run",
                str(MOONS_CONFIG),
                "--save-dir",
                str(tmp_path),
                "--set",
                "trainer.epochs=2",
                "--set",
                "trainer.device=cpu",
                "--set",
                "datasets.moons.params.n_samples=200",
            ]
        )
        == 0
    )
    session_dir = tmp_path / "example-moons"
    session = resume_session(session_dir, ["trainer.epochs=3"], pm=pm)
    assert session.status == "completed"
    lines = (session.output_dir / EPOCHS_CSV).read_text().splitlines()
    assert lines[0].startswith("epoch,split,")
    assert lines.count(lines[0]) == 1  # the header is written once
    assert [line.split(",")[:2] for line in lines[1:]] == [
        [str(e), s] for e in (1, 2, 3) for s in ("train", "valid")
    ]
