"""Params models of the dense vision tasks and their components (torch-free).

They live in one module per task family, so that ``thelper config validate`` builds only
the pydantic models of the families a config uses: :mod:`thelper_vision.seg_params`
(segmentation), :mod:`thelper_vision.det_params` (detection) and
:mod:`thelper_vision.image_params` (super-resolution, autoencoding, image quality). The
plugin registers them as ``"thelper_vision.<module>:Name"`` strings. Every model can still be
imported from here; this module imports the one that defines it on first access.
``SEGMENTATION_MODELS`` and ``DETECTION_MODELS`` are re-exported from
:mod:`thelper_vision.catalog`.
"""

from __future__ import annotations

import importlib
from typing import Any

from thelper_vision.catalog import DETECTION_MODELS, SEGMENTATION_MODELS

#: Model name -> the module that defines it.
_MODULES = {
    "SegmentationTaskParams": "seg_params",
    "SegmentationFolderParams": "seg_params",
    "UNetParams": "seg_params",
    "TorchvisionSegmentationParams": "seg_params",
    "NoMetricParams": "seg_params",
    "SegmentationMasksParams": "seg_params",
    "DetectionTaskParams": "det_params",
    "CocoDetectionParams": "det_params",
    "TorchvisionDetectionParams": "det_params",
    "SmallFasterRCNNParams": "det_params",
    "DetectionLossParams": "det_params",
    "MeanAveragePrecisionParams": "det_params",
    "DetectionLoggerParams": "det_params",
    "DetectionOverlaysParams": "det_params",
    "SanitizeBoxesParams": "det_params",
    "SuperResolutionTaskParams": "image_params",
    "AutoencodingTaskParams": "image_params",
    "SuperResolutionFolderParams": "image_params",
    "SRCNNParams": "image_params",
    "ConvAutoencoderParams": "image_params",
    "ImageQualityParams": "image_params",
    "SSIMParams": "image_params",
    "MinMaxNormalizeParams": "image_params",
}

__all__ = ["SEGMENTATION_MODELS", "DETECTION_MODELS", *sorted(_MODULES)]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"thelper_vision.{module}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULES})
