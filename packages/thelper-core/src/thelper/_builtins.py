"""The core's built-in components, registered through the plugin manager like any plugin."""

from __future__ import annotations

from thelper import builtin_params as bp
from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo as C
from thelper.tasks import ClassificationParams, RegressionParams


@hookimpl
def thelper_register_components() -> list[C]:
    """Tasks, datasets, losses, optimizers, schedulers, metrics and the default trainer."""
    return [
        # tasks
        C("task", "classification", "thelper.tasks:Classification", ClassificationParams,
          aliases=("thelper.tasks.Classification",),
          description="single-label classification into named classes"),
        C("task", "regression", "thelper.tasks:Regression", RegressionParams,
          aliases=("thelper.tasks.Regression", "thelper.tasks.regr.Regression"),
          description="regression of real values of a fixed shape"),
        # datasets
        C("dataset", "sklearn_regression", "thelper.sklearn_regression:SklearnRegressionDataset",
          bp.SklearnRegressionParams,
          description="regression data sets bundled with scikit-learn (diabetes, linnerud)",
          metadata={"provides_task": True}),
        C("dataset", "sklearn", "thelper.data.datasets:SklearnDataset",
          bp.SklearnDatasetParams, aliases=("sklearn_dataset",),
          description="data sets bundled with scikit-learn (digits, iris, wine, ...)",
          metadata={"provides_task": True}),
        C("dataset", "torch_dataset", "thelper.data.datasets:TorchDatasetAdapter",
          bp.TorchDatasetParams, aliases=("import",),
          description="any torch Dataset class by import path (needs a task block)"),
        C("dataset", "hdf5", "thelper.tools.archive:Hdf5Dataset", bp.Hdf5DatasetParams,
          description="one split of an HDF5 archive written by 'thelper split'",
          metadata={"provides_task": True}),
        # samplers
        C("sampler", "class_balanced", "thelper.data.samplers:class_balanced",
          bp.ClassBalancedSamplerParams, aliases=("thelper.data.samplers.WeightedSubsetRandomSampler",),
          description="rebalance classes by inverse frequency (with a power)"),
        C("sampler", "class_weighted", "thelper.data.samplers:class_weighted",
          bp.ClassWeightedSamplerParams,
          description="draw classes with fixed relative weights"),
        # models
        C("model", "mlp", "thelper.nn:MLP", bp.MLPParams,
          description="multi-layer perceptron for flat feature vectors"),
        # losses
        C("loss", "cross_entropy", "thelper.optim:cross_entropy", bp.CrossEntropyParams,
          aliases=("torch.nn.CrossEntropyLoss",), description="cross-entropy on logits"),
        C("loss", "nll", "torch.nn:NLLLoss", bp.ReductionParams,
          aliases=("torch.nn.NLLLoss",), description="negative log-likelihood"),
        C("loss", "bce_with_logits", "thelper.optim:bce_with_logits", bp.BCEWithLogitsParams,
          aliases=("torch.nn.BCEWithLogitsLoss",), description="binary cross-entropy on logits"),
        C("loss", "mse", "torch.nn:MSELoss", bp.ReductionParams,
          aliases=("torch.nn.MSELoss",), description="mean squared error"),
        C("loss", "l1", "torch.nn:L1Loss", bp.ReductionParams,
          aliases=("torch.nn.L1Loss",), description="mean absolute error"),
        C("loss", "smooth_l1", "torch.nn:SmoothL1Loss", bp.SmoothL1Params,
          aliases=("torch.nn.SmoothL1Loss",), description="Huber-like smooth L1"),
        # optimizers
        C("optimizer", "sgd", "torch.optim:SGD", bp.SGDParams,
          aliases=("torch.optim.SGD",), description="stochastic gradient descent"),
        C("optimizer", "adam", "torch.optim:Adam", bp.AdamParams,
          aliases=("torch.optim.Adam",), description="Adam"),
        C("optimizer", "adamw", "torch.optim:AdamW", bp.AdamWParams,
          aliases=("torch.optim.AdamW",), description="Adam with decoupled weight decay"),
        C("optimizer", "rmsprop", "torch.optim:RMSprop", bp.RMSpropParams,
          aliases=("torch.optim.RMSprop",), description="RMSprop"),
        C("optimizer", "adagrad", "torch.optim:Adagrad", bp.AdagradParams,
          aliases=("torch.optim.Adagrad",), description="Adagrad"),
        # schedulers
        C("scheduler", "step_lr", "torch.optim.lr_scheduler:StepLR", bp.StepLRParams,
          aliases=("torch.optim.lr_scheduler.StepLR",), description="step decay"),
        C("scheduler", "multistep_lr", "torch.optim.lr_scheduler:MultiStepLR",
          bp.MultiStepLRParams, aliases=("torch.optim.lr_scheduler.MultiStepLR",),
          description="decay at milestones"),
        C("scheduler", "exponential_lr", "torch.optim.lr_scheduler:ExponentialLR",
          bp.ExponentialLRParams, aliases=("torch.optim.lr_scheduler.ExponentialLR",),
          description="exponential decay"),
        C("scheduler", "cosine_annealing_lr", "torch.optim.lr_scheduler:CosineAnnealingLR",
          bp.CosineAnnealingLRParams,
          aliases=("torch.optim.lr_scheduler.CosineAnnealingLR",), description="cosine decay"),
        C("scheduler", "reduce_lr_on_plateau", "thelper.optim:reduce_lr_on_plateau",
          bp.ReduceLROnPlateauParams,
          aliases=("torch.optim.lr_scheduler.ReduceLROnPlateau",),
          description="reduce the lr when a metric stalls (needs step_metric)",
          metadata={"needs_metric": True}),
        # metrics
        C("metric", "accuracy", "thelper.metrics:Accuracy", bp.AccuracyParams,
          aliases=("thelper.optim.Accuracy", "thelper.optim.metrics.Accuracy"),
          description="top-k accuracy, a fraction in [0, 1]", metadata={"goal": "max"}),
        C("metric", "confusion_matrix", "thelper.metrics:ConfusionMatrix",
          bp.ConfusionMatrixParams,
          aliases=("thelper.train.ConfusionMatrix", "thelper.optim.ConfusionMatrix"),
          description="confusion matrix as CSV, PNG and TensorBoard image"),
        C("metric", "classification_report", "thelper.metrics:ClassificationReport",
          bp.ClassificationReportParams,
          aliases=("thelper.train.ClassifReport",),
          description="per-class precision, recall, F1 and support"),
        C("metric", "mae", "thelper.metrics:MeanAbsoluteError", bp.RegressionMetricParams,
          aliases=("thelper.optim.MeanAbsoluteError", "thelper.optim.metrics.MeanAbsoluteError"),
          description="mean absolute error (lower is better)", metadata={"goal": "min"}),
        C("metric", "mse", "thelper.metrics:MeanSquaredError", bp.RegressionMetricParams,
          aliases=("thelper.optim.MeanSquaredError", "thelper.optim.metrics.MeanSquaredError"),
          description="mean squared error (lower is better)", metadata={"goal": "min"}),
        C("metric", "rmse", "thelper.metrics:RootMeanSquaredError", bp.RegressionMetricParams,
          description="root mean squared error (lower is better)", metadata={"goal": "min"}),
        C("metric", "roc_auc", "thelper.metrics:ROCAUC", bp.ROCAUCParams,
          aliases=("thelper.optim.ROCCurve", "thelper.optim.metrics.ROCCurve"),
          description="area under the ROC curve, one class vs rest, with ROC curve plot",
          metadata={"goal": "max"}),
        C("metric", "prediction_logger", "thelper.consumers:PredictionLogger",
          bp.PredictionLoggerParams,
          aliases=("thelper.train.ClassifLogger", "thelper.train.utils.ClassifLogger"),
          description="per-sample predictions written as CSV or JSON"),
        # trainers
        C("trainer", "default", "thelper.train:Trainer", bp.DefaultTrainerParams,
          aliases=("thelper.train.ImageClassifTrainer", "classification"),
          description="the generic supervised epoch loop"),
    ]
