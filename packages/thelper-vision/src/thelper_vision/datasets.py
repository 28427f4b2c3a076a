"""Image datasets.

:class:`ImageFolder` reads the classic ``root/<class_name>/<image>`` layout (the one of
``torchvision.datasets.ImageFolder``) into thelper's sample dicts and defines its own
classification task.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch.utils.data import Dataset
from torchvision.datasets.folder import find_classes, make_dataset

from thelper.exceptions import DataError
from thelper.tasks import Classification

try:  # deprecated since torchvision 0.29 (superseded by TorchCodec); Pillow takes over
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - a torchvision without image decoders
    decode_image = None

__all__ = ["ImageFolder", "decode_image_file"]

#: Formats ``torchvision.io.decode_image`` reads; other files are decoded with Pillow.
_TORCHVISION_FORMATS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
_MODES = ("RGB", "L", "unchanged")


def _check_pixels(f: BinaryIO) -> None:
    """Refuse decompression bombs before torchvision decodes every frame of ``f``.

    Pillow reads the header only and raises ``DecompressionBombError`` above twice
    ``Image.MAX_IMAGE_PIXELS`` (its default, ~179 Mpixels); GIF frames count together since
    torchvision decodes them all. Files Pillow cannot identify are left to torchvision.
    """
    from PIL import Image

    try:
        with Image.open(f) as image:
            frames = getattr(image, "n_frames", 1) if image.format == "GIF" else 1
            pixels = image.size[0] * image.size[1] * frames
    except Image.DecompressionBombError:
        raise
    except Exception:  # noqa: BLE001 - torchvision reports its own (more precise) error
        return
    finally:
        f.seek(0)
    limit = Image.MAX_IMAGE_PIXELS
    if limit and pixels > 2 * limit:
        raise Image.DecompressionBombError(
            f"image of {frames} frame(s) of {image.size[0]}x{image.size[1]} pixels exceeds "
            f"twice PIL.Image.MAX_IMAGE_PIXELS ({limit}): could be a decompression bomb")


def _decode_with_torchvision(f: BinaryIO, mode: str) -> torch.Tensor:
    read_mode = {"RGB": ImageReadMode.RGB, "L": ImageReadMode.GRAY,
                 "unchanged": ImageReadMode.UNCHANGED}[mode]
    _check_pixels(f)
    data = torch.empty(os.fstat(f.fileno()).st_size, dtype=torch.uint8)
    n = f.readinto(memoryview(data.numpy()))
    with warnings.catch_warnings():  # the deprecation notice would repeat for every image
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_image(data[:n], mode=read_mode)


def _decode_with_pil(f: BinaryIO, mode: str) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(f) as image:  # raises DecompressionBombError (Image.MAX_IMAGE_PIXELS)
        if mode != "unchanged":
            image = image.convert(mode)
        array = np.array(image)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def decode_image_file(path: str | os.PathLike[str], mode: str = "RGB") -> torch.Tensor:
    """Decode one image file into a ``(C, H, W)`` tensor.

    PNG, JPEG, GIF and WebP are decoded by ``torchvision.io.decode_image``; other formats (BMP,
    TIFF, ...), files torchvision rejects, and torchvision releases without image decoders
    (they are deprecated since 0.29 in favour of TorchCodec) fall back to Pillow. Animated
    images give their first frame.

    The file must be a regular file (a FIFO or a device is refused, not waited on or read
    forever; see :func:`thelper.data.files.open_regular`), and images larger than Pillow's
    decompression-bomb bound (twice ``PIL.Image.MAX_IMAGE_PIXELS``, all GIF frames counted)
    are refused before they are decoded.

    Args:
        path: Image file.
        mode: ``"RGB"`` (C = 3), ``"L"`` (grey, C = 1) or ``"unchanged"`` (the file's channels).

    Returns:
        Tensor ``(C, H, W)``, uint8 (uint16 for 16-bit PNGs).

    Raises:
        ValueError: Unknown ``mode``.
        DataError: ``path`` is not a regular file.
        OSError, RuntimeError: The file cannot be read or decoded.
        PIL.Image.DecompressionBombError: The image is over the bound above.
    """
    from thelper.data.files import open_regular

    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)} (got {mode!r})")
    path = os.fspath(path)
    with open_regular(path) as f:
        if decode_image is not None and Path(path).suffix.lower() in _TORCHVISION_FORMATS:
            try:
                image = _decode_with_torchvision(f, mode)
            except RuntimeError as tv_error:
                f.seek(0)
                try:  # e.g. a BMP saved with a .png name
                    image = _decode_with_pil(f, mode)
                except Exception:  # noqa: BLE001 - report torchvision's (more precise) error
                    raise tv_error from None
        else:
            image = _decode_with_pil(f, mode)
    return image[0] if image.ndim == 4 else image


class ImageFolder(Dataset):
    """Images sorted in one sub-folder per class: ``root/<class_name>/**/<file>``.

    Class names are the sub-folder names, sorted (or the ``classes`` given), and label ``i``
    is ``classes[i]``. Files are listed once, sorted, when the dataset is built; images are
    decoded when a sample is read.

    Each sample is a dict:

    * ``"input"``: image tensor ``(C, H, W)``, uint8 (uint16 for 16-bit PNGs), with ``C = 3``
      for ``mode="RGB"``, 1 for ``"L"``, and the file's own channels for ``"unchanged"``;
    * ``"label"``: class index (int);
    * ``"path"``: the image file (str).

    Args:
        root: Folder holding one sub-folder per class.
        extensions: File extensions to load (lower-case, with the dot).
        mode: Decoding mode, ``"RGB"``, ``"L"`` or ``"unchanged"``.
        classes: Class sub-folders to use, in label order (default: all, sorted).

    Attributes:
        task: ``Classification(classes, input_key="input", label_key="label",
            meta_keys=["path"])``.
        classes: Class names in label order.
        class_to_idx: Class name -> label.
        samples: ``(path, label)`` of each sample.
        targets: Label of each sample, for stratified splits without decoding images.

    Raises:
        DataError: ``root`` is missing or has no class sub-folder, a class folder is missing
            or holds no image with one of ``extensions``; when reading, an image cannot be
            decoded (the message names the file and the sample index).
    """

    def __init__(self, root: str | os.PathLike[str],
                 extensions: Sequence[str] = (".png", ".jpg", ".jpeg", ".bmp"),
                 mode: str = "RGB", classes: Sequence[str] | None = None) -> None:
        self.root = os.fspath(root)
        self.extensions = tuple(e.lower() for e in extensions)
        if mode not in _MODES:
            raise DataError(f"image_folder: mode must be one of {list(_MODES)} (got {mode!r})")
        self.mode = mode
        if not os.path.isdir(self.root):
            what = "is not a folder" if os.path.exists(self.root) else "does not exist"
            raise DataError(
                f"image_folder: root {self.root!r} {what} (resolved to "
                f"{os.path.abspath(self.root)!r}); set 'root' to a folder holding one "
                "sub-folder of images per class"
            )
        self.classes, self.class_to_idx = self._find_classes(classes)
        try:
            self.samples: list[tuple[str, int]] = make_dataset(
                self.root, self.class_to_idx, extensions=self.extensions
            )
        except FileNotFoundError as exc:  # some class folders have no matching file
            raise DataError(
                f"image_folder {self.root!r}: {exc}; add images to those folders, remove "
                "them, or list the classes to use in 'classes'"
            ) from exc
        self.targets: list[int] = [label for _, label in self.samples]
        self.task = Classification(self.classes, input_key="input", label_key="label",
                                   meta_keys=["path"])

    def _find_classes(self, classes: Sequence[str] | None) -> tuple[list[str], dict[str, int]]:
        if classes is None:
            try:
                found, _ = find_classes(self.root)
            except FileNotFoundError as exc:
                raise DataError(
                    f"image_folder: no class sub-folder in {self.root!r}; put the images of "
                    "each class in their own sub-folder (root/<class_name>/<image>)"
                ) from exc
            classes = found
        classes = [str(c) for c in classes]
        missing = [c for c in classes if not os.path.isdir(os.path.join(self.root, c))]
        if missing:
            raise DataError(
                f"image_folder: class folder(s) {', '.join(map(repr, missing))} not found in "
                f"{self.root!r}; fix 'classes' or create the folders"
            )
        return classes, {c: i for i, c in enumerate(classes)}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, label = self.samples[index]
        try:
            image = decode_image_file(path, self.mode)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
            raise DataError(
                f"image_folder: cannot decode sample {index} ({path!r}, class "
                f"{self.classes[label]!r}): {type(exc).__name__}: {exc}; replace or delete "
                "the file"
            ) from exc
        return {"input": image, "label": label, "path": path}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={self.root!r}, mode={self.mode!r}, "
                f"samples={len(self)}, classes={self.classes})")
