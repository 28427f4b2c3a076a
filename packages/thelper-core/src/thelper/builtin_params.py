"""Params models of the core's built-in components (torch-free; used for validation).

:mod:`thelper._builtins` refers to them by ``"thelper.builtin_params:Name"`` strings, so this
module (and pydantic) is imported only when a config names a built-in component.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built, about a quarter of
# this module's import time, paid by ``thelper config validate``.

from typing import Any, Literal

from pydantic import Field, field_validator

from thelper.params import Params

__all__ = [
    "ClassificationParams", "RegressionParams", "NoParams", "SklearnDatasetParams",
    "TorchDatasetParams", "Hdf5DatasetParams", "MLPParams",
    "CrossEntropyParams", "BCEWithLogitsParams", "ReductionParams", "SmoothL1Params",
    "SGDParams", "AdamParams", "AdamWParams", "RMSpropParams", "AdagradParams",
    "StepLRParams", "MultiStepLRParams", "ExponentialLRParams", "CosineAnnealingLRParams",
    "ReduceLROnPlateauParams", "AccuracyParams", "ConfusionMatrixParams",
    "ClassificationReportParams", "DefaultTrainerParams", "SklearnRegressionParams",
    "RegressionMetricParams", "ROCAUCParams", "PredictionLoggerParams",
]

Reduction = Literal["mean", "sum"]


class NoParams(Params):
    """This component takes no params."""


# ------------------------------------------------------------------------------- tasks
def _key_as_str(value: Any) -> Any:
    """Sample keys are strings; 0.6 configs name tuple positions as ints (``input_key: 0``)."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ClassificationParams(Params):
    """Params of the ``classification`` task."""

    class_names: list[str] = Field(min_length=1)
    """Class names, in label-index order (index i is the model's output i)."""
    input_key: str = "input"
    """Key of the image/features in each sample (``"0"`` for tuple samples)."""
    label_key: str = "label"
    """Key of the class index (or class name) in each sample (``"1"`` for tuple samples)."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along for reports (e.g. ``path``)."""

    @field_validator("class_names", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                    for v in value]
        return value

    @field_validator("class_names")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        dupes = sorted({v for v in value if value.count(v) > 1})
        if dupes:
            raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
        return value

    _key_str = field_validator("input_key", "label_key", mode="before")(_key_as_str)


Bound = float | list[float]


class RegressionParams(Params):
    """Params of the ``regression`` task."""

    target_shape: list[int] = Field(default_factory=lambda: [1])
    """Shape of one target (and of one prediction) without the batch dimension, e.g. ``[1]``
    for a scalar, ``[3]`` for three values per sample."""
    target_min: Bound | None = None
    """Lowest valid value (one number, or one per output): evaluation predictions are
    clamped to it."""
    target_max: Bound | None = None
    """Highest valid value (one number, or one per output): evaluation predictions are
    clamped to it."""
    target_mean: Bound | None = None
    """Standardise targets for the loss: the model predicts ``(y - mean) / std``; metrics and
    predictions are in target units. One number or one per output."""
    target_std: Bound | None = None
    """Standard deviation used with ``target_mean`` (strictly positive)."""
    input_key: str = "input"
    """Key of the input in each sample."""
    label_key: str = "target"
    """Key of the target values in each sample."""
    meta_keys: list[str] = Field(default_factory=list)
    """Keys carried along for reports (e.g. ``path``)."""

    @field_validator("target_shape")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"target_shape sizes must be >= 1 (got {value})")
        return value

    @field_validator("target_std")
    @classmethod
    def _std_positive(cls, value: Bound | None) -> Bound | None:
        values = value if isinstance(value, list) else [value]
        if value is not None and any(v <= 0 for v in values):
            raise ValueError(f"target_std must be > 0 (got {value})")
        return value

    _key_str = field_validator("input_key", "label_key", mode="before")(_key_as_str)


# ---------------------------------------------------------------------------- datasets
class SklearnDatasetParams(Params):
    """A data set bundled with scikit-learn (no download)."""

    name: Literal["digits", "iris", "wine", "breast_cancer"] = "digits"
    """``digits``: 1,797 8x8 handwritten digits (10 classes, UCI ML optical digits);
    ``iris``, ``wine``, ``breast_cancer``: tabular UCI data sets."""
    as_image: bool = True
    """digits only: samples as ``(1, 8, 8)`` images (else flat ``(64,)`` vectors)."""
    scale: bool = True
    """digits only: scale pixel values from 0..16 to 0..1."""


class SklearnRegressionParams(Params):
    """A regression data set bundled with scikit-learn (no download)."""

    name: Literal["diabetes", "linnerud"] = "diabetes"
    """``diabetes``: 442 patients, 10 features, disease progression after one year (Efron et
    al., 2004); ``linnerud``: 20 samples, 3 features, 3 targets."""
    standardize: bool = True
    """Give the task the targets' mean and standard deviation, so that the model learns
    standardised targets while metrics stay in target units."""


class TorchDatasetParams(Params):
    """Any ``torch.utils.data.Dataset`` class by import path (allow-listed prefixes)."""

    class_path: str = Field(pattern=r"^[A-Za-z_][\w.]*[.:][A-Za-z_]\w*$")
    """Fully qualified class, e.g. ``torchvision.datasets.FakeData``; its module must start
    with an allowed prefix (torch, torchvision, thelper, or ``imports.allow``)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Constructor keyword arguments."""


class Hdf5DatasetParams(Params):
    """One split of an HDF5 archive written by ``thelper split``."""

    path: str = Field(min_length=1)
    """The ``.h5`` archive."""
    split: Literal["train", "valid", "test"] = "train"
    """Which split of the archive to read."""


class ClassBalancedSamplerParams(Params):
    """Rebalance classes: weight ``(1 / n_c) ** power`` per sample of class ``c``."""

    power: float = Field(default=1.0, ge=0.0)
    """0 keeps the natural class distribution, 1 draws every class equally often."""
    num_samples: int | None = Field(default=None, ge=1)
    """Draws per epoch (default: the split size)."""


class ClassWeightedSamplerParams(Params):
    """Draw classes with fixed probabilities proportional to ``weights``."""

    weights: dict[str, float] = Field(min_length=1)
    """Class name → relative weight (missing classes are never drawn)."""
    num_samples: int | None = Field(default=None, ge=1)
    """Draws per epoch (default: the split size)."""


# ------------------------------------------------------------------------------ models
class MLPParams(Params):
    """A multi-layer perceptron for flat feature vectors."""

    in_features: int = Field(ge=1)
    """Size of each input vector."""
    hidden: list[int] = Field(default_factory=lambda: [64])
    """Width of each hidden layer."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout probability after each hidden layer."""


# ------------------------------------------------------------------------------ losses
class CrossEntropyParams(Params):
    """``torch.nn.CrossEntropyLoss``."""

    weight: list[float] | None = None
    """Per-class weights (length = number of classes)."""
    ignore_index: int = -100
    """Target value that does not contribute to the loss."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Label smoothing amount (Szegedy et al., 2016)."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class BCEWithLogitsParams(Params):
    """``torch.nn.BCEWithLogitsLoss``."""

    pos_weight: list[float] | None = None
    """Weight of positive examples per class."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class ReductionParams(Params):
    """A loss with only a reduction mode."""

    reduction: Reduction = "mean"
    """How to reduce over the batch."""


class SmoothL1Params(Params):
    """``torch.nn.SmoothL1Loss``."""

    beta: float = Field(default=1.0, ge=0.0)
    """Threshold between the L1 and L2 regimes."""
    reduction: Reduction = "mean"
    """How to reduce over the batch."""


# -------------------------------------------------------------------------- optimizers
class SGDParams(Params):
    """``torch.optim.SGD``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    momentum: float = Field(default=0.0, ge=0.0)
    """Momentum factor."""
    dampening: float = Field(default=0.0, ge=0.0)
    """Dampening for momentum."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    nesterov: bool = False
    """Use Nesterov momentum."""


class AdamParams(Params):
    """``torch.optim.Adam`` (Kingma & Ba, 2015)."""

    lr: float = Field(default=1e-3, gt=0.0)
    """Learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Coefficients of the running averages of the gradient and its square."""
    eps: float = Field(default=1e-8, gt=0.0)
    """Term added to the denominator for numerical stability."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    amsgrad: bool = False
    """Use the AMSGrad variant."""


class AdamWParams(AdamParams):
    """``torch.optim.AdamW`` (Loshchilov & Hutter, 2019)."""

    weight_decay: float = Field(default=0.01, ge=0.0)
    """Decoupled weight decay."""


class RMSpropParams(Params):
    """``torch.optim.RMSprop``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    alpha: float = Field(default=0.99, gt=0.0, le=1.0)
    """Smoothing constant."""
    eps: float = Field(default=1e-8, gt=0.0)
    """Term added to the denominator for numerical stability."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""
    momentum: float = Field(default=0.0, ge=0.0)
    """Momentum factor."""
    centered: bool = False
    """Normalise by an estimate of the gradient's variance."""


class AdagradParams(Params):
    """``torch.optim.Adagrad``."""

    lr: float = Field(default=0.01, gt=0.0)
    """Learning rate."""
    lr_decay: float = Field(default=0.0, ge=0.0)
    """Learning-rate decay."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    """L2 penalty."""


# -------------------------------------------------------------------------- schedulers
class StepLRParams(Params):
    """``torch.optim.lr_scheduler.StepLR``: multiply the lr by ``gamma`` every ``step_size``
    epochs."""

    step_size: int = Field(ge=1)
    """Period of the decay, in epochs."""
    gamma: float = Field(default=0.1, gt=0.0)
    """Multiplicative factor."""


class MultiStepLRParams(Params):
    """``torch.optim.lr_scheduler.MultiStepLR``."""

    milestones: list[int] = Field(min_length=1)
    """Epochs at which the lr is multiplied by ``gamma``."""
    gamma: float = Field(default=0.1, gt=0.0)
    """Multiplicative factor."""


class ExponentialLRParams(Params):
    """``torch.optim.lr_scheduler.ExponentialLR``."""

    gamma: float = Field(gt=0.0)
    """Multiplicative factor applied every epoch."""


class CosineAnnealingLRParams(Params):
    """``torch.optim.lr_scheduler.CosineAnnealingLR`` (Loshchilov & Hutter, 2017)."""

    T_max: int = Field(ge=1)
    """Half-period of the cosine, in epochs."""
    eta_min: float = Field(default=0.0, ge=0.0)
    """Minimum learning rate."""


class ReduceLROnPlateauParams(Params):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau``: reduce the lr when ``step_metric``
    stops improving."""

    mode: Literal["min", "max"] | None = None
    """``min`` or ``max``; defaults to the step metric's goal."""
    factor: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Multiplicative factor of the reduction."""
    patience: int = Field(default=10, ge=0)
    """Epochs without improvement before reducing."""
    threshold: float = Field(default=1e-4, ge=0.0)
    """Minimum relative change that counts as an improvement."""
    cooldown: int = Field(default=0, ge=0)
    """Epochs to wait after a reduction."""
    min_lr: float = Field(default=0.0, ge=0.0)
    """Lower bound of the learning rate."""


# ----------------------------------------------------------------------------- metrics
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


# ----------------------------------------------------------------------------- trainer
class DefaultTrainerParams(Params):
    """The generic supervised epoch loop."""

    grad_clip_norm: float | None = Field(default=None, gt=0.0)
    """Clip the global gradient norm to this value before each optimizer step."""
    log_every_n_steps: int = Field(default=20, ge=1)
    """Refresh the running loss in the progress bar every N steps (avoids a
    device-to-host sync at every step)."""
