"""``thelper infer`` for the vision tasks: output writers and file decoders.

Writers (kind ``writer``, named after the task type):

* ``segmentation``: ``masks/<stem>.png``, palette PNGs whose pixel values are class indices
  (shown in the task's colours), and ``masks.csv`` (input → mask file);
* ``detection``: ``detections.json``, per input ``boxes`` ``[x1, y1, x2, y2]`` in pixels of
  the (transformed) image, ``labels`` (class names) and ``scores``;
* ``super_resolution`` and ``autoencoding``: ``images/<stem>.png``, 8-bit grey/RGB/RGBA
  when the task has an intensity range (``target_min``/``target_max``, mapped to 0..255),
  else ``images/<stem>.tif`` float32 (one page per channel when C > 1); and ``images.csv``.

File decoders (kind ``decoder``, named after the dataset type whose files they decode the
way the dataset does): ``image_folder`` (a uint8 ``(C, H, W)`` image in the dataset's
``mode``), ``segmentation_folder`` and ``coco_detection`` (the image as a joint sample
``{"image": Image}``), ``super_resolution_folder`` (a low-resolution image, upsampled by
``scale`` with bicubic interpolation and rounded to uint8 as the dataset makes its inputs
when ``upsample`` is set).

Importing this module imports neither torch nor pydantic: :mod:`thelper_vision.plugin`
registers :func:`output_components` on every command.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thelper.registry import ComponentInfo
from thelper.writers import CsvWriter, JsonWriter, OutputWriter, Source

__all__ = ["SegmentationWriter", "DetectionWriter", "ImageWriter", "ImageDecoder",
           "SuperResolutionDecoder", "output_components"]


# --------------------------------------------------------------------------- writers
class _IndexCsv(CsvWriter):
    """``<out>/<filename>``: ``input, file`` of each per-input file written."""

    def __init__(self, out: Path, task: Any, filename: str) -> None:
        super().__init__(out, task)
        self.filename = filename


class SegmentationWriter(OutputWriter):
    """``masks/<stem>.png`` (palette PNG, pixel value = class index) and ``masks.csv``.

    Predictions: class index maps ``(N, H, W)`` int64 (the task's ``decode``: argmax of the
    logits).
    """

    def __init__(self, out: Path, task: Any) -> None:
        super().__init__(out, task)
        self.index = _IndexCsv(out, task, "masks.csv")
        palette = getattr(task, "palette", None)
        self.palette = palette() if callable(palette) else []

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        from thelper_vision import draw

        rows = []
        for src, mask in zip(sources, predictions, strict=True):
            path = self.out / "masks" / f"{self.unique_stem(src.stem)}.png"
            draw.save_index_png(mask, self.palette, path)
            self.files.append(path)
            rows.append({"input": src.name, "mask": path.relative_to(self.out).as_posix()})
        self.index.rows(rows)

    def close(self) -> list[Path]:
        return [*self.files, *self.index.close()]


class DetectionWriter(JsonWriter):
    """``detections.json``: ``[{"input", "boxes": [[x1, y1, x2, y2]], "labels": [class
    name], "scores": [float]}]``, boxes in pixels of the (transformed) input image.

    Predictions: ``[{"boxes": (K, 4), "scores": (K,), "labels": (K,) int64 in 0..K-1}]``,
    the detector's eval-mode outputs with torchvision's background label removed.
    """

    filename = "detections.json"

    @classmethod
    def predictions(cls, task: Any, outputs: Any) -> Any:
        """Shift torchvision's labels (1..K, 0 = background) to the task's 0..K-1."""
        return [{"boxes": d["boxes"], "scores": d["scores"], "labels": d["labels"] - 1}
                for d in outputs]

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        names = list(getattr(self.task, "class_names", None) or [])
        for src, det in zip(sources, predictions, strict=True):
            labels = [int(v) for v in det["labels"].tolist()]
            self.records.append({
                "input": src.name,
                "boxes": [[float(v) for v in b] for b in det["boxes"].tolist()],
                "labels": [names[i] if 0 <= i < len(names) else i for i in labels],
                "scores": [float(v) for v in det["scores"].tolist()],
            })


class ImageWriter(OutputWriter):
    """``images/<stem>.png`` (or ``.tif``) per input, and ``images.csv``.

    Predictions: images ``(N, C, H, W)`` float (the task's ``decode``: clamped to
    ``[target_min, target_max]``). With both bounds set, each image is written as an 8-bit
    PNG, ``round(255 * (y - target_min) / (target_max - target_min))``, grey (C = 1), RGB
    (3) or RGBA (4); otherwise (no range, or another channel count) as a float32 TIFF with
    the values themselves, one page per channel. ``(N, H, W)`` predictions are grey images;
    per-sample vectors ``(N, D)`` go to ``predictions.csv`` (``input, y0, y1, ...``).
    """

    def __init__(self, out: Path, task: Any) -> None:
        super().__init__(out, task)
        self.index = _IndexCsv(out, task, "images.csv")
        self.vectors = _IndexCsv(out, task, "predictions.csv")
        low, high = getattr(task, "target_min", None), getattr(task, "target_max", None)
        self.range = (float(low), float(high)) if low is not None and high is not None \
            and float(high) > float(low) else None

    def write(self, sources: Sequence[Source], predictions: Any) -> None:
        if predictions.ndim == 2:
            flat = predictions.float().tolist()
            self.vectors.rows([{"input": s.name, **{f"y{j}": round(v, 6)
                                                    for j, v in enumerate(values)}}
                               for s, values in zip(sources, flat, strict=True)])
            return
        if predictions.ndim == 3:
            predictions = predictions[:, None]
        rows = []
        for src, image in zip(sources, predictions, strict=True):
            path = self._save(image.float(), self.unique_stem(src.stem))
            self.files.append(path)
            rows.append({"input": src.name, "image": path.relative_to(self.out).as_posix()})
        self.index.rows(rows)

    def _save(self, image: Any, stem: str) -> Path:
        import numpy as np
        import torch
        from PIL import Image

        folder = self.out / "images"
        folder.mkdir(parents=True, exist_ok=True)
        channels = int(image.shape[0])
        if self.range is not None and channels in (1, 3, 4):
            low, high = self.range
            scaled = ((image - low) / (high - low)).clamp(0, 1).mul(255).round()
            arr = scaled.to(torch.uint8).permute(1, 2, 0).numpy()
            mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
            path = folder / f"{stem}.png"
            Image.fromarray(np.ascontiguousarray(arr[..., 0] if channels == 1 else arr),
                            mode=mode).save(path)
            return path
        pages = [Image.fromarray(np.ascontiguousarray(c.numpy().astype(np.float32)), mode="F")
                 for c in image]
        path = folder / f"{stem}.tif"
        pages[0].save(path, save_all=len(pages) > 1, append_images=pages[1:])
        return path

    def close(self) -> list[Path]:
        return [*self.files, *self.index.close(), *self.vectors.close()]


# -------------------------------------------------------------------------- decoders
class ImageDecoder:
    """An image file decoded as the vision datasets decode theirs
    (:func:`thelper_vision.datasets.decode_image_file`): uint8 ``(C, H, W)`` (uint16 for
    16-bit PNGs), as a joint sample ``{"image": Image}`` for the dense datasets.

    Args:
        mode: ``RGB``, ``L`` or ``unchanged``.
        joint: Return ``{"image": tv_tensors.Image}`` instead of the plain tensor.

    Attributes:
        params: Plain data that rebuilds the decoder (``{"mode": ...}``).
    """

    def __init__(self, mode: str = "RGB", joint: bool = False) -> None:
        self.params = {"mode": str(mode)}
        self.joint = joint

    def __call__(self, path: Path) -> Any:
        from thelper_vision.datasets import decode_image_file

        image = decode_image_file(path, self.params["mode"])
        if not self.joint:
            return image
        from torchvision import tv_tensors

        return {"image": tv_tensors.Image(image)}

    def __repr__(self) -> str:
        return f"ImageDecoder(mode={self.params['mode']!r}, joint={self.joint})"


class SuperResolutionDecoder:
    """A low-resolution image file as a ``super_resolution_folder`` input.

    The dataset makes its inputs by downscaling its images by ``scale`` (rounded to uint8)
    and, with ``upsample``, bicubic upsampling back to the target size (rounded to uint8);
    a low-resolution file ``(C, h, w)`` therefore becomes ``(C, h * scale, w * scale)`` the
    same way (or stays as it is without ``upsample``), as ``{"image": Image}`` uint8.

    Args:
        mode: The dataset's decoding mode.
        scale: The dataset's scale factor.
        upsample: The dataset's ``upsample``.

    Attributes:
        params: Plain data that rebuilds the decoder.
    """

    def __init__(self, mode: str = "L", scale: int = 2, upsample: bool = True) -> None:
        self.params = {"mode": str(mode), "scale": int(scale), "upsample": bool(upsample)}

    def __call__(self, path: Path) -> Any:
        import torch
        import torch.nn.functional as F
        from torchvision import tv_tensors

        from thelper_vision.datasets import decode_image_file

        lr = decode_image_file(path, self.params["mode"])
        if self.params["upsample"]:
            s = self.params["scale"]
            h, w = lr.shape[-2:]
            top = float(torch.iinfo(lr.dtype).max)
            up = F.interpolate(lr[None].float(), size=(h * s, w * s), mode="bicubic",
                               align_corners=False)
            lr = up.round().clamp(0, top)[0].to(lr.dtype)
        return {"image": tv_tensors.Image(lr)}

    def __repr__(self) -> str:
        p = self.params
        return (f"SuperResolutionDecoder(mode={p['mode']!r}, scale={p['scale']}, "
                f"upsample={p['upsample']})")


def image_folder_decoder(dataset_params: Mapping[str, Any]) -> ImageDecoder:
    """Decoder of ``image_folder``: the plain uint8 image in the dataset's ``mode``."""
    return ImageDecoder(dataset_params.get("mode", "RGB"), joint=False)


def joint_image_decoder(dataset_params: Mapping[str, Any]) -> ImageDecoder:
    """Decoder of ``segmentation_folder`` and ``coco_detection``: ``{"image": Image}``."""
    return ImageDecoder(dataset_params.get("mode", "RGB"), joint=True)


def super_resolution_decoder(dataset_params: Mapping[str, Any]) -> SuperResolutionDecoder:
    """Decoder of ``super_resolution_folder`` (see :class:`SuperResolutionDecoder`)."""
    return SuperResolutionDecoder(dataset_params.get("mode", "L"),
                                  dataset_params.get("scale", 2),
                                  dataset_params.get("upsample", True))


# ---------------------------------------------------------------------- registration
def output_components() -> list[ComponentInfo]:
    """The vision writers and file decoders (data only; see the module doc)."""
    C = ComponentInfo
    m = "thelper_vision.writers"
    return [
        C("writer", "segmentation", f"{m}:SegmentationWriter",
          description="masks/<stem>.png: class index per pixel (palette PNG), masks.csv"),
        C("writer", "detection", f"{m}:DetectionWriter",
          description="detections.json: boxes, class names and scores per input"),
        C("writer", "super_resolution", f"{m}:ImageWriter",
          description="images/<stem>.png (8-bit, task range) or .tif (float32)"),
        C("writer", "autoencoding", f"{m}:ImageWriter",
          description="images/<stem>.png (8-bit, task range) or .tif (float32)"),
        C("decoder", "image_folder", f"{m}:image_folder_decoder",
          description="an image file as the dataset decodes it: uint8 (C, H, W)"),
        C("decoder", "segmentation_folder", f"{m}:joint_image_decoder",
          description="an image file as the dataset decodes it, as {image: Image}"),
        C("decoder", "coco_detection", f"{m}:joint_image_decoder",
          description="an image file as the dataset decodes it, as {image: Image}"),
        C("decoder", "super_resolution_folder", f"{m}:super_resolution_decoder",
          description="a low-resolution image, bicubic-upsampled by scale like the inputs"),
    ]
