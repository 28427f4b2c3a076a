"""Datasets of thelper-gui: ``image_files`` (images to annotate) and ``annotations`` (what
``thelper annot`` saved, loaded back for training).

``annotations`` gives the same samples as the thelper-vision dataset of its kind:
segmentation like ``segmentation_folder`` (joint ``{"image", "mask"}`` under ``input``),
classification like ``image_folder`` (``input``, ``label``), boxes through
``coco_detection`` itself (``boxes.json`` is COCO JSON).
"""

from __future__ import annotations

import csv
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from thelper.exceptions import ConfigError, DataError
from thelper.tasks import Classification
from thelper_gui.store import open_lock, read_meta, safe_stem

__all__ = ["ImageFiles", "Annotations", "fold_journal"]

log = logging.getLogger("thelper.gui")


class ImageFiles(Dataset):
    """Every image directly in ``root``, sorted by name, without labels.

    For ``thelper annot``: give the dataset a ``task:`` block naming the classes to
    annotate. Samples: ``{input_key: (C, H, W) uint8 tensor, "path": str}``.

    Args:
        root: Folder of images.
        mode: ``RGB``, ``L`` or ``unchanged``.
        task: The dataset's ``task:`` block, built (required).

    Raises:
        ConfigError: No ``task:`` block.
        DataError: Missing folder or no image in it.
    """

    def __init__(self, root: str, mode: str = "RGB", task: Any = None) -> None:
        from thelper_vision.dense_datasets import list_images

        if task is None:
            raise ConfigError("image_files holds no labels: add a 'task' block naming the "
                              "classes to annotate, e.g. task: {type: segmentation, params: "
                              "{class_names: [background, object]}}")
        self.root, self.mode, self.task = Path(root), mode, task
        self.files = list_images(root, what="image_files")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def groups(self) -> list[str]:
        """One group per image (its file name): the images hold no class to stratify the
        splits on, so they split as groups of one."""
        return [path.name for path in self.files]

    def __getitem__(self, index: int) -> dict[str, Any]:
        from thelper_vision.datasets import decode_image_file

        path = self.files[index]
        try:
            image = decode_image_file(path, self.mode)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
            raise DataError(f"image_files: cannot decode {str(path)!r}: {type(exc).__name__}: "
                            f"{exc}") from exc
        return {self.task.input_key: image, "path": str(path)}

    def __repr__(self) -> str:
        return f"ImageFiles(root={str(self.root)!r}, images={len(self)})"


def fold_journal(session: Path) -> None:
    """Fold changes still in ``journal.jsonl`` into the saved files (after a crash), unless
    a ``thelper annot`` holds the session (then the saved files are read as they are)."""
    journal = Path(session) / "journal.jsonl"
    if not journal.is_file() or journal.stat().st_size == 0:
        return
    fd = open_lock(Path(session))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        log.warning("%s is open in 'thelper annot': reading its saved files without the last "
                    "changes", session)
        os.close(fd)
        return
    os.close(fd)  # released: the store takes the lock itself
    from thelper_gui.store import open_store

    meta = read_meta(session)
    open_store(Path(session), meta["annotator"], meta["labels"], meta.get("config", "")
               ).close()


def _image_path(session: Path, info: dict[str, Any]) -> Path:
    return Path(info["path"]) if info.get("path") else session / info["image"]


class Annotations(Dataset):
    """Segmentation masks or class labels saved by ``thelper annot`` (boxes: see
    :func:`annotations`). Only annotated samples are included; skipped images are not.

    Args:
        session: The annotation session directory.
        mode: Image decoding mode.

    Raises:
        DataError: Not an annotation session, or nothing annotated yet.
    """

    def __init__(self, session: str, mode: str = "RGB") -> None:
        self.session = Path(session)
        self.mode = mode
        meta = read_meta(self.session)
        self.kind = meta["annotator"]
        self.records: list[tuple[Path, Any]] = []
        samples = meta.get("samples", {})
        if self.kind == "segmentation":
            labels = meta["labels"]
            from thelper_vision.tasks import Segmentation

            names = [str(label["name"]) for label in labels]
            self.lut = torch.full((256,), 255, dtype=torch.int64)
            for i, label in enumerate(labels):
                self.lut[int(label["id"])] = i
            for key, info in samples.items():
                stem = safe_stem(info.get("stem"),
                                 f"{self.session / 'annotator.json'}: samples.{key}.stem")
                mask = self.session / "masks" / f"{stem}.png"
                if mask.is_file():
                    self.records.append((_image_path(self.session, info), mask))
            self.task = Segmentation(names, input_key="input", label_key="mask",
                                     meta_keys=["path", "mask_path"], ignore_index=255,
                                     color_map={str(x["name"]): x["color"] for x in labels})
        elif self.kind == "classification":
            names = [str(n) for n in meta["labels"]]
            index = {n: i for i, n in enumerate(names)}
            path = self.session / "labels.csv"
            rows = list(csv.DictReader(path.open(newline=""))) if path.is_file() else []
            for row in rows:
                label = row.get("label") or ""
                info = samples.get(row["sample"])
                if not label or info is None:
                    continue
                if label not in index:
                    raise DataError(f"{path}: label {label!r} of {row['sample']} is not one of "
                                    f"the session's classes {names}")
                self.records.append((_image_path(self.session, info), index[label]))
            self.task = Classification(names, input_key="input", label_key="label",
                                       meta_keys=["path"])
            self.targets = [label for _, label in self.records]
        else:
            raise DataError(f"{self.session}: {self.kind} annotations load through "
                            "coco_detection (use the annotations dataset factory)")
        if not self.records:
            raise DataError(f"annotations: {self.session} holds no {self.kind} annotation yet; "
                            f"annotate with 'thelper annot' first")

    def __len__(self) -> int:
        return len(self.records)

    def _decode(self, path: Path, mode: str, index: int) -> torch.Tensor:
        from thelper_vision.datasets import decode_image_file

        try:
            return decode_image_file(path, mode)
        except Exception as exc:  # noqa: BLE001 - any decoder failure is a data problem
            raise DataError(f"annotations: cannot decode sample {index} ({str(path)!r}): "
                            f"{type(exc).__name__}: {exc}") from exc

    def __getitem__(self, index: int) -> dict[str, Any]:
        path, target = self.records[index]
        image = self._decode(path, self.mode, index)
        if self.kind == "classification":
            return {"input": image, "label": target, "path": str(path)}
        from torchvision import tv_tensors

        mask = self._decode(target, "unchanged", index)
        if mask.shape[-2:] != image.shape[-2:]:
            raise DataError(f"annotations: mask {str(target)!r} is {tuple(mask.shape[-2:])} "
                            f"but its image is {tuple(image.shape[-2:])}")
        mask = self.lut[mask[0].long()]
        return {"input": {"image": tv_tensors.Image(image), "mask": tv_tensors.Mask(mask)},
                "path": str(path), "mask_path": str(target)}

    def __repr__(self) -> str:
        return (f"Annotations(session={str(self.session)!r}, kind={self.kind!r}, "
                f"samples={len(self)}, classes={self.task.class_names})")


def annotations(session: str, mode: str = "RGB") -> Any:
    """The ``annotations`` dataset: :class:`Annotations` for masks and labels,
    ``coco_detection`` over ``boxes.json`` for boxes. Changes left in the journal by an
    interrupted session are folded in first.

    Raises:
        DataError: Not an annotation session, or nothing annotated yet.
    """
    root = Path(session)
    meta = read_meta(root)
    fold_journal(root)
    if meta["annotator"] != "boxes":
        return Annotations(session, mode)
    from thelper_vision.dense_datasets import CocoDetection

    path = root / "boxes.json"
    if not path.is_file():
        raise DataError(f"annotations: {root} holds no boxes yet; annotate with 'thelper "
                        "annot' first")
    colors = {}
    return CocoDetection(str(root), str(path), mode=mode, color_map=colors or None)
