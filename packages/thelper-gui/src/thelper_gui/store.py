"""The annotation session directory and what is saved in it.

Layout of ``<save-dir>/<name>/``::

    annotator.json   annotator type, labels or classes, and every sample seen:
                     {key: {dataset, index, path, stem, height, width}}
    state.json       the sample shown last ({"position", "key"}): a new run resumes there
    journal.jsonl    changes not yet folded into the files below (fsynced per change)
    masks/<stem>.png segmentation: one uint8 label id per pixel
    labels.csv       classification: sample, dataset, index, path, label (empty: skipped)
    boxes.json       bounding boxes: COCO JSON (images, annotations, categories)
    images/<stem>.png  copies of images that have no file of their own (e.g. sklearn data)

Changes go to the journal first (:class:`~thelper_gui.journal.Journal`) and are folded into
the files by a background :class:`~thelper_gui.journal.Compactor`; opening a session replays
what the journal still holds, so nothing fsynced is ever lost.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import io
import json
import os
import threading
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from thelper.data.files import open_regular
from thelper.exceptions import ConfigError, DataError
from thelper_gui.journal import Compactor, Journal, atomic_write

__all__ = ["AnnotationStore", "MaskStore", "LabelStore", "BoxStore", "open_store", "KINDS",
           "encode_patch", "decode_patch", "read_meta"]

#: annotator type -> store class name
KINDS = {"segmentation": "MaskStore", "classification": "LabelStore", "boxes": "BoxStore"}
FORMAT = 1
#: Most pixels (height × width) a mask of ``annotator.json`` may have (256 Mi: 256 MiB).
MAX_PIXELS = 2**28


def safe_stem(stem: Any, where: str) -> str:
    """``stem`` if it is a single plain file name (no ``/`` or ``\\``, not ``.`` or ``..``,
    no NUL, not empty).

    Args:
        stem: The value read from ``annotator.json``.
        where: Names the file and key in the error (``annotator.json: samples.x.stem``).

    Raises:
        DataError: Not a plain file name (it could lead out of the session directory).
    """
    if (not isinstance(stem, str) or not stem or stem in (".", "..") or "/" in stem
            or "\\" in stem or "\0" in stem):
        raise DataError(f"{where}: {stem!r} is not a plain file name (no '/', '\\', '..' or "
                        "NUL); thelper annot writes names like 'image_0003': fix or delete "
                        "this sample")
    return stem


def mask_shape(info: Mapping[str, Any], where: str) -> tuple[int, int]:
    """``(height, width)`` of a sample of ``annotator.json``, checked.

    Raises:
        DataError: Not positive integers, or more than :data:`MAX_PIXELS` pixels.
    """
    try:
        h, w = info["height"], info["width"]
        if isinstance(h, bool) or isinstance(w, bool) or int(h) != h or int(w) != w:
            raise ValueError("not integers")
        h, w = int(h), int(w)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{where}: height/width are not integers ({exc})") from None
    if h < 1 or w < 1 or h * w > MAX_PIXELS:
        raise DataError(f"{where}: a {h}x{w} mask is out of range (1 to {MAX_PIXELS} "
                        "pixels); fix or delete this sample")
    return h, w


def encode_patch(pixels: np.ndarray) -> str:
    """uint8 ``(h, w)`` pixels as base64 of their zlib-compressed bytes."""
    return base64.b64encode(zlib.compress(np.ascontiguousarray(pixels).tobytes(), 1)).decode()


def decode_patch(data: str, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_patch`: uint8 pixels of ``shape`` ``(h, w)``.

    Decompresses at most ``h * w + 1`` bytes, so a crafted patch cannot expand in memory.

    Raises:
        ValueError: Not base64 of zlib data, or not exactly ``h * w`` bytes.
    """
    h, w = (int(v) for v in shape)
    if h < 0 or w < 0 or h * w > MAX_PIXELS:
        raise ValueError(f"patch size {h}x{w} is out of range")
    try:
        packed = base64.b64decode(data, validate=True)
        raw = zlib.decompressobj().decompress(packed, h * w + 1)
    except (TypeError, ValueError, zlib.error) as exc:
        raise ValueError(f"patch is not base64 zlib data ({exc})") from None
    if len(raw) != h * w:
        raise ValueError(f"patch holds {'more than ' if len(raw) > h * w else ''}{len(raw)} "
                         f"bytes, not {h}x{w} = {h * w}")
    return np.frombuffer(raw, dtype=np.uint8).reshape(h, w).copy()


def read_meta(session_dir: Path) -> dict[str, Any]:
    """``annotator.json`` of an annotation session.

    Raises:
        DataError: Missing or unreadable.
    """
    path = Path(session_dir) / "annotator.json"
    try:
        with open_regular(path, "r") as f:  # a FIFO planted there is refused, not waited on
            meta = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{session_dir}: not an annotation session (no annotator.json); "
                        "give the directory 'thelper annot' wrote") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise DataError(f"{path}: not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("annotator") not in KINDS:
        raise DataError(f"{path}: not written by thelper annot (no known 'annotator')")
    return meta


class AnnotationStore:
    """Base of the per-annotator stores: session directory, lock, journal, compaction.

    Args:
        root: The annotation session directory (created).
        kind: ``segmentation``, ``classification`` or ``boxes``.
        labels: What the annotator labels with: ``[{id, name, color}]`` or class names,
            recorded in ``annotator.json``.
        config_name: The config's ``name``.
        interval: Seconds the compactor gathers changes.

    Raises:
        ConfigError: The directory belongs to another annotator type or another
            ``thelper annot`` holds it.
    """

    kind = ""

    def __init__(self, root: Path, kind: str, labels: Any, config_name: str = "",
                 interval: float = 0.5) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = open_lock(self.root)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise ConfigError(f"{self.root} is open in another 'thelper annot'; close it "
                              "first") from None
        try:  # a refused session is given back
            if (self.root / "annotator.json").exists():
                self.meta = read_meta(self.root)
                if self.meta["annotator"] != kind:
                    raise ConfigError(f"{self.root} holds {self.meta['annotator']} "
                                      f"annotations, not {kind}; choose another --save-dir "
                                      "or session name")
                self.meta["labels"] = labels
            else:
                self.meta = {"format": FORMAT, "annotator": kind, "config": config_name,
                             "labels": labels, "samples": {}}
            self._write_meta()
        except BaseException:
            self._release()
            raise
        self.lock = threading.RLock()
        self.dirty: set[str] = set()
        self.journal = Journal(self.root / "journal.jsonl")
        with self.lock:
            try:  # a refused session is given back: once mended, it opens
                self._load()
                self._replay()
            except BaseException:
                self.journal.close()
                self._release()
                raise
        self.compactor = Compactor(self.compact, interval)
        self.compactor.start()
        if self.journal.count:
            self.compactor.poke()

    def _replay(self) -> None:
        """Apply the entries still in the journal (line ``n`` is entry ``n``).

        Raises:
            DataError: An entry is malformed, names an unsafe file or a rectangle outside
                its mask (the message names the journal file and line).
        """
        for n, entry in enumerate(Journal.read(self.journal.path), 1):
            try:
                self._apply(entry)
            except DataError as exc:
                raise DataError(f"{self.journal.path}: line {n}: {exc}") from None
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                raise DataError(f"{self.journal.path}: line {n} is not a valid "
                                f"{self.kind} entry ({type(exc).__name__}: {exc}); restore "
                                "the file or delete it to drop the unsaved changes") from None

    # ------------------------------------------------------------------ samples
    @property
    def samples(self) -> dict[str, dict[str, Any]]:
        """``{key: {dataset, index, path, stem, height, width}}`` of every sample seen."""
        return self.meta["samples"]

    def register(self, key: str, info: Mapping[str, Any]) -> dict[str, Any]:
        """Record a sample (its stem, file and size) before anything is saved for it."""
        with self.lock:
            known = self.samples.get(key)
            if known is not None and all(known.get(k) == v for k, v in info.items()):
                return known
            self.samples[key] = {**(known or {}), **dict(info)}
            self._write_meta()
            return self.samples[key]

    def _write_meta(self) -> None:
        atomic_write(self.root / "annotator.json",
                     (json.dumps(self.meta, indent=1) + "\n").encode())

    # ---------------------------------------------------------------- position
    def position(self) -> dict[str, Any] | None:
        """``{"position", "key"}`` saved by the last run, or ``None``."""
        try:
            with open_regular(self.root / "state.json", "r") as f:
                state = json.load(f)
        except (FileNotFoundError, ValueError, DataError):  # start at the first sample
            return None
        return state if isinstance(state, dict) else None

    def set_position(self, position: int, key: str) -> None:
        """Remember the sample shown (atomically)."""
        atomic_write(self.root / "state.json",
                     json.dumps({"position": position, "key": key}).encode())

    # ------------------------------------------------------------------ changes
    def record(self, entry: dict[str, Any]) -> None:
        """Apply a change and make it durable (journal fsync) before returning.

        Raises:
            OSError: The journal cannot be written (the change is not applied).
        """
        with self.lock:
            self.journal.append(entry)
            self._apply(entry)
        self.compactor.poke()

    def compact(self) -> None:
        """Fold the journal into the saved files (called by the compactor thread)."""
        with self.lock:
            count = self.journal.count
            keys = set(self.dirty)
            self.dirty.clear()
            snapshot = self._snapshot(keys)
        try:
            self._write(snapshot)
        except BaseException:
            with self.lock:
                self.dirty |= keys
            raise
        with self.lock:
            self.journal.drop(count)

    def close(self) -> None:
        """Fold what is left, close the journal and release the directory."""
        self.compactor.stop()
        if self.compactor.error is not None:
            self._release()
            raise DataError(f"{self.root}: saving failed ({self.compactor.error}); the "
                            "changes are kept in journal.jsonl and replayed next time")
        self.journal.close()
        self._release()

    def _release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    # ------------------------------------------------------------ per annotator
    def _load(self) -> None:
        """Read the saved files."""

    def _apply(self, entry: Mapping[str, Any]) -> None:
        raise NotImplementedError

    def _snapshot(self, keys: set[str]) -> Any:
        raise NotImplementedError

    def _write(self, snapshot: Any) -> None:
        raise NotImplementedError


class MaskStore(AnnotationStore):
    """Segmentation masks: ``masks/<stem>.png``, uint8 label ids.

    Journal entries: ``{"sample", "op", "rect": [x, y, w, h], "data"}`` where ``data`` is
    :func:`encode_patch` of the rectangle's pixels after the change (``op`` is ``brush``,
    ``erase``, ``fill``, ``undo``, ``redo`` or ``prefill``; a brush entry also keeps its
    ``label``, ``radius`` and ``points``).
    """

    kind = "segmentation"

    def _load(self) -> None:
        self.masks: dict[str, np.ndarray] = {}
        (self.root / "masks").mkdir(exist_ok=True)

    def mask_path(self, key: str) -> Path:
        """``masks/<stem>.png`` of a sample, checked to stay in the session directory.

        Raises:
            DataError: The stem is not a plain file name, or ``masks`` leads out of the
                session through a symbolic link.
        """
        from thelper.exceptions import SessionError
        from thelper.session import safe_path

        stem = safe_stem(self.samples[key].get("stem"),
                         f"{self.root / 'annotator.json'}: samples.{key}.stem")
        try:
            return safe_path(self.root, f"masks/{stem}.png")
        except SessionError as exc:
            raise DataError(str(exc)) from None

    def saved(self, key: str) -> bool:
        """Whether the sample has a mask (saved or in the journal)."""
        return key in self.masks or (key in self.samples and self.mask_path(key).is_file())

    def mask(self, key: str, fill: int = 0) -> np.ndarray:
        """The sample's mask ``(H, W)`` uint8 (a new one filled with ``fill``); the store
        owns it: change it only through :meth:`record`."""
        with self.lock:
            mask = self.masks.get(key)
            if mask is None:
                mask = self._read(key, fill)
                self.masks[key] = mask
            return mask

    def _read(self, key: str, fill: int) -> np.ndarray:
        import cv2

        info = self.samples[key]
        shape = mask_shape(info, f"{self.root / 'annotator.json'}: samples.{key}")
        path = self.mask_path(key)
        if path.is_file():
            mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.shape[:2] != shape or mask.ndim != 2:
                raise DataError(f"{path}: not a {shape[0]}x{shape[1]} grey mask; delete it to "
                                "start this sample over")
            return mask.astype(np.uint8, copy=False)
        return np.full(shape, fill, dtype=np.uint8)

    def _apply(self, entry: Mapping[str, Any]) -> None:
        key = entry["sample"]
        if key not in self.samples:
            raise DataError(f"sample {key!r} is not in annotator.json")
        self.mask_path(key)  # the stem is checked before anything is read or written
        rect = entry["rect"]
        if (not isinstance(rect, list) or len(rect) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in rect)):
            raise DataError(f"rect {rect!r} is not four integers [x, y, w, h]")
        x, y, w, h = rect
        mask = self.mask(key, int(entry.get("fill", 0)))
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > mask.shape[1] or y + h > mask.shape[0]:
            raise DataError(f"rect {rect} is outside the {mask.shape[0]}x{mask.shape[1]} mask "
                            f"of {key!r}")
        try:
            mask[y:y + h, x:x + w] = decode_patch(entry["data"], (h, w))
        except ValueError as exc:
            raise DataError(f"data of {key!r}: {exc}") from None
        self.dirty.add(key)

    def _snapshot(self, keys: set[str]) -> list[tuple[Path, np.ndarray]]:
        return [(self.mask_path(k), self.masks[k].copy()) for k in sorted(keys)]

    def _write(self, snapshot: list[tuple[Path, np.ndarray]]) -> None:
        import cv2

        for path, mask in snapshot:
            ok, png = cv2.imencode(".png", mask)
            if not ok:
                raise DataError(f"cannot encode {path} as PNG")
            atomic_write(path, png.tobytes())


class LabelStore(AnnotationStore):
    """Class labels: ``labels.csv`` (``sample, dataset, index, path, label``; an empty
    label is a skipped image). Entries: ``{"sample", "op": "label", "label": name or
    None}`` (``None``: skipped) and ``{"sample", "op": "clear"}`` (the row removed)."""

    kind = "classification"
    columns = ("sample", "dataset", "index", "path", "label")

    def _load(self) -> None:
        self.labels: dict[str, str | None] = {}
        path = self.root / "labels.csv"
        if path.is_file():
            with path.open(newline="") as f:
                for row in csv.DictReader(f):
                    self.labels[row["sample"]] = row["label"] or None

    def _apply(self, entry: Mapping[str, Any]) -> None:
        if entry.get("op") == "clear":
            self.labels.pop(entry["sample"], None)
        else:
            self.labels[entry["sample"]] = entry.get("label")
        self.dirty.add(entry["sample"])

    def _snapshot(self, keys: set[str]) -> bytes:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for key, label in self.labels.items():
            info = self.samples.get(key, {})
            writer.writerow([key, info.get("dataset", ""), info.get("index", ""),
                             info.get("path") or info.get("image") or "", label or ""])
        return out.getvalue().encode()

    def _write(self, snapshot: bytes) -> None:
        atomic_write(self.root / "labels.csv", snapshot)


class BoxStore(AnnotationStore):
    """Boxes: ``boxes.json`` in COCO format. Entries: ``{"sample", "op": "boxes", "boxes":
    [{"bbox": [x, y, w, h], "label": class index}]}``, the image's whole list (an empty list
    marks an image checked and without objects)."""

    kind = "boxes"

    def _load(self) -> None:
        self.boxes: dict[str, list[dict[str, Any]]] = {}
        path = self.root / "boxes.json"
        try:  # anything but a regular file (or a link to one) is refused, not waited on
            with open_regular(path, "r") as f:
                coco = json.load(f)
        except FileNotFoundError:  # nothing saved yet (or a dangling link, replaced on save)
            return
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise DataError(f"{path}: not the COCO JSON thelper annot writes ({exc})") \
                from None
        try:
            keys = {int(im["id"]): im["thelper_sample"] for im in coco["images"]}
            cats = {int(c["id"]): i for i, c in enumerate(
                sorted(coco["categories"], key=lambda c: c["id"]))}
            for key in keys.values():
                self.boxes[key] = []
            for a in coco["annotations"]:
                self.boxes[keys[int(a["image_id"])]].append(
                    {"bbox": [float(v) for v in a["bbox"]], "label": cats[int(a["category_id"])]})
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not the COCO JSON thelper annot writes ({exc})") from None

    def _apply(self, entry: Mapping[str, Any]) -> None:
        self.boxes[entry["sample"]] = [dict(b) for b in entry["boxes"]]
        self.dirty.add(entry["sample"])

    def coco(self) -> dict[str, Any]:
        """The boxes as COCO JSON: ``file_name`` is the image's path (absolute, or relative
        to the session directory for copies); ``category_id`` = class index + 1."""
        names = list(self.meta["labels"])
        images, annotations = [], []
        for n, (key, boxes) in enumerate(self.boxes.items(), 1):
            info = self.samples.get(key, {})
            images.append({"id": n, "file_name": info.get("path") or info.get("image", ""),
                           "height": info.get("height"), "width": info.get("width"),
                           "thelper_sample": key})
            for b in boxes:
                x, y, w, h = b["bbox"]
                annotations.append({"id": len(annotations) + 1, "image_id": n,
                                    "category_id": int(b["label"]) + 1,
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
        return {"images": images, "annotations": annotations, "categories": categories}

    def _snapshot(self, keys: set[str]) -> bytes:
        return (json.dumps(self.coco(), indent=1) + "\n").encode()

    def _write(self, snapshot: bytes) -> None:
        atomic_write(self.root / "boxes.json", snapshot)


def open_lock(root: Path) -> int:
    """Open (create) ``root/.lock`` without following a symbolic link.

    Raises:
        DataError: ``.lock`` is a symbolic link.
    """
    path = Path(root) / ".lock"
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except OSError:
        if path.is_symlink():
            raise DataError(f"{path} is a symbolic link; thelper does not follow it: remove "
                            "it") from None
        raise


def open_store(root: Path, kind: str, labels: Any, config_name: str = "",
               interval: float = 0.5) -> AnnotationStore:
    """The store of an annotator type (see :data:`KINDS`)."""
    cls = {"MaskStore": MaskStore, "LabelStore": LabelStore, "BoxStore": BoxStore}[KINDS[kind]]
    return cls(root, kind, labels, config_name, interval)


def iter_saved(meta: Mapping[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    """``(key, info)`` of the samples recorded in ``annotator.json``."""
    return meta.get("samples", {}).items()
