"""thelper-vision: images for thelper.

A thelper plugin (entry point ``thelper.plugins: vision``) that registers:

* tasks: ``segmentation``, ``detection``, ``super_resolution``, ``autoencoding``;
* datasets: ``image_folder`` (classification), ``segmentation_folder``, ``coco_detection``,
  ``super_resolution_folder`` (joint samples, see :mod:`thelper_vision.joint`);
* image transforms backed by ``torchvision.transforms.v2`` (``resize``, ``random_crop``,
  ``normalize``, ``to_float``, ``sanitize_boxes``, ...), applied to ``(C, H, W)`` tensors or
  to joint samples (images with their masks, boxes or target images);
* models: ``simple_cnn`` and torchvision classifiers, ``unet`` and torchvision segmentation
  models, ``small_fasterrcnn`` and torchvision detectors, ``srcnn``, ``conv_autoencoder``;
* the ``detection_loss``, metrics (``miou``, ``pixel_accuracy``, ``psnr``, ``ssim``,
  ``mean_average_precision``) and output consumers (``segmentation_masks``,
  ``detection_logger``, ``detection_overlays``);
* the ``thelper viz`` command.

Importing this package (or :mod:`thelper_vision.plugin`) imports neither torch nor pydantic; the
implementation modules (:mod:`thelper_vision.datasets`, :mod:`thelper_vision.models`,
:mod:`thelper_vision.transforms`) are imported only when a component is built.
"""

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed metadata on first access (every ``thelper``
    command imports this package, most never need the version)."""
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("thelper-vision")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        version = "0.0.0+unknown"
    globals()["__version__"] = version
    return version
