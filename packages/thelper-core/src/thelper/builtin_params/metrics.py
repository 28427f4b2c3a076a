"""Params models of the core's metrics.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Literal

from pydantic import Field

from thelper.params import Params

__all__ = [
    "AccuracyParams", "ConfusionMatrixParams", "ClassificationReportParams",
    "RegressionMetricParams", "ROCAUCParams", "PredictionLoggerParams", "MultiLabelF1Params",
    "MultiLabelMAPParams",
]


class AccuracyParams(Params):
    """Top-k accuracy: fraction (0..1) of samples whose label is among the k best scores."""

    top_k: int = Field(default=1, ge=1)
    """k: a prediction counts when the true class is among the k highest logits."""


class ConfusionMatrixParams(Params):
    """Confusion matrix (rows: true class, columns: predicted), written as CSV and PNG."""

    normalize: Literal["true", "pred", "all"] | None = None
    """Normalise counts over true rows, predicted columns or everything (PNG only)."""


class ClassificationReportParams(Params):
    """Per-class precision, recall, F1 and support (scikit-learn's report)."""

    digits: int = Field(default=4, ge=1, le=8)
    """Decimal digits in the text report."""


class RegressionMetricParams(Params):
    """MAE, MSE or RMSE over every predicted value of the split (no params)."""


class ROCAUCParams(Params):
    """Area under the ROC curve, one class against the rest (scikit-learn)."""

    average: Literal["macro", "weighted"] = "macro"
    """Mean of the per-class AUCs (``macro``) or weighted by each class's positives."""
    ignore_index: int = -100
    """Target value to skip."""


class PredictionLoggerParams(Params):
    """Per-sample predictions written as CSV or JSON."""

    format: Literal["csv", "json"] = "csv"
    """File format of ``<name>.csv`` / ``<name>.json``."""
    top_k: int = Field(default=3, ge=1)
    """Classification: best classes listed per sample, with their probabilities."""
    max_samples: int | None = Field(default=None, ge=1)
    """Write at most this many samples (``null``: all)."""


class MultiLabelF1Params(Params):
    """F1 score of multi-label predictions (a label is predicted when its sigmoid reaches
    the threshold), as scikit-learn's ``f1_score``."""

    average: Literal["micro", "macro"] = "micro"
    """``micro``: F1 of the pooled label decisions; ``macro``: mean of the per-label F1."""
    threshold: float | None = Field(default=None, gt=0.0, lt=1.0)
    """Probability threshold; ``null`` uses the task's ``threshold`` (0.5 by default)."""


class MultiLabelMAPParams(Params):
    """Mean average precision over labels (scikit-learn's ``average_precision_score``), with
    a per-label CSV report."""

    average: Literal["macro", "micro", "weighted"] = "macro"
    """``macro``: mean of the per-label APs; ``weighted``: weighted by each label's
    positives; ``micro``: AP of the pooled decisions."""
