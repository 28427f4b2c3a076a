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

from thelper._lazy import lazy_exports
from thelper_vision.catalog import DETECTION_MODELS, SEGMENTATION_MODELS

#: Model name -> the module that defines it.
_MODULES = {
    "SegmentationTaskParams": "thelper_vision.seg_params",
    "SegmentationFolderParams": "thelper_vision.seg_params",
    "UNetParams": "thelper_vision.seg_params",
    "TorchvisionSegmentationParams": "thelper_vision.seg_params",
    "NoMetricParams": "thelper_vision.seg_params",
    "SegmentationMasksParams": "thelper_vision.seg_params",
    "DetectionTaskParams": "thelper_vision.det_params",
    "CocoDetectionParams": "thelper_vision.det_params",
    "TorchvisionDetectionParams": "thelper_vision.det_params",
    "SmallFasterRCNNParams": "thelper_vision.det_params",
    "DetectionLossParams": "thelper_vision.det_params",
    "MeanAveragePrecisionParams": "thelper_vision.det_params",
    "DetectionLoggerParams": "thelper_vision.det_params",
    "DetectionOverlaysParams": "thelper_vision.det_params",
    "SanitizeBoxesParams": "thelper_vision.det_params",
    "SuperResolutionTaskParams": "thelper_vision.image_params",
    "AutoencodingTaskParams": "thelper_vision.image_params",
    "SuperResolutionFolderParams": "thelper_vision.image_params",
    "SRCNNParams": "thelper_vision.image_params",
    "ConvAutoencoderParams": "thelper_vision.image_params",
    "ImageQualityParams": "thelper_vision.image_params",
    "SSIMParams": "thelper_vision.image_params",
    "MinMaxNormalizeParams": "thelper_vision.image_params",
}

__all__ = ["SEGMENTATION_MODELS", "DETECTION_MODELS", *sorted(_MODULES)]


__getattr__, __dir__ = lazy_exports(__name__, _MODULES, globals())
