"""Datasets of the dense vision tasks: image + mask folders, COCO-format detection, and
super-resolution pairs made by downscaling.

Each sample stores a joint sample (:mod:`thelper_vision.joint`) under ``"input"`` so that
the loader transforms move the image and its targets together, plus meta keys (``path``,
...). Each dataset defines its task (``dataset.task``); a ``task:`` block in the config
replaces it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from thelper.data.files import open_regular
from thelper.exceptions import DataError
from thelper_vision.datasets import decode_image_file
from thelper_vision.detection import Detection
from thelper_vision.tasks import Segmentation, SuperResolution

__all__ = ["SegmentationFolder", "CocoDetection", "SuperResolutionFolder", "list_images"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: str | os.PathLike[str], extensions: Sequence[str] = _IMAGE_EXTENSIONS,
                what: str = "dataset") -> list[Path]:
    """Image files directly in ``folder``, sorted by name.

    Raises:
        DataError: The folder is missing or holds no image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{what}: folder {str(root)!r} does not exist (resolved to "
                        f"{str(root.resolve())!r})")
    exts = tuple(e.lower() for e in extensions)
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts)
    if not files:
        raise DataError(f"{what}: no image with extension {', '.join(exts)} in {str(root)!r}")
    return files


def _decode(path: Path, mode: str, what: str, index: int) -> torch.Tensor:
    try:
        return decode_image_file(path, mode)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
        raise DataError(f"{what}: cannot decode sample {index} ({str(path)!r}): "
                        f"{type(exc).__name__}: {exc}; replace or delete the file") from exc


class SegmentationFolder(Dataset):
    """Images and masks in two folders, paired by file stem.

    ``images/<stem>.<ext>`` goes with ``masks/<stem><mask_suffix>.png`` (any image
    extension); each mask holds one class index per pixel (8- or 16-bit grey, or a palette
    PNG, whose pixel values are the indices).

    Samples: ``{"input": {"image": Image (C, H, W) uint8, "mask": Mask (H, W) int64},
    "path": str, "mask_path": str}``.

    Args:
        images: Folder of images.
        masks: Folder of masks.
        class_names: Class names, in index order.
        mode: Image decoding mode (``RGB``, ``L``, ``unchanged``).
        mask_suffix: Added to an image's stem to name its mask.
        ignore_index: Mask value of pixels to ignore.
        color_map: ``{class: [r, g, b]}`` for drawing.

    Raises:
        DataError: Missing folders, no images, or images without a mask.
    """

    def __init__(self, images: str, masks: str, class_names: Sequence[str], mode: str = "RGB",
                 mask_suffix: str = "", ignore_index: int | None = 255,
                 color_map: Mapping[str, Sequence[int]] | None = None) -> None:
        self.images_dir, self.masks_dir = Path(images), Path(masks)
        self.mode = mode
        image_files = list_images(images, what="segmentation_folder images")
        masks_by_stem = {p.stem: p for p in list_images(masks, what="segmentation_folder masks")}
        self.samples: list[tuple[Path, Path]] = []
        missing = []
        for path in image_files:
            mask = masks_by_stem.get(path.stem + mask_suffix)
            if mask is None:
                missing.append(path.name)
            else:
                self.samples.append((path, mask))
        if missing:
            raise DataError(
                f"segmentation_folder: {len(missing)} image(s) have no mask named "
                f"'<stem>{mask_suffix}.<ext>' in {str(self.masks_dir)!r}, e.g. "
                f"{', '.join(missing[:3])}; add the masks or remove the images")
        self.task = Segmentation(class_names, input_key="input", label_key="mask",
                                 meta_keys=["path", "mask_path"], ignore_index=ignore_index,
                                 color_map=color_map)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        path, mask_path = self.samples[index]
        image = _decode(path, self.mode, "segmentation_folder", index)
        mask = _decode(mask_path, "unchanged", "segmentation_folder mask", index)
        if mask.shape[0] != 1:
            raise DataError(f"segmentation_folder: mask {str(mask_path)!r} has {mask.shape[0]} "
                            "channels; masks must hold one class index per pixel (grey or "
                            "palette PNG)")
        if mask.shape[-2:] != image.shape[-2:]:
            raise DataError(f"segmentation_folder: mask {str(mask_path)!r} is "
                            f"{tuple(mask.shape[-2:])} but its image is "
                            f"{tuple(image.shape[-2:])} (H, W)")
        return {"input": {"image": tv_tensors.Image(image),
                          "mask": tv_tensors.Mask(mask[0].long())},
                "path": str(path), "mask_path": str(mask_path)}

    def __repr__(self) -> str:
        return (f"SegmentationFolder(images={str(self.images_dir)!r}, "
                f"masks={str(self.masks_dir)!r}, samples={len(self)}, "
                f"classes={self.task.class_names})")


class CocoDetection(Dataset):
    """Images with boxes described by a COCO-format JSON file.

    Reads ``images`` (``id``, ``file_name``), ``annotations`` (``image_id``, ``bbox`` as
    ``[x, y, width, height]`` in pixels, ``category_id``, optional ``iscrowd``) and
    ``categories`` (``id``, ``name``). Categories are numbered ``0..K-1`` in increasing
    ``id`` order; crowd annotations are skipped. Images without annotations are kept (as
    negatives).

    Samples: ``{"input": {"image": Image (C, H, W) uint8, "boxes": BoundingBoxes (K, 4)
    XYXY, "labels": (K,) int64}, "path": str, "image_id": int}``.

    Args:
        images: Folder the ``file_name`` entries are relative to.
        annotations: The COCO JSON file.
        mode: Image decoding mode.
        color_map: ``{class: [r, g, b]}`` for drawing.

    Raises:
        DataError: Missing or malformed JSON, unknown categories or image ids.
    """

    def __init__(self, images: str, annotations: str, mode: str = "RGB",
                 color_map: Mapping[str, Sequence[int]] | None = None) -> None:
        self.images_dir = Path(images)
        self.annotations = Path(annotations)
        self.mode = mode
        if not self.annotations.exists():  # a FIFO or device: open_regular says what it is
            raise DataError(f"coco_detection: annotation file {str(self.annotations)!r} "
                            "does not exist")
        try:
            with open_regular(self.annotations, "r") as f:  # a FIFO is refused, not waited on
                data = json.load(f)
        except DataError as exc:
            raise DataError(f"coco_detection: {exc}; give the COCO JSON file") from None
        except OSError as exc:
            raise DataError(f"coco_detection: cannot read {str(self.annotations)!r}: "
                            f"{exc.strerror or exc}") from None
        except ValueError as exc:
            raise DataError(f"coco_detection: {str(self.annotations)!r} is not JSON: {exc}") \
                from None
        try:
            categories = sorted(data["categories"], key=lambda c: c["id"])
            images_info = data["images"]
            annots = data.get("annotations", [])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"coco_detection: {str(self.annotations)!r} is not COCO JSON "
                            f"(images, annotations, categories): {exc}") from exc
        self.category_ids = [int(c["id"]) for c in categories]
        index = {cid: i for i, cid in enumerate(self.category_ids)}
        self.records: list[dict[str, Any]] = []
        by_id: dict[int, dict[str, Any]] = {}
        for info in images_info:
            rec = {"id": int(info["id"]), "path": self.images_dir / info["file_name"],
                   "boxes": [], "labels": []}
            by_id[rec["id"]] = rec
            self.records.append(rec)
        for a in annots:
            if a.get("iscrowd", 0):
                continue
            rec = by_id.get(int(a["image_id"]))
            if rec is None or int(a["category_id"]) not in index:
                raise DataError(f"coco_detection: annotation {a.get('id')} refers to unknown "
                                f"image {a['image_id']} or category {a['category_id']}")
            x, y, w, h = (float(v) for v in a["bbox"])
            rec["boxes"].append([x, y, x + w, y + h])
            rec["labels"].append(index[int(a["category_id"])])
        if not self.records:
            raise DataError(f"coco_detection: {str(self.annotations)!r} lists no image")
        self.task = Detection([str(c["name"]) for c in categories], input_key="input",
                              label_key="target", meta_keys=["path", "image_id"],
                              color_map=color_map)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        rec = self.records[index]
        image = _decode(rec["path"], self.mode, "coco_detection", index)
        boxes = tv_tensors.BoundingBoxes(
            torch.tensor(rec["boxes"], dtype=torch.float32).reshape(-1, 4),
            format="XYXY", canvas_size=tuple(image.shape[-2:]))
        return {"input": {"image": tv_tensors.Image(image), "boxes": boxes,
                          "labels": torch.tensor(rec["labels"], dtype=torch.int64)},
                "path": str(rec["path"]), "image_id": rec["id"]}

    def __repr__(self) -> str:
        return (f"CocoDetection(annotations={str(self.annotations)!r}, images={len(self)}, "
                f"boxes={sum(len(r['boxes']) for r in self.records)}, "
                f"classes={self.task.class_names})")


class SuperResolutionFolder(Dataset):
    """High-resolution images and the low-resolution inputs made from them by downscaling.

    Each image (optionally cut into ``patch_size`` tiles every ``stride`` pixels) is
    cropped to a multiple of ``scale``, downscaled by ``scale`` with ``interpolation``
    (antialiased), rounded to uint8 like a stored image, and, with ``upsample``, brought
    back to the original size by bicubic interpolation (the SRCNN protocol: the model
    restores detail at the target size).

    Samples: ``{"input": {"image": Image (C, h, w) uint8, "target": Image (C, H, W) uint8},
    "path": str, "origin": [y, x]}`` with ``(h, w) = (H, W)`` when upsampling, else
    ``(H / scale, W / scale)``.

    Args:
        root: Folder of images.
        scale: Downscaling factor (2, 3, 4, ...).
        interpolation: ``bicubic``, ``bilinear``, ``area`` or ``nearest``.
        upsample: Bring inputs back to the target size (bicubic).
        mode: Image decoding mode (``L`` for grey / luminance, ``RGB``).
        patch_size: Cut images into square tiles of this size (``None``: whole images).
        stride: Step between tiles (default: ``patch_size``, no overlap).

    Raises:
        DataError: Missing folder, no images, or images smaller than one patch.
    """

    def __init__(self, root: str, scale: int = 2, interpolation: str = "bicubic",
                 upsample: bool = True, mode: str = "L", patch_size: int | None = None,
                 stride: int | None = None) -> None:
        self.root = Path(root)
        self.scale = int(scale)
        self.interpolation = interpolation
        self.upsample = upsample
        self.mode = mode
        self.patch_size = patch_size
        self.stride = stride or patch_size
        self.files = list_images(root, what="super_resolution_folder")
        self.images = [_decode(p, mode, "super_resolution_folder", i)
                       for i, p in enumerate(self.files)]
        self.tiles: list[tuple[int, int, int]] = []  # (image, y, x)
        for i, img in enumerate(self.images):
            h, w = img.shape[-2:]
            if patch_size is None:
                self.tiles.append((i, 0, 0))
                continue
            if h < patch_size or w < patch_size:
                raise DataError(f"super_resolution_folder: {str(self.files[i])!r} ({h}x{w}) is "
                                f"smaller than patch_size {patch_size}")
            assert self.stride is not None
            for y in range(0, h - patch_size + 1, self.stride):
                for x in range(0, w - patch_size + 1, self.stride):
                    self.tiles.append((i, y, x))
        self.task = SuperResolution(input_key="input", label_key="target",
                                    meta_keys=["path", "origin"])

    def __len__(self) -> int:
        return len(self.tiles)

    def degrade(self, hr: torch.Tensor) -> torch.Tensor:
        """The uint8 low-resolution input ``(C, h, w)`` of a uint8 target ``(C, H, W)``."""
        import torch.nn.functional as F

        x = hr[None].float()
        h, w = hr.shape[-2:]
        kwargs: dict[str, Any] = {"mode": self.interpolation}
        if self.interpolation in ("bilinear", "bicubic"):
            kwargs.update(align_corners=False, antialias=True)
        lr = F.interpolate(x, size=(h // self.scale, w // self.scale), **kwargs)
        lr = lr.round().clamp(0, 255)
        if self.upsample:
            lr = F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False)
            lr = lr.round().clamp(0, 255)
        return lr[0].to(torch.uint8)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision import tv_tensors

        i, y, x = self.tiles[index]
        img = self.images[i]
        if self.patch_size is not None:
            img = img[:, y:y + self.patch_size, x:x + self.patch_size]
        h, w = img.shape[-2:]
        hr = img[:, :h - h % self.scale, :w - w % self.scale].contiguous()
        return {"input": {"image": tv_tensors.Image(self.degrade(hr)),
                          "target": tv_tensors.Image(hr)},
                "path": str(self.files[i]), "origin": torch.tensor([y, x])}

    def __repr__(self) -> str:
        return (f"SuperResolutionFolder(root={str(self.root)!r}, images={len(self.files)}, "
                f"samples={len(self)}, scale={self.scale}, interpolation="
                f"{self.interpolation!r})")
