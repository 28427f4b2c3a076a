"""Params models of the core's built-in components (torch-free; used for validation).

One module per kind of component, so that ``thelper config validate`` builds only the
pydantic models of the kinds a config uses (about 0.7 ms per model class): :mod:`.tasks`,
:mod:`.data` (datasets and samplers), :mod:`.models`, :mod:`.losses`, :mod:`.optim`
(optimizers and schedulers), :mod:`.metrics`, :mod:`.trainer`, :mod:`.misc`.
:mod:`thelper._builtins` refers to them by ``"thelper.builtin_params.<module>:Name"`` strings.
Every model can still be imported from here (``from thelper.builtin_params import
AdamParams``): this package imports the module that defines it on first access.
"""

from __future__ import annotations

from thelper._lazy import lazy_exports

#: Model name -> the submodule that defines it.
_MODULES = {
    "NoParams": "misc",
    "ClassificationParams": "tasks",
    "MultiLabelClassificationParams": "tasks",
    "RegressionParams": "tasks",
    "SklearnDatasetParams": "data",
    "SklearnRegressionParams": "data",
    "TorchDatasetParams": "data",
    "Hdf5DatasetParams": "data",
    "ClassBalancedSamplerParams": "data",
    "ClassWeightedSamplerParams": "data",
    "MLPParams": "models",
    "Reduction": "losses",
    "CrossEntropyParams": "losses",
    "BCEWithLogitsParams": "losses",
    "ReductionParams": "losses",
    "SmoothL1Params": "losses",
    "SGDParams": "optim",
    "AdamParams": "optim",
    "AdamWParams": "optim",
    "RMSpropParams": "optim",
    "AdagradParams": "optim",
    "StepLRParams": "optim",
    "MultiStepLRParams": "optim",
    "ExponentialLRParams": "optim",
    "CosineAnnealingLRParams": "optim",
    "ReduceLROnPlateauParams": "optim",
    "AccuracyParams": "metrics",
    "ConfusionMatrixParams": "metrics",
    "ClassificationReportParams": "metrics",
    "RegressionMetricParams": "metrics",
    "ROCAUCParams": "metrics",
    "PredictionLoggerParams": "metrics",
    "MultiLabelF1Params": "metrics",
    "MultiLabelMAPParams": "metrics",
    "DefaultTrainerParams": "trainer",
}

__all__ = sorted(_MODULES)


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, globals())
