"""Core additions of the vision task family: the ``regression`` task, MAE/MSE/RMSE, ROC AUC,
the prediction logger and the scikit-learn regression data sets (no image involved; kept here
with the rest of the task family)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from thelper.consumers import PredictionLogger
from thelper.exceptions import ConfigError
from thelper.metrics import ROCAUC, MeanAbsoluteError, MeanSquaredError, RootMeanSquaredError
from thelper.tasks import Classification, Regression, task_from_dict


def test_regression_metrics_match_scikit_learn():
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    g = torch.Generator().manual_seed(0)
    y = torch.randn(50, 3, generator=g)
    p = y + 0.3 * torch.randn(50, 3, generator=g)
    metrics = [MeanAbsoluteError(), MeanSquaredError(), RootMeanSquaredError()]
    for m in metrics:
        for chunk in range(0, 50, 16):  # several batches: reduced over the whole split
            m.update(p[chunk:chunk + 16], y[chunk:chunk + 16])
    mae, mse, rmse = (m.compute() for m in metrics)
    assert mae == pytest.approx(mean_absolute_error(y, p), rel=1e-6)
    assert mse == pytest.approx(mean_squared_error(y, p), rel=1e-6)
    assert rmse == pytest.approx(mean_squared_error(y, p) ** 0.5, rel=1e-6)
    assert MeanAbsoluteError().compute() is None


def test_one_target_per_sample_broadcasts_and_mismatch_fails():
    m = MeanAbsoluteError()
    m.update(torch.tensor([[1.0], [2.0]]), torch.tensor([0.0, 0.0]))
    assert m.compute() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="different numbers of values"):
        m.update(torch.zeros(2, 3), torch.zeros(2, 2))


def test_roc_auc_matches_scikit_learn(tmp_path):
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (80,), generator=g)
    logits = torch.randn(80, 4, generator=g) + 2 * torch.nn.functional.one_hot(y, 4)
    task = Classification(["a", "b", "c", "d"])
    for average in ("macro", "weighted"):
        m = ROCAUC(average=average, task=task)
        m.update(logits[:40], y[:40])
        m.update(logits[40:], y[40:])
        expected = roc_auc_score(y.numpy(), logits.softmax(1).numpy(), multi_class="ovr",
                                 average=average)
        assert m.compute() == pytest.approx(expected)
    report = m.report(tmp_path, "roc")
    assert report.figure is not None
    rows = list(csv.reader((tmp_path / "roc.csv").open()))
    assert rows[0] == ["class", "auc", "positives"] and len(rows) == 5
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_roc_auc_binary_and_single_logit():
    from sklearn.metrics import roc_auc_score

    y = torch.tensor([0, 1, 1, 0, 1, -100])
    scores = torch.tensor([0.1, 0.8, 0.4, 0.35, 0.9, 0.5])
    two = ROCAUC()
    two.update(torch.stack([-scores, scores], dim=1), y)
    one = ROCAUC()
    one.update(scores.logit(), y)
    expected = roc_auc_score(y[:5].numpy(), scores[:5].numpy())
    assert two.compute() == pytest.approx(expected) and one.compute() == pytest.approx(expected)
    lonely = ROCAUC()
    lonely.update(torch.randn(3, 2), torch.tensor([1, 1, 1]))
    assert lonely.compute() is None  # one class only: AUC undefined


def test_regression_task_standardises_targets_and_clamps():
    task = Regression(target_shape=[1], target_min=0.0, target_max=100.0, target_mean=50.0,
                      target_std=10.0)
    model = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.constant_(model.bias, 10.0)  # raw output 10 -> 50 + 10 * 10 = 150
    batch = {"input": torch.zeros(4, 2), "target": torch.tensor([40.0, 50.0, 60.0, 70.0])}
    model.train()
    outputs, targets, loss = task.step(model, torch.nn.MSELoss(), batch, "cpu")
    assert targets.shape == (4, 1) and float(outputs.detach()[0, 0]) == pytest.approx(150.0)
    expected = torch.mean((10.0 - (batch["target"] - 50.0) / 10.0) ** 2)
    assert float(loss.detach()) == pytest.approx(float(expected))
    model.eval()
    outputs, _, _ = task.step(model, torch.nn.MSELoss(), batch, "cpu")
    assert float(outputs.detach().max()) == 100.0
    assert task.num_outputs == task.num_classes == 1
    assert task_from_dict(task.to_dict()) == task
    task.check_outputs(outputs, "net")
    with pytest.raises(ConfigError, match="expects"):
        task.check_outputs(torch.zeros(4, 2), "net")
    with pytest.raises(ConfigError, match="both"):
        Regression(target_mean=1.0)


def test_prediction_logger_classification_and_regression(tmp_path):
    clf = PredictionLogger(top_k=2, task=Classification(["cat", "dog", "cow"]))
    clf.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0, 1]))
    clf.report(tmp_path, "clf")
    rows = list(csv.DictReader((tmp_path / "clf.csv").open()))
    assert rows[0]["prediction_name"] == "cat" and rows[1]["target_name"] == "dog"
    assert rows[1]["top1"] == "cow" and float(rows[0]["top1_score"]) > 0.5
    reg = PredictionLogger(format="json", max_samples=3, task=Regression(target_shape=[2]))
    reg.update(torch.arange(8.0).reshape(4, 2), torch.zeros(4, 2))
    reg.report(tmp_path, "reg")
    import json

    data = json.loads((tmp_path / "reg.json").read_text())
    assert len(data) == 3 and data[2] == {"index": 2, "target_0": 0.0, "target_1": 0.0,
                                          "prediction_0": 4.0, "prediction_1": 5.0}


def test_sklearn_regression_dataset(registry):
    ds = registry.build("dataset", "sklearn_regression", {"name": "diabetes"})
    assert len(ds) == 442 and ds[0]["input"].shape == (10,) and ds[0]["target"].shape == (1,)
    y = ds.targets_values.numpy()
    assert ds.task.target_mean == pytest.approx(float(y.mean()), rel=1e-5)
    multi = registry.build("dataset", "sklearn_regression",
                           {"name": "linnerud", "standardize": False})
    assert multi.task.target_shape == [3] and multi.task.target_mean is None
    assert np.isfinite(multi[0]["target"].numpy()).all()
