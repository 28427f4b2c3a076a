"""The thelper plugin of thelper-vision (entry point ``thelper.plugins: vision``).

Registration is data only: factories and params models are lazy ``"module:attr"`` strings,
so importing this module (every ``thelper`` command does) never imports pydantic, torch,
torchvision, Pillow or numpy. The params models (:mod:`thelper_vision.params`,
:mod:`thelper_vision.transform_params`, and per task family :mod:`thelper_vision.seg_params`,
:mod:`thelper_vision.det_params`, :mod:`thelper_vision.image_params`) are imported when a
config names one of their components.
"""

from __future__ import annotations

from thelper.hookspecs import hookimpl
from thelper.registry import ComponentInfo
from thelper_vision.catalog import DETECTION_MODELS, SEGMENTATION_MODELS, TORCHVISION_MODELS
from thelper_vision.viz import thelper_add_commands

__all__ = ["thelper_register_components", "thelper_add_commands", "TRANSFORMS"]

#: Transform components: name -> (params model in :mod:`thelper_vision.transform_params`,
#: torchvision v2 class, thelper 0.6 aliases, description). Aliases
#: ``torchvision.transforms.<Class>`` and ``...v2.<Class>`` are added.
TRANSFORMS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "resize": ("ResizeParams", "Resize", ("thelper.transforms.Resize",),
               "Resize (C, H, W) images to [H, W] or their shorter side to one size"),
    "center_crop": ("CenterCropParams", "CenterCrop", (),
                    "Crop the centre of images to [H, W]"),
    "random_crop": ("RandomCropParams", "RandomCrop", (),
                    "Crop images at a random position, with optional padding"),
    "random_resized_crop": ("RandomResizedCropParams", "RandomResizedCrop", (),
                            "Crop a random area and aspect ratio, then resize"),
    "random_horizontal_flip": ("FlipParams", "RandomHorizontalFlip", (),
                               "Flip images left-right with probability p"),
    "random_vertical_flip": ("FlipParams", "RandomVerticalFlip", (),
                             "Flip images upside-down with probability p"),
    "random_rotation": ("RandomRotationParams", "RandomRotation", (),
                        "Rotate images by a random angle in degrees"),
    "random_affine": ("RandomAffineParams", "RandomAffine", (),
                      "Random rotation, translation, scale and shear"),
    "color_jitter": ("ColorJitterParams", "ColorJitter", (),
                     "Random brightness, contrast, saturation and hue"),
    "gaussian_blur": ("GaussianBlurParams", "GaussianBlur", (),
                      "Blur images with a Gaussian kernel of random sigma"),
    "normalize": ("NormalizeParams", "Normalize", (),
                  "(x - mean) / std per channel; uint8 images are scaled to [0, 1] first"),
    "to_float": ("ToFloatParams", "ToDtype", ("torchvision.transforms.ToTensor",),
                 "Convert images to float; uint8 [0, 255] becomes [0, 1]"),
    "grayscale": ("GrayscaleParams", "Grayscale", (),
                  "Convert RGB images to grey (1 or 3 channels)"),
    "random_grayscale": ("RandomGrayscaleParams", "RandomGrayscale", (),
                         "Convert RGB images to grey with probability p"),
    "pad": ("PadParams", "Pad", (), "Pad image borders"),
    "random_erasing": ("RandomErasingParams", "RandomErasing", (),
                       "Erase a random rectangle of each image"),
}

#: torchvision classes whose defaults differ from ours: no ``torchvision.transforms`` alias.
_NO_TORCHVISION_ALIAS = frozenset({"ToDtype"})


def _transforms() -> list[ComponentInfo]:
    infos = []
    for name, (params, cls, extra, description) in TRANSFORMS.items():
        aliases = extra
        if cls not in _NO_TORCHVISION_ALIAS:
            aliases = (f"torchvision.transforms.{cls}", f"torchvision.transforms.v2.{cls}",
                       *extra)
        infos.append(ComponentInfo(
            kind="transform", name=name, factory=f"thelper_vision.transforms:{name}",
            params=f"thelper_vision.transform_params:{params}", aliases=aliases,
            description=description,
        ))
    infos.append(ComponentInfo(  # joint samples only (v2 has no v1 counterpart)
        kind="transform", name="sanitize_boxes", factory="thelper_vision.transforms:"
        "sanitize_boxes", params="thelper_vision.det_params:SanitizeBoxesParams",
        aliases=("torchvision.transforms.v2.SanitizeBoundingBoxes",),
        description="Remove degenerate or out-of-image boxes (and labels) after crops"))
    infos.append(ComponentInfo(  # no torchvision counterpart (OpenCV's NORM_MINMAX)
        kind="transform", name="minmax_normalize",
        factory="thelper_vision.transforms:minmax_normalize",
        params="thelper_vision.image_params:MinMaxNormalizeParams",
        description="Stretch each image linearly to [low, high] (min-max normalisation)"))
    return infos


def _models() -> list[ComponentInfo]:
    infos = [ComponentInfo(
        kind="model", name="simple_cnn", factory="thelper_vision.models:simple_cnn",
        params="thelper_vision.params:SimpleCNNParams", aliases=("thelper.nn.SimpleCNN",),
        description="Small CNN (conv-BN-ReLU-pool stages, global pooling) for small images",
    )]
    for name, module in TORCHVISION_MODELS.items():
        infos.append(ComponentInfo(
            kind="model", name=name, factory=f"thelper_vision.models:torchvision_zoo.{name}",
            params="thelper_vision.params:TorchvisionModelParams",
            aliases=(f"torchvision.models.{name}", f"torchvision.models.{module}.{name}"),
            description=f"torchvision {name} classifier (random init or a local state dict)",
        ))
    return infos


def _datasets() -> list[ComponentInfo]:
    return [ComponentInfo(
        kind="dataset", name="image_folder", factory="thelper_vision.datasets:ImageFolder",
        params="thelper_vision.params:ImageFolderParams",
        aliases=("torchvision.datasets.ImageFolder",),
        description="Images in one sub-folder per class (root/<class>/<image>)",
        metadata={"provides_task": True, "task": "classification", "paths": ("root",)},
    )]


def _tasks() -> list[ComponentInfo]:
    C = ComponentInfo
    return [
        C("task", "segmentation", "thelper_vision.tasks:Segmentation",
          "thelper_vision.seg_params:SegmentationTaskParams",
          aliases=("thelper.tasks.Segmentation", "thelper.tasks.segm.Segmentation"),
          description="semantic segmentation: one class per pixel, with an ignore index"),
        C("task", "detection", "thelper_vision.detection:Detection",
          "thelper_vision.det_params:DetectionTaskParams",
          aliases=("thelper.tasks.Detection", "thelper.tasks.detect.Detection"),
          description="object detection: XYXY pixel boxes and class labels per image"),
        C("task", "super_resolution", "thelper_vision.tasks:SuperResolution",
          "thelper_vision.image_params:SuperResolutionTaskParams",
          aliases=("thelper.tasks.SuperResolution", "thelper.tasks.regr.SuperResolution"),
          description="restore high-resolution images from degraded inputs"),
        C("task", "autoencoding", "thelper_vision.tasks:Autoencoding",
          "thelper_vision.image_params:AutoencodingTaskParams", aliases=("reconstruction",),
          description="reconstruct the input (autoencoders)"),
    ]


def _dense_datasets() -> list[ComponentInfo]:
    C = ComponentInfo
    def task(name: str, *paths: str) -> dict[str, object]:
        return {"provides_task": True, "task": name, "paths": paths}

    return [
        C("dataset", "segmentation_folder", "thelper_vision.dense_datasets:SegmentationFolder",
          "thelper_vision.seg_params:SegmentationFolderParams",
          metadata=task("segmentation", "images", "masks"),
          description="Images and class-index masks in two folders, paired by file name"),
        C("dataset", "coco_detection", "thelper_vision.dense_datasets:CocoDetection",
          "thelper_vision.det_params:CocoDetectionParams",
          aliases=("torchvision.datasets.CocoDetection",),
          metadata=task("detection", "images", "annotations"),
          description="Images with boxes from a COCO-format JSON file"),
        C("dataset", "super_resolution_folder",
          "thelper_vision.dense_datasets:SuperResolutionFolder",
          "thelper_vision.image_params:SuperResolutionFolderParams",
          metadata=task("super_resolution", "root"),
          description="Images (or tiles) as targets, downscaled copies as inputs"),
    ]


def _dense_models() -> list[ComponentInfo]:
    C = ComponentInfo
    infos = [
        C("model", "unet", "thelper_vision.seg_models:unet",
          "thelper_vision.seg_params:UNetParams",
          aliases=("thelper.nn.UNet", "thelper.nn.unet.UNet"),
          description="Small U-Net for segmentation (padded convs, batch norm)"),
        C("model", "small_fasterrcnn", "thelper_vision.det_models:small_fasterrcnn",
          "thelper_vision.det_params:SmallFasterRCNNParams",
          description="Faster R-CNN with a small plain-CNN backbone, trainable on a CPU"),
        C("model", "srcnn", "thelper_vision.dense_models:srcnn",
          "thelper_vision.image_params:SRCNNParams",
          aliases=("thelper.nn.SRCNN", "thelper.nn.srcnn.SRCNN"),
          description="SRCNN super-resolution network (optionally residual)"),
        C("model", "conv_autoencoder", "thelper_vision.dense_models:conv_autoencoder",
          "thelper_vision.image_params:ConvAutoencoderParams",
          description="Convolutional autoencoder with an optional linear bottleneck"),
    ]
    for name in SEGMENTATION_MODELS:
        infos.append(C("model", name, f"thelper_vision.seg_models:segmentation_zoo.{name}",
                       "thelper_vision.seg_params:TorchvisionSegmentationParams",
                       aliases=(f"torchvision.models.segmentation.{name}",),
                       description=f"torchvision {name} segmentation model (no download)"))
    for name in DETECTION_MODELS:
        infos.append(C("model", name, f"thelper_vision.det_models:detection_zoo.{name}",
                       "thelper_vision.det_params:TorchvisionDetectionParams",
                       aliases=(f"torchvision.models.detection.{name}",),
                       description=f"torchvision {name} detector (no download)"))
    return infos


def _metrics() -> list[ComponentInfo]:
    # metadata["tasks"]: the task types each loss or metric fits; 'thelper config validate'
    # refuses it on another task (thelper.config.rules)
    C = ComponentInfo
    seg, det = {"tasks": ("segmentation",)}, {"tasks": ("detection",)}
    image = {"tasks": ("super_resolution", "autoencoding")}
    return [
        C("loss", "detection_loss", "thelper_vision.detection:DetectionLoss",
          "thelper_vision.det_params:DetectionLossParams", metadata=det,
          description="weighted sum of the losses a torchvision detector returns"),
        C("metric", "pixel_accuracy", "thelper_vision.metrics:PixelAccuracy",
          "thelper_vision.seg_params:NoMetricParams", metadata={"goal": "max", **seg},
          description="fraction of correctly classified pixels (ignore index skipped)"),
        C("metric", "miou", "thelper_vision.metrics:MeanIoU",
          "thelper_vision.seg_params:NoMetricParams",
          aliases=("mean_iou", "thelper.optim.IntersectionOverUnion"),
          metadata={"goal": "max", **seg},
          description="mean intersection over union of the classes (segmentation)"),
        C("metric", "psnr", "thelper_vision.metrics:PSNR",
          "thelper_vision.image_params:ImageQualityParams",
          aliases=("thelper.optim.PSNR", "thelper.optim.metrics.PSNR"),
          metadata={"goal": "max", **image},
          description="peak signal-to-noise ratio in dB, mean over images"),
        C("metric", "ssim", "thelper_vision.metrics:SSIM",
          "thelper_vision.image_params:SSIMParams", metadata={"goal": "max", **image},
          description="structural similarity (Wang et al. 2004), mean over images"),
        C("metric", "mean_average_precision", "thelper_vision.det_metrics:MeanAveragePrecision",
          "thelper_vision.det_params:MeanAveragePrecisionParams",
          aliases=("map", "thelper.optim.AveragePrecision",
                   "thelper.optim.metrics.AveragePrecision"), metadata={"goal": "max", **det},
          description="detection mAP, COCO style (one IoU threshold or 0.50:0.95)"),
        C("metric", "segmentation_masks", "thelper_vision.consumers:SegmentationMasks",
          "thelper_vision.seg_params:SegmentationMasksParams", metadata=seg,
          description="predicted and true masks as palette PNGs, grid in TensorBoard"),
        C("metric", "image_panels", "thelper_vision.consumers:ImagePanels",
          "thelper_vision.image_params:ImagePanelsParams", metadata=image,
          description="input | output | target panels of image-to-image tasks"),
        C("metric", "detection_logger", "thelper_vision.consumers:DetectionLogger",
          "thelper_vision.det_params:DetectionLoggerParams", metadata=det,
          aliases=("thelper.train.DetectLogger", "thelper.train.utils.DetectLogger"),
          description="detections of every image written as JSON"),
        C("metric", "detection_overlays", "thelper_vision.consumers:DetectionOverlays",
          "thelper_vision.det_params:DetectionOverlaysParams", metadata=det,
          description="images with true and detected boxes as PNGs, grid in TensorBoard"),
    ]


@hookimpl
def thelper_register_components() -> list[ComponentInfo]:
    """The vision tasks, datasets, transforms, models, losses and metrics, and the
    ``thelper infer`` writers and file decoders (:mod:`thelper_vision.writers`)."""
    from thelper_vision.writers import output_components

    return [*_tasks(), *_datasets(), *_dense_datasets(), *_transforms(), *_models(),
            *_dense_models(), *_metrics(), *output_components()]
