"""Names of the torchvision architectures that thelper-vision registers (no imports).

Plain data, kept apart from the params modules so that the plugin's registration
(:mod:`thelper_vision.plugin`) can list the model zoo without importing pydantic or
torchvision. :mod:`thelper_vision.params` and :mod:`thelper_vision.dense_params` re-export
these names.
"""

from __future__ import annotations

__all__ = ["TORCHVISION_MODELS", "SEGMENTATION_MODELS", "DETECTION_MODELS"]

#: Curated ``torchvision.models`` classification architectures: name -> defining module
#: (``torchvision.models.<module>``). Kept static so that registering needs no torchvision.
TORCHVISION_MODELS: dict[str, str] = {
    "resnet18": "resnet",
    "resnet34": "resnet",
    "resnet50": "resnet",
    "mobilenet_v2": "mobilenetv2",
    "mobilenet_v3_small": "mobilenetv3",
    "mobilenet_v3_large": "mobilenetv3",
    "efficientnet_b0": "efficientnet",
    "densenet121": "densenet",
    "shufflenet_v2_x0_5": "shufflenetv2",
    "squeezenet1_0": "squeezenet",
    "vgg11_bn": "vgg",
    "convnext_tiny": "convnext",
    "regnet_y_400mf": "regnet",
}

#: torchvision segmentation architectures (``torchvision.models.segmentation``).
SEGMENTATION_MODELS: tuple[str, ...] = (
    "fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")

#: torchvision detectors (``torchvision.models.detection``) -> family: ``rcnn`` (Faster
#: R-CNN), ``dense`` (RetinaNet, FCOS) or ``ssd`` (fixed input size).
DETECTION_MODELS: dict[str, str] = {
    "fasterrcnn_mobilenet_v3_large_320_fpn": "rcnn",
    "fasterrcnn_mobilenet_v3_large_fpn": "rcnn",
    "fasterrcnn_resnet50_fpn": "rcnn",
    "fasterrcnn_resnet50_fpn_v2": "rcnn",
    "retinanet_resnet50_fpn": "dense",
    "retinanet_resnet50_fpn_v2": "dense",
    "fcos_resnet50_fpn": "dense",
    "ssdlite320_mobilenet_v3_large": "ssd",
    "ssd300_vgg16": "ssd",
}
