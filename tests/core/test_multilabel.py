"""Multi-label classification in the core: the ``multilabel_classification`` task, the
``multilabel_f1`` and ``multilabel_map`` metrics, their validation rules, and a real training
session on multi-label targets derived from scikit-learn's digits."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from thelper.config import check_document, document_from_dict
from thelper.exceptions import ConfigError
from thelper.hookspecs import hookimpl
from thelper.metrics import MultiLabelAveragePrecision, MultiLabelF1, merge_states
from thelper.plugins import ThelperPluginManager, get_plugin_manager
from thelper.registry import ComponentInfo
from thelper.tasks import MultiLabelClassification, task_from_dict

LABELS = ["even", "greater_than_4", "zero"]


def digit_labels(digits: np.ndarray) -> np.ndarray:
    """Multi-hot ``(N, 3)`` float32: the digit is even, is > 4, is 0."""
    return np.stack([digits % 2 == 0, digits > 4, digits == 0], axis=1).astype(np.float32)


class DigitsMultiLabel(Dataset):
    """scikit-learn's 1,797 digits as ``(64,)`` float32 in [0, 1] with multi-hot labels."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        self.inputs = torch.from_numpy((bunch.data / 16.0).astype(np.float32))
        self.labels = torch.from_numpy(digit_labels(bunch.target))
        self.task = MultiLabelClassification(LABELS)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        return {"input": self.inputs[index], "label": self.labels[index]}


class _Plugin:
    @hookimpl
    def thelper_register_components(self) -> list[ComponentInfo]:
        return [ComponentInfo("dataset", "digits_multilabel", f"{__name__}:DigitsMultiLabel",
                              description="digits with multi-hot labels (test)",
                              metadata={"provides_task": True,
                                        "task": "multilabel_classification"})]


CONFIG = {
    "name": "digits-multilabel",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "digits_multilabel"}},
    "loaders": {"batch_size": 64, "train_split": {"digits": 0.7},
                "valid_split": {"digits": 0.15}, "test_split": {"digits": 0.15}},
    "model": {"type": "mlp", "params": {"in_features": 64, "hidden": [64]}},
    "trainer": {"epochs": 8, "device": "cpu", "progress": False, "monitor": "f1",
                "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                "metrics": {"f1": {"type": "multilabel_f1"},
                            "f1_macro": {"type": "multilabel_f1",
                                         "params": {"average": "macro"}},
                            "map": {"type": "multilabel_map"}}},
}


# ------------------------------------------------------------------------------ task
def test_task_targets_decoding_and_round_trip():
    task = MultiLabelClassification(LABELS, threshold=0.6)
    assert task.num_classes == 3 and task.default_loss() == ("bce_with_logits", {})
    batch = {"input": torch.zeros(2, 4), "label": torch.tensor([[1, 0, 1], [0, 1, 0]])}
    target = task.get_target(batch)
    assert target.dtype == torch.float32 and target.shape == (2, 3)
    logits = torch.tensor([[0.5, 0.0, -1.0], [0.3, 2.0, 0.41]])  # sigmoid(0.41) = 0.601
    assert task.decode(logits).tolist() == [[1, 0, 0], [0, 1, 1]]
    assert task_from_dict(json.loads(json.dumps(task.to_dict()))) == task
    with pytest.raises(ValueError, match=r"\(N, 3\); got \(2,\)"):
        task.get_target({"label": torch.tensor([0, 1])})
    with pytest.raises(ConfigError, match=r"expected \(N, 3\)"):
        task.check_outputs(torch.zeros(2, 10), "mlp")
    with pytest.raises(ConfigError, match="threshold"):
        MultiLabelClassification(LABELS, threshold=1.0)
    built = get_plugin_manager().registry.build(
        "task", "multilabel", {"class_names": LABELS, "threshold": 0.6})
    assert built == task


# --------------------------------------------------------------------------- metrics
@pytest.fixture(scope="module")
def scored():
    """Noisy logits for real multi-label targets: 300 digits, 3 labels."""
    from sklearn.datasets import load_digits

    y = digit_labels(load_digits().target[:300])
    rng = np.random.default_rng(0)
    logits = (y * 2 - 1) * 1.5 + rng.normal(0, 1.5, y.shape)
    return torch.from_numpy(logits.astype(np.float32)), torch.from_numpy(y)


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_f1_matches_scikit_learn_and_merges_across_ranks(scored, average):
    from sklearn.metrics import f1_score

    logits, y = scored
    expected = f1_score(y.numpy(), (torch.sigmoid(logits) >= 0.5).numpy(), average=average,
                        zero_division=0)
    metric = MultiLabelF1(average=average, task=MultiLabelClassification(LABELS))
    for part in range(0, 300, 64):
        metric.update(logits[part:part + 64], y[part:part + 64])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)
    ranks = []  # two ranks seeing halves: the merged state gives the same value
    for half in (slice(0, 150), slice(150, 300)):
        m = MultiLabelF1(average=average)
        m.update(logits[half], y[half])
        ranks.append(m.state_dict())
    merged = MultiLabelF1(average=average)
    merged.load_state_dict(merge_states(merged, ranks))
    assert merged.compute() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("average", ["macro", "weighted", "micro"])
def test_map_matches_scikit_learn(scored, average, tmp_path):
    from sklearn.metrics import average_precision_score

    logits, y = scored
    expected = average_precision_score(y.numpy(), torch.sigmoid(logits).double().numpy(),
                                       average=average)
    metric = MultiLabelAveragePrecision(average=average,
                                        task=MultiLabelClassification(LABELS))
    metric.update(logits[:100], y[:100])
    metric.update(logits[100:], y[100:])
    assert metric.compute() == pytest.approx(expected, abs=1e-12)
    report = metric.report(tmp_path, "map")
    rows = report.files[0].read_text().splitlines()
    assert rows[0] == "label,average_precision,positives,predicted_positives"
    assert [r.split(",")[0] for r in rows[1:]] == LABELS
    assert int(rows[3].split(",")[2]) == int(y[:, 2].sum())


def test_label_without_positives_is_left_out_of_macro_map():
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]])
    metric = MultiLabelAveragePrecision()
    metric.update(torch.tensor([[2.0, 0.0], [-1.0, 1.0], [1.0, -1.0]]), y)
    assert metric.per_label() == {0: 1.0} and metric.compute() == 1.0


def test_single_label_targets_are_one_hot():
    """Class indices ``(N,)`` score as one-hot multi-label targets."""
    metric = MultiLabelF1()
    metric.update(torch.tensor([[3.0, -3.0], [-3.0, 3.0]]), torch.tensor([0, 1]))
    assert metric.compute() == 1.0


# ------------------------------------------------------------------------- validation
def _task_config() -> dict:
    cfg = copy.deepcopy(CONFIG)
    cfg["datasets"] = {"digits": {
        "type": "sklearn", "params": {"name": "digits", "as_image": False},
        "task": {"type": "multilabel_classification", "params": {"class_names": LABELS}}}}
    return cfg


def test_validation_accepts_multilabel_components_and_refuses_single_label_ones():
    registry = get_plugin_manager().registry
    cfg = _task_config()
    cfg["trainer"]["optimization"]["loss"] = {"type": "bce_with_logits"}
    _, issues = check_document(document_from_dict(cfg), registry)
    assert not issues, issues
    cfg["trainer"]["metrics"]["acc"] = {"type": "accuracy"}
    cfg["trainer"]["optimization"]["loss"] = {"type": "cross_entropy"}
    _, issues = check_document(document_from_dict(cfg), registry)
    messages = {i.path: i.message for i in issues}
    assert "does not fit the 'multilabel_classification' task" in \
        messages["trainer.metrics.acc.type"]
    assert "multilabel_f1" in messages["trainer.metrics.acc.type"]  # what fits instead
    assert "bce_with_logits" in messages["trainer.optimization.loss.type"]


def test_task_params_are_validated():
    cfg = _task_config()
    cfg["datasets"]["digits"]["task"]["params"] = {"class_names": ["a", "a"],
                                                   "threshold": 2}
    _, issues = check_document(document_from_dict(cfg), get_plugin_manager().registry)
    text = "\n".join(f"{i.path}: {i.message}" for i in issues)
    assert "class names must be unique" in text and "threshold" in text


# --------------------------------------------------------------------------- training
def test_session_learns_multilabel_digits_above_constant_baselines(thelper_tiny_session,
                                                                  tmp_path):
    """A real session: the MLP beats the best constant predictors on the test split (all
    labels predicted present for F1; each label's prevalence as its score for mAP)."""
    from sklearn.datasets import load_digits

    pm = ThelperPluginManager(blocked=("tensorboard",))
    pm.register(_Plugin(), name="multilabel-test")
    session = thelper_tiny_session(CONFIG, pm)
    metrics = session.test_metrics
    y = digit_labels(load_digits().target)
    p = float(y.mean())
    all_present_f1 = 2 * p / (1 + p)  # micro F1 of predicting every label: ~0.54
    prevalence_map = float(y.mean(axis=0).mean())  # AP of a constant score = prevalence
    assert metrics["f1"] > all_present_f1 + 0.25, metrics
    assert metrics["map"] > prevalence_map + 0.4, metrics
    assert metrics["f1_macro"] > 0.7, metrics
    task = json.loads((session.session_dir / "logs" / "task.json").read_text())
    assert task["type"] == "multilabel_classification"
    assert any((session.session_dir / "output").rglob("map.csv"))
    _check_predictions_csv(session, tmp_path)


def _check_predictions_csv(session, tmp_path) -> None:
    """The session predicts through the core Predictor and its multi-label writer:
    ``predictions.csv`` lists the labels present and each label's probability."""
    import csv

    from thelper.predict import Predictor
    from thelper.writers import Source

    predictor = Predictor.load(session.session_dir)
    data = DigitsMultiLabel()
    x, y = data.inputs[:200], data.labels[:200]
    probs = predictor.predict(x)
    assert probs.shape == (200, 3) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0.0 and float(probs.max()) <= 1.0
    writer = predictor.writer(tmp_path / "infer")
    writer.write([Source(f"digit{i}", f"digit{i}") for i in range(200)], probs)
    (path,) = writer.close()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["input", "labels", "p_even", "p_greater_than_4", "p_zero"]
    predicted = torch.tensor([[label in r["labels"].split(";") for label in LABELS]
                              for r in rows], dtype=torch.float32)
    assert torch.equal(predicted, (probs >= 0.5).float())
    assert float((predicted == y).float().mean()) > 0.85
    assert float(rows[7]["p_zero"]) == pytest.approx(float(probs[7, 2]), abs=1e-6)
