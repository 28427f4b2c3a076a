"""thelper-vision: images for thelper.

A thelper plugin (entry point ``thelper.plugins: vision``) that registers:

* the ``image_folder`` dataset (one sub-folder per class, decoded with ``torchvision.io``);
* image transforms backed by ``torchvision.transforms.v2`` (``resize``, ``random_crop``,
  ``normalize``, ``to_float``, ...), applied to ``(C, H, W)`` tensors;
* classification models: ``simple_cnn`` and a curated list of ``torchvision.models``
  architectures (``resnet18``, ``mobilenet_v3_small``, ...).

Importing this package (or :mod:`thelper_vision.plugin`) does not import torch; the
implementation modules (:mod:`thelper_vision.datasets`, :mod:`thelper_vision.models`,
:mod:`thelper_vision.transforms`) are imported only when a component is built.
"""

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("thelper-vision")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
