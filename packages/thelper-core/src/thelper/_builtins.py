"""The core's built-in components, registered through the plugin manager like any plugin.

The manager knows this module only by name (``BUILTIN_PLUGINS["core"]`` in
:mod:`thelper.plugins`) and imports it when it loads; ``-p no:core`` blocks it.

Data only, like any plugin's registration: factories and params models are lazy
``"module:attr"`` strings, so that importing this module (every ``thelper`` command does)
imports neither torch nor pydantic. The params models live in :mod:`thelper.builtin_params`
and are imported when a config names one of these components.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thelper.hookspecs import hookimpl
from thelper.registry import ComponentInfo as C

if TYPE_CHECKING:  # pragma: no cover
    import typer

# ``metadata["tasks"]``: the task types a loss or metric fits (``thelper config validate``
# refuses it on another task; see :mod:`thelper.config.rules`). ``metadata["task"]``: the
# task type of a dataset that provides its own; ``metadata["paths"]``: its params that name
# local files (validation warns when they do not exist).
_CLASSIFY = {"tasks": ("classification", "segmentation")}
_REGRESS = {"tasks": ("regression", "super_resolution", "autoencoding")}


@hookimpl
def thelper_register_components() -> list[C]:
    """Tasks, datasets, losses, optimizers, schedulers, metrics and the default trainer."""
    return [
        # tasks
        C("task", "classification", "thelper.tasks:Classification",
          "thelper.builtin_params.tasks:ClassificationParams",
          aliases=("thelper.tasks.Classification",),
          description="single-label classification into named classes"),
        C("task", "regression", "thelper.tasks:Regression",
          "thelper.builtin_params.tasks:RegressionParams",
          aliases=("thelper.tasks.Regression", "thelper.tasks.regr.Regression"),
          description="regression of real values of a fixed shape"),
        C("task", "multilabel_classification", "thelper.tasks:MultiLabelClassification",
          "thelper.builtin_params.tasks:MultiLabelClassificationParams",
          aliases=("multilabel", "multi_label_classification"),
          description="multi-label classification: a multi-hot target, one sigmoid per label"),
        # datasets
        C("dataset", "sklearn_regression", "thelper.sklearn_regression:SklearnRegressionDataset",
          "thelper.builtin_params.data:SklearnRegressionParams",
          description="regression data sets bundled with scikit-learn (diabetes, linnerud)",
          metadata={"provides_task": True, "task": "regression"}),
        C("dataset", "sklearn", "thelper.data.datasets:SklearnDataset",
          "thelper.builtin_params.data:SklearnDatasetParams", aliases=("sklearn_dataset",),
          description="data sets bundled with scikit-learn (digits, iris, wine, ...)",
          metadata={"provides_task": True, "task": "classification"}),
        C("dataset", "torch_dataset", "thelper.data.datasets:TorchDatasetAdapter",
          "thelper.builtin_params.data:TorchDatasetParams", aliases=("import",),
          description="any torch Dataset class by import path (needs a task block)"),
        C("dataset", "hdf5", "thelper.tools.archive:Hdf5Dataset",
          "thelper.builtin_params.data:Hdf5DatasetParams",
          description="one split of an HDF5 archive written by 'thelper split'",
          metadata={"provides_task": True, "paths": ("path",), "disjoint_by": ("split",)}),
        # samplers
        C("sampler", "class_balanced", "thelper.data.samplers:class_balanced",
          "thelper.builtin_params.data:ClassBalancedSamplerParams",
          aliases=("thelper.data.samplers.WeightedSubsetRandomSampler",),
          description="rebalance classes by inverse frequency (with a power)"),
        C("sampler", "class_weighted", "thelper.data.samplers:class_weighted",
          "thelper.builtin_params.data:ClassWeightedSamplerParams",
          description="draw classes with fixed relative weights"),
        # models
        C("model", "mlp", "thelper.nn:MLP", "thelper.builtin_params.models:MLPParams",
          description="multi-layer perceptron for flat feature vectors"),
        # losses
        C("loss", "cross_entropy", "thelper.optim:cross_entropy",
          "thelper.builtin_params.losses:CrossEntropyParams",
          aliases=("torch.nn.CrossEntropyLoss",), description="cross-entropy on logits",
          metadata=_CLASSIFY),
        C("loss", "nll", "torch.nn:NLLLoss", "thelper.builtin_params.losses:ReductionParams",
          aliases=("torch.nn.NLLLoss",), description="negative log-likelihood",
          metadata=_CLASSIFY),
        C("loss", "bce_with_logits", "thelper.optim:bce_with_logits",
          "thelper.builtin_params.losses:BCEWithLogitsParams",
          aliases=("torch.nn.BCEWithLogitsLoss",), description="binary cross-entropy on logits",
          metadata={"tasks": (*_REGRESS["tasks"], "multilabel_classification")}),
        C("loss", "mse", "torch.nn:MSELoss", "thelper.builtin_params.losses:ReductionParams",
          aliases=("torch.nn.MSELoss",), description="mean squared error", metadata=_REGRESS),
        C("loss", "l1", "torch.nn:L1Loss", "thelper.builtin_params.losses:ReductionParams",
          aliases=("torch.nn.L1Loss",), description="mean absolute error", metadata=_REGRESS),
        C("loss", "smooth_l1", "torch.nn:SmoothL1Loss",
          "thelper.builtin_params.losses:SmoothL1Params",
          aliases=("torch.nn.SmoothL1Loss",), description="Huber-like smooth L1",
          metadata=_REGRESS),
        # optimizers
        C("optimizer", "sgd", "torch.optim:SGD", "thelper.builtin_params.optim:SGDParams",
          aliases=("torch.optim.SGD",), description="stochastic gradient descent"),
        C("optimizer", "adam", "torch.optim:Adam", "thelper.builtin_params.optim:AdamParams",
          aliases=("torch.optim.Adam",), description="Adam"),
        C("optimizer", "adamw", "torch.optim:AdamW", "thelper.builtin_params.optim:AdamWParams",
          aliases=("torch.optim.AdamW",), description="Adam with decoupled weight decay"),
        C("optimizer", "rmsprop", "torch.optim:RMSprop",
          "thelper.builtin_params.optim:RMSpropParams",
          aliases=("torch.optim.RMSprop",), description="RMSprop"),
        C("optimizer", "adagrad", "torch.optim:Adagrad",
          "thelper.builtin_params.optim:AdagradParams",
          aliases=("torch.optim.Adagrad",), description="Adagrad"),
        # schedulers
        C("scheduler", "step_lr", "torch.optim.lr_scheduler:StepLR",
          "thelper.builtin_params.optim:StepLRParams",
          aliases=("torch.optim.lr_scheduler.StepLR",), description="step decay"),
        C("scheduler", "multistep_lr", "torch.optim.lr_scheduler:MultiStepLR",
          "thelper.builtin_params.optim:MultiStepLRParams",
          aliases=("torch.optim.lr_scheduler.MultiStepLR",),
          description="decay at milestones"),
        C("scheduler", "exponential_lr", "torch.optim.lr_scheduler:ExponentialLR",
          "thelper.builtin_params.optim:ExponentialLRParams",
          aliases=("torch.optim.lr_scheduler.ExponentialLR",),
          description="exponential decay"),
        C("scheduler", "cosine_annealing_lr", "torch.optim.lr_scheduler:CosineAnnealingLR",
          "thelper.builtin_params.optim:CosineAnnealingLRParams",
          aliases=("torch.optim.lr_scheduler.CosineAnnealingLR",), description="cosine decay"),
        C("scheduler", "reduce_lr_on_plateau", "thelper.optim:reduce_lr_on_plateau",
          "thelper.builtin_params.optim:ReduceLROnPlateauParams",
          aliases=("torch.optim.lr_scheduler.ReduceLROnPlateau",),
          description="reduce the lr when a metric stalls (needs step_metric)",
          metadata={"needs_metric": True}),
        # metrics
        C("metric", "accuracy", "thelper.metrics:Accuracy",
          "thelper.builtin_params.metrics:AccuracyParams",
          aliases=("thelper.optim.Accuracy", "thelper.optim.metrics.Accuracy"),
          description="top-k accuracy, a fraction in [0, 1]",
          metadata={"goal": "max", **_CLASSIFY}),
        C("metric", "confusion_matrix", "thelper.metrics:ConfusionMatrix",
          "thelper.builtin_params.metrics:ConfusionMatrixParams",
          aliases=("thelper.train.ConfusionMatrix", "thelper.optim.ConfusionMatrix"),
          description="confusion matrix as CSV, PNG and TensorBoard image", metadata=_CLASSIFY),
        C("metric", "classification_report", "thelper.metrics:ClassificationReport",
          "thelper.builtin_params.metrics:ClassificationReportParams",
          aliases=("thelper.train.ClassifReport",),
          description="per-class precision, recall, F1 and support",
          metadata={"tasks": ("classification",)}),
        C("metric", "mae", "thelper.metrics:MeanAbsoluteError",
          "thelper.builtin_params.metrics:RegressionMetricParams",
          aliases=("thelper.optim.MeanAbsoluteError", "thelper.optim.metrics.MeanAbsoluteError"),
          description="mean absolute error (lower is better)",
          metadata={"goal": "min", **_REGRESS}),
        C("metric", "mse", "thelper.metrics:MeanSquaredError",
          "thelper.builtin_params.metrics:RegressionMetricParams",
          aliases=("thelper.optim.MeanSquaredError", "thelper.optim.metrics.MeanSquaredError"),
          description="mean squared error (lower is better)",
          metadata={"goal": "min", **_REGRESS}),
        C("metric", "rmse", "thelper.metrics:RootMeanSquaredError",
          "thelper.builtin_params.metrics:RegressionMetricParams",
          description="root mean squared error (lower is better)",
          metadata={"goal": "min", **_REGRESS}),
        C("metric", "roc_auc", "thelper.metrics:ROCAUC",
          "thelper.builtin_params.metrics:ROCAUCParams",
          aliases=("thelper.optim.ROCCurve", "thelper.optim.metrics.ROCCurve"),
          description="area under the ROC curve, one class vs rest, with ROC curve plot",
          metadata={"goal": "max", "tasks": ("classification",)}),
        C("metric", "multilabel_f1", "thelper.metrics:MultiLabelF1",
          "thelper.builtin_params.metrics:MultiLabelF1Params", aliases=("f1_multilabel",),
          description="F1 of multi-label predictions (micro or macro), a fraction in [0, 1]",
          metadata={"goal": "max", "tasks": ("multilabel_classification",)}),
        C("metric", "multilabel_map", "thelper.metrics:MultiLabelAveragePrecision",
          "thelper.builtin_params.metrics:MultiLabelMAPParams",
          aliases=("multilabel_average_precision",),
          description="mean average precision over labels (scikit-learn), per-label CSV",
          metadata={"goal": "max", "tasks": ("multilabel_classification",)}),
        C("metric", "prediction_logger", "thelper.consumers:PredictionLogger",
          "thelper.builtin_params.metrics:PredictionLoggerParams",
          aliases=("thelper.train.ClassifLogger", "thelper.train.utils.ClassifLogger"),
          description="per-sample predictions written as CSV or JSON",
          metadata={"tasks": ("classification", "regression")}),
        # trainers
        C("trainer", "default", "thelper.train:Trainer",
          "thelper.builtin_params.trainer:DefaultTrainerParams",
          aliases=("thelper.train.ImageClassifTrainer", "classification"),
          description="the generic supervised epoch loop"),
        # trackers and the config sections that name them (see thelper.trackers.configured)
        C("section", "trackers", "thelper.builtin_params.trackers:TrackersSection",
          "thelper.builtin_params.trackers:TrackersSection",
          description="trackers that also record the session (MLflow, ...)"),
        C("section", "labels", "thelper.builtin_params.trackers:LabelsSection",
          "thelper.builtin_params.trackers:LabelsSection",
          description="free labels of the session (run.json, MLflow tags)"),
        C("tracker", "mlflow", "thelper.trackers.mlflow:MlflowTracker",
          "thelper.builtin_params.trackers:MlflowTrackerParams",
          description="MLflow run: params, metrics (batched), tags and artifacts"),
        # grid executors (thelper grid run, see thelper.grid)
        C("executor", "local", "thelper.grid.executors:LocalExecutor",
          "thelper.grid.params:LocalExecutorParams",
          description="a pool of warm worker processes on this machine"),
        C("executor", "ray", "thelper.grid.executors:RayExecutor",
          "thelper.grid.params:RayExecutorParams",
          description="each experiment a Ray task (thelper-core[ray])"),
    ]


@hookimpl
def thelper_add_commands(app: typer.Typer) -> None:
    """``thelper grid`` (:mod:`thelper.grid.commands`)."""
    from thelper.grid.commands import add_commands

    add_commands(app)
