"""Agriculture-Vision in its on-disk layout: field images with per-class anomaly masks.

Agriculture-Vision (Chiu et al., "Agriculture-Vision: a large aerial image database for
agricultural pattern analysis", CVPR 2020) holds 512 × 512 crops of aerial farmland images
(RGB and near-infrared, 10 cm/px) with one binary mask per anomaly class::

    <root>/<split>/images/rgb/<field>.jpg      RGB, 8 bit
    <root>/<split>/images/nir/<field>.jpg      NIR, 8 bit, one channel
    <root>/<split>/labels/<class>/<field>.png  255 (or any non-zero) where the class is
    <root>/<split>/boundaries/<field>.png      non-zero inside the field boundary
    <root>/<split>/masks/<field>.png           non-zero where the image is valid

``<field>`` is ``<field id>_<x1>-<y1>-<x2>-<y2>``: crops of one field overlap, so the
interface groups samples by field id for splitting. Pixels outside the boundary or the
valid mask become the ignore index (255), as the challenge scores them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thelper.exceptions import DataError

__all__ = ["AgricultureVision", "IGNORE_INDEX"]

#: Mask value of pixels outside the field boundary or the valid-image mask.
IGNORE_INDEX = 255


def _read(path: Path, mode: str) -> np.ndarray:
    """An image file as a numpy array (``L`` or ``RGB``), with a one-line DataError."""
    import stat

    from PIL import Image, UnidentifiedImageError

    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise OSError("not a regular file (a FIFO, socket or device)")
        with Image.open(path) as img:
            return np.asarray(img.convert(mode))
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"agriculture_vision file {str(path)!r} cannot be read: {exc}") \
            from None


class AgricultureVision(Dataset):
    """Agriculture-Vision fields as semantic segmentation samples.

    Each sample is ``{"input": {"image": Image float32 (C, H, W) in [0, 1], "mask": Mask
    int64 (H, W)}, "field": str}`` (a joint sample for the vision transforms): channels R, G,
    B (and NIR with ``nir``); mask ``0`` for background, ``i`` for ``classes[i - 1]`` (the
    first listed class wins where labels overlap), :data:`IGNORE_INDEX` outside the field
    boundary or the valid mask. Splits without ``labels/`` (the challenge's test split) give
    a mask that is background inside the field. Its :attr:`task` is the vision
    ``segmentation`` task with classes ``["background", *classes]``.

    Args:
        root: Data set folder (holding ``train/``, ``val/``, ``test/``).
        split: The split folder to read.
        classes: Label folders, in priority order; default: every folder under ``labels/``
            (sorted).
        nir: Stack the NIR image as a 4th channel.
        group_by_field: Expose :meth:`groups` (one group per field id).

    Raises:
        DataError: Missing folders, no image, a class without a label folder, or (when read)
            a missing or unreadable file, or images of different sizes.
    """

    def __init__(self, root: str, split: str = "train", classes: Sequence[str] | None = None,
                 nir: bool = True, group_by_field: bool = True) -> None:
        self.root = Path(root) / split
        rgb = self.root / "images" / "rgb"
        if not rgb.is_dir():
            raise DataError(f"agriculture_vision: {str(rgb)!r} is not a folder; root must "
                            "hold <split>/images/rgb/ (fix root or split)")
        for folder in ("boundaries", "masks", *(("images/nir",) if nir else ())):
            if not (self.root / folder).is_dir():
                raise DataError(f"agriculture_vision: {str(self.root / folder)!r} is missing"
                                + ("; set nir: false to use RGB only" if "nir" in folder
                                   else ""))
        labels = self.root / "labels"
        found = sorted(e.name for e in os.scandir(labels) if e.is_dir()) \
            if labels.is_dir() else []
        if classes is None:
            classes = found
        else:
            missing = [c for c in classes if c not in found]
            if missing and found:
                raise DataError(f"agriculture_vision: no label folder {missing[0]!r} under "
                                f"{str(labels)!r} (found: {', '.join(found)})")
        self.classes = list(classes)
        self.has_labels = bool(found)
        self.nir = nir
        with os.scandir(rgb) as it:
            self.fields = sorted(e.name[:-4] for e in it if e.name.lower().endswith(".jpg"))
        if not self.fields:
            raise DataError(f"agriculture_vision: no .jpg image under {str(rgb)!r}")
        self._field_ids = [f.split("_", 1)[0] for f in self.fields] if group_by_field \
            else None
        from thelper_vision.tasks import Segmentation

        self.task = Segmentation(["background", *self.classes], ignore_index=IGNORE_INDEX,
                                 meta_keys=("field",))

    def read_field(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Image and mask of one field crop.

        Returns:
            ``(image, mask)``: float32 ``(C, H, W)`` in ``[0, 1]`` and int64 ``(H, W)``.

        Raises:
            DataError: A file is missing or unreadable, or the files differ in size.
        """
        r = self.root
        channels = [_read(r / "images" / "rgb" / f"{name}.jpg", "RGB")]
        if self.nir:
            channels.append(_read(r / "images" / "nir" / f"{name}.jpg", "L")[..., None])
        image = np.concatenate(channels, axis=2)
        h, w = image.shape[:2]
        valid = (_read(r / "boundaries" / f"{name}.png", "L") > 0) & \
            (_read(r / "masks" / f"{name}.png", "L") > 0)
        if valid.shape != (h, w):
            raise DataError(f"agriculture_vision field {name!r}: boundary/mask {valid.shape} "
                            f"and image {(h, w)} differ in size")
        mask = np.zeros((h, w), dtype=np.int64)
        if self.has_labels:
            # the first listed class wins: paint in reverse priority order
            for k in range(len(self.classes), 0, -1):
                layer = _read(r / "labels" / self.classes[k - 1] / f"{name}.png", "L")
                if layer.shape != (h, w):
                    raise DataError(f"agriculture_vision field {name!r}: label "
                                    f"{self.classes[k - 1]!r} is {layer.shape}, image {(h, w)}")
                mask[layer > 0] = k
        mask[~valid] = IGNORE_INDEX
        x = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
        return x, mask

    def __len__(self) -> int:
        return len(self.fields)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        name = self.fields[index]
        x, mask = self.read_field(name)
        return {"input": {"image": tv_tensors.Image(torch.from_numpy(x)),
                          "mask": tv_tensors.Mask(torch.from_numpy(mask))},
                "field": name}

    def groups(self) -> list[str] | None:
        """Field id of every crop, or ``None`` when ``group_by_field`` is off."""
        return list(self._field_ids) if self._field_ids is not None else None

    def __repr__(self) -> str:
        return (f"AgricultureVision({str(self.root)!r}, {len(self)} fields, "
                f"classes={self.classes}, nir={self.nir})")
