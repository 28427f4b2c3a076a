"""The samples an annotator shows: every sample of a config's datasets, before transforms.

The datasets come from :func:`thelper.build.build_data` (the one assembly path every command
uses), so ``thelper annot`` sees exactly the samples ``thelper run`` would split. Samples are
read raw (no augmentation, no base transforms): what is annotated is the stored image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thelper.exceptions import DataError

__all__ = ["SampleRef", "SampleSource", "to_bgr_uint8"]


@dataclass(frozen=True)
class SampleRef:
    """Where a sample comes from.

    Attributes:
        key: ``<dataset>/<index>``, the sample's identity in the annotation session.
        dataset: Dataset name in the config.
        index: Index in that dataset.
    """

    key: str
    dataset: str
    index: int


def to_bgr_uint8(image: Any) -> np.ndarray:
    """An image as OpenCV shows it: ``(H, W, 3)`` uint8 BGR.

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` tensor or array, uint8 (0-255) or float (values
            in ``[0, 1]`` are scaled to 0-255, others min-max stretched); 1, 3 or 4
            channels (RGB order; alpha dropped).

    Raises:
        DataError: Not an image (shape or channel count).
    """
    arr = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4):
        raise DataError(f"expected an image (C, H, W) with 1, 3 or 4 channels, got shape "
                        f"{tuple(arr.shape)}")
    arr = arr[:3]
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            arr = arr * 255.0
        elif hi > lo:
            arr = (arr - lo) * (255.0 / (hi - lo))
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    hwc = np.transpose(arr, (1, 2, 0))
    if hwc.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(hwc, 3, axis=2))
    return np.ascontiguousarray(hwc[:, :, ::-1])  # RGB -> BGR


class SampleSource:
    """Every sample of ``datasets``, in config order, read raw.

    Args:
        datasets: ``{name: dataset}`` (e.g. :attr:`thelper.build.SessionData.datasets`).
        task: The merged task (its ``input_key`` locates the image).
        input_key: Key of the image in a sample (default: the task's ``input_key``); a
            joint sample (a mapping) gives its ``image``.
    """

    def __init__(self, datasets: Mapping[str, Any], task: Any,
                 input_key: str | None = None) -> None:
        self.datasets = dict(datasets)
        self.task = task
        self.input_key = input_key or getattr(task, "input_key", "input")
        self.refs = [SampleRef(f"{name}/{i}", name, i)
                     for name, ds in self.datasets.items() for i in range(len(ds))]
        if not self.refs:
            raise DataError("the config's datasets hold no sample to annotate")
        self._keys = {r.key: n for n, r in enumerate(self.refs)}

    def __len__(self) -> int:
        return len(self.refs)

    def position(self, key: str) -> int | None:
        """Position of the sample ``key`` (``None`` when the datasets no longer hold it)."""
        return self._keys.get(key)

    def sample(self, position: int) -> dict[str, Any]:
        """The raw sample at ``position`` (a dict, as the dataset returns it).

        Raises:
            DataError: The dataset cannot load it, or it is not a dict.
        """
        ref = self.refs[position]
        sample = self.datasets[ref.dataset][ref.index]
        if not isinstance(sample, Mapping):
            raise DataError(f"dataset {ref.dataset!r} sample {ref.index} is a "
                            f"{type(sample).__name__}, not a dict")
        return dict(sample)

    def image(self, sample: Mapping[str, Any], ref: SampleRef) -> np.ndarray:
        """The image of a sample, ``(H, W, 3)`` uint8 BGR.

        Raises:
            DataError: The sample has no ``input_key`` or it is not an image.
        """
        value = sample.get(self.input_key)
        if isinstance(value, Mapping):
            value = value.get("image")
        if value is None:
            raise DataError(f"dataset {ref.dataset!r} sample {ref.index} has no image under "
                            f"{self.input_key!r} (keys: {', '.join(map(str, sample))}); set "
                            "annotator.params.sample_input_key")
        try:
            return to_bgr_uint8(value)
        except DataError as exc:
            raise DataError(f"dataset {ref.dataset!r} sample {ref.index}: {exc}") from None

    @staticmethod
    def path_of(sample: Mapping[str, Any]) -> str | None:
        """The file the sample was read from (its ``path`` entry), if any."""
        path = sample.get("path")
        return str(path) if isinstance(path, (str, Path)) and str(path) else None


def unique_stem(wanted: str, taken: Sequence[str] | set[str], ref: SampleRef) -> str:
    """``wanted`` (a file stem), or ``<wanted>_<dataset>_<index>`` when already taken."""
    stem = "".join(c if c.isalnum() or c in "._+-" else "_" for c in wanted) or "sample"
    if stem in taken:
        stem = f"{stem}_{ref.dataset}_{ref.index}"
    return stem
