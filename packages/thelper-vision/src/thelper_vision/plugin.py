"""The thelper plugin of thelper-vision (entry point ``thelper.plugins: vision``).

Registration is data only: factories are lazy ``"module:attr"`` strings and params models
come from torch-free modules, so importing this module never imports torch, torchvision,
Pillow or numpy.
"""

from __future__ import annotations

from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo, Params
from thelper_vision import transform_params as tp
from thelper_vision.params import (
    TORCHVISION_MODELS,
    ImageFolderParams,
    SimpleCNNParams,
    TorchvisionModelParams,
)

__all__ = ["thelper_register_components", "TRANSFORMS"]

#: Transform components: name -> (params model, torchvision v2 class, thelper 0.6 aliases,
#: description). Aliases ``torchvision.transforms.<Class>`` and ``...v2.<Class>`` are added.
TRANSFORMS: dict[str, tuple[type[Params], str, tuple[str, ...], str]] = {
    "resize": (tp.ResizeParams, "Resize", ("thelper.transforms.Resize",),
               "Resize (C, H, W) images to [H, W] or their shorter side to one size"),
    "center_crop": (tp.CenterCropParams, "CenterCrop", (),
                    "Crop the centre of images to [H, W]"),
    "random_crop": (tp.RandomCropParams, "RandomCrop", (),
                    "Crop images at a random position, with optional padding"),
    "random_resized_crop": (tp.RandomResizedCropParams, "RandomResizedCrop", (),
                            "Crop a random area and aspect ratio, then resize"),
    "random_horizontal_flip": (tp.FlipParams, "RandomHorizontalFlip", (),
                               "Flip images left-right with probability p"),
    "random_vertical_flip": (tp.FlipParams, "RandomVerticalFlip", (),
                             "Flip images upside-down with probability p"),
    "random_rotation": (tp.RandomRotationParams, "RandomRotation", (),
                        "Rotate images by a random angle in degrees"),
    "random_affine": (tp.RandomAffineParams, "RandomAffine", (),
                      "Random rotation, translation, scale and shear"),
    "color_jitter": (tp.ColorJitterParams, "ColorJitter", (),
                     "Random brightness, contrast, saturation and hue"),
    "gaussian_blur": (tp.GaussianBlurParams, "GaussianBlur", (),
                      "Blur images with a Gaussian kernel of random sigma"),
    "normalize": (tp.NormalizeParams, "Normalize", (),
                  "(x - mean) / std per channel; uint8 images are scaled to [0, 1] first"),
    "to_float": (tp.ToFloatParams, "ToDtype", ("torchvision.transforms.ToTensor",),
                 "Convert images to float; uint8 [0, 255] becomes [0, 1]"),
    "grayscale": (tp.GrayscaleParams, "Grayscale", (),
                  "Convert RGB images to grey (1 or 3 channels)"),
    "random_grayscale": (tp.RandomGrayscaleParams, "RandomGrayscale", (),
                         "Convert RGB images to grey with probability p"),
    "pad": (tp.PadParams, "Pad", (), "Pad image borders"),
    "random_erasing": (tp.RandomErasingParams, "RandomErasing", (),
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
            params=params, aliases=aliases, description=description,
        ))
    return infos


def _models() -> list[ComponentInfo]:
    infos = [ComponentInfo(
        kind="model", name="simple_cnn", factory="thelper_vision.models:simple_cnn",
        params=SimpleCNNParams, aliases=("thelper.nn.SimpleCNN",),
        description="Small CNN (conv-BN-ReLU-pool stages, global pooling) for small images",
    )]
    for name, module in TORCHVISION_MODELS.items():
        infos.append(ComponentInfo(
            kind="model", name=name, factory=f"thelper_vision.models:torchvision_zoo.{name}",
            params=TorchvisionModelParams,
            aliases=(f"torchvision.models.{name}", f"torchvision.models.{module}.{name}"),
            description=f"torchvision {name} classifier (random init or a local state dict)",
        ))
    return infos


def _datasets() -> list[ComponentInfo]:
    return [ComponentInfo(
        kind="dataset", name="image_folder", factory="thelper_vision.datasets:ImageFolder",
        params=ImageFolderParams, aliases=("torchvision.datasets.ImageFolder",),
        description="Images in one sub-folder per class (root/<class>/<image>)",
        metadata={"provides_task": True},
    )]


@hookimpl
def thelper_register_components() -> list[ComponentInfo]:
    """The vision datasets, transforms and models (see the package README)."""
    return [*_datasets(), *_transforms(), *_models()]
