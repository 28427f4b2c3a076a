"""``thelper split``: a session's train/valid/test splits in one HDF5 archive, and the
``hdf5`` dataset type that reads it back.

Layout: the root's attributes hold ``thelper_version``, ``task`` (JSON), ``class_names``,
``seeds`` (JSON), ``session`` (name), ``complete``. Each split is a group with one HDF5
dataset per sample key (``(N, ...)`` arrays when every sample has the same shape, else a
variable-length flat array plus ``<key>.__shape__``), and ``__source_dataset__`` /
``__source_index__`` naming where each sample came from. Images (uint8 ``(C, H, W)``) may be
stored PNG- or JPEG-encoded. Compression per key: ``none``, ``gzip`` or ``lz4`` (through
hdf5plugin's LZ4 filter, which readers register by importing hdf5plugin before opening the
archive: :class:`Hdf5Dataset` does). The archive is written to ``<out>.partial`` and renamed only when
complete, so an interrupted write never leaves a file that looks finished.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from thelper.exceptions import ConfigError, DataError

__all__ = ["write_archive", "check_codecs", "Hdf5Dataset", "COMPRESSIONS", "ENCODINGS"]

COMPRESSIONS = ("none", "gzip", "lz4")
ENCODINGS = ("none", "png", "jpeg")
_SHAPE = ".__shape__"


def _register_filters() -> None:
    """Register hdf5plugin's filters (LZ4 and others) with the HDF5 library of h5py.

    HDF5 looks for third-party filters in its plugin directory, which holds nothing here;
    importing ``hdf5plugin`` registers them in-process. Without it, reading an ``lz4`` key
    fails with ``OSError: Can't synchronously read data (can't open directory ...)``.
    """
    import hdf5plugin  # noqa: F401 - imported for its side effect


def check_codecs(compression: str, key_compression: dict[str, str] | None = None,
                 encode: str = "none") -> None:
    """Check archive options before anything is built or written.

    Args:
        compression: Default compression of every key.
        key_compression: Per-key compression overrides.
        encode: Image encoding.

    Raises:
        ConfigError: A codec or encoding that is not one of :data:`COMPRESSIONS` /
            :data:`ENCODINGS` (the message names the option and the accepted values).
    """
    if compression not in COMPRESSIONS:
        raise ConfigError(f"--compression {compression!r}: unknown codec; choose one of "
                          f"{', '.join(COMPRESSIONS)}")
    for key, codec in (key_compression or {}).items():
        if codec not in COMPRESSIONS:
            raise ConfigError(f"--key-compression {key}={codec}: unknown codec {codec!r}; "
                              f"choose one of {', '.join(COMPRESSIONS)}")
    if encode not in ENCODINGS:
        raise ConfigError(f"--encode {encode!r}: unknown image encoding; choose one of "
                          f"{', '.join(ENCODINGS)}")


def _compression(name: str) -> dict[str, Any]:
    if name == "none":
        return {}
    if name == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    if name == "lz4":
        import hdf5plugin

        return dict(hdf5plugin.LZ4())
    raise DataError(f"unknown compression {name!r}; choose one of {', '.join(COMPRESSIONS)}")


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def _encode(arr: np.ndarray, fmt: str) -> np.ndarray:
    from PIL import Image

    img = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG" if fmt == "png" else "JPEG",
                                                    **({"quality": 95} if fmt == "jpeg" else {}))
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


def _decode(data: np.ndarray, channels: int) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data.tobytes())) as img:
        arr = np.asarray(img)
    return arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)


def _is_image(arr: np.ndarray) -> bool:
    return arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[0] in (1, 3)


def write_archive(session_data: Any, out: str | Path, *, compression: str = "lz4",
                  key_compression: dict[str, str] | None = None, encode: str = "none",
                  meta: dict[str, Any] | None = None, progress: Any = None) -> Path:
    """Write every split of ``session_data`` (from :func:`thelper.build.build_data`) to HDF5.

    Samples are stored raw (before transforms), in the split's index order.

    Args:
        session_data: Datasets, task and split indices of a session.
        out: Archive path (``.h5``).
        compression: Default compression of every key.
        key_compression: Per-key overrides, e.g. ``{"input": "lz4", "label": "none"}``.
        encode: ``png`` or ``jpeg`` to store uint8 images encoded (``none``: raw arrays).
        meta: Extra root attributes (seeds, session name, ...), stored as JSON.
        progress: Optional callable ``advance(n)`` called after each sample.

    Raises:
        ConfigError: Unknown compression or encoding (checked before anything is written).
        DataError: Unwritable file or inconsistent samples.
    """
    import h5py

    from thelper import __version__

    check_codecs(compression, key_compression, encode)
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    task = session_data.task
    try:
        with h5py.File(partial, "w") as f:
            f.attrs["thelper_version"] = __version__
            f.attrs["task"] = json.dumps(task.to_dict())
            if hasattr(task, "class_names"):
                f.attrs["class_names"] = json.dumps(task.class_names)
            for k, v in (meta or {}).items():
                f.attrs[k] = json.dumps(v)
            f.attrs["complete"] = False
            for split in ("train", "valid", "test"):
                parts = [(n, session_data.datasets[n], idx.get(split, []))
                         for n, idx in session_data.indices.items() if idx.get(split)]
                if not parts:
                    continue
                _write_split(f.create_group(split), parts, compression, key_compression or {},
                             encode, progress)
            f.attrs["complete"] = True
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"cannot write archive {str(out)!r}: {exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def _write_split(group: Any, parts: list[tuple[str, Any, list[int]]], compression: str,
                 key_compression: dict[str, str], encode: str, progress: Any) -> None:
    import h5py

    from thelper.data.datasets import as_sample

    columns: dict[str, list[Any]] = {}
    sources: list[str] = []
    indices: list[int] = []
    for name, ds, idx in parts:
        for i in idx:
            sample = as_sample(ds[i])
            for k, v in sample.items():
                columns.setdefault(k, []).append(v)
            sources.append(name)
            indices.append(i)
            if progress is not None:
                progress(1)
    n = len(indices)
    group.attrs["size"] = n
    group.create_dataset("__source_dataset__", data=np.array(sources, dtype=h5py.string_dtype()))
    group.create_dataset("__source_index__", data=np.asarray(indices, dtype=np.int64))
    for key, values in columns.items():
        if len(values) != n:
            raise DataError(f"key {key!r} is missing from some samples; every sample of a "
                            "split must have the same keys")
        comp = _compression(key_compression.get(key, compression))
        if all(isinstance(v, str) for v in values):
            group.create_dataset(key, data=np.array(values, dtype=h5py.string_dtype()))
            continue
        arrays = [_to_numpy(v) for v in values]
        if encode != "none" and all(_is_image(a) for a in arrays):
            ds = group.create_dataset(key, (n,), dtype=h5py.vlen_dtype(np.uint8), **comp)
            for i, a in enumerate(arrays):
                ds[i] = _encode(a, encode)
            ds.attrs["encoding"] = encode
            group.create_dataset(key + _SHAPE, data=np.array([a.shape for a in arrays]))
            continue
        shapes = {a.shape for a in arrays}
        if len(shapes) == 1:
            shape = arrays[0].shape
            chunks = (1, *shape) if shape else None
            group.create_dataset(key, data=np.stack(arrays), chunks=chunks,
                                 **(comp if shape else {}))
        else:
            dtype = arrays[0].dtype
            ds = group.create_dataset(key, (n,), dtype=h5py.vlen_dtype(dtype), **comp)
            for i, a in enumerate(arrays):
                ds[i] = a.reshape(-1)
            group.create_dataset(key + _SHAPE, data=np.array([a.shape for a in arrays]))


class Hdf5Dataset(Dataset):
    """One split of an archive written by ``thelper split``.

    Samples are dicts of tensors (and strings), exactly as the source datasets returned them
    (images decoded when stored encoded). :attr:`task` comes from the archive.

    Args:
        path: The ``.h5`` archive.
        split: ``train``, ``valid`` or ``test``.

    Raises:
        DataError: Missing, incomplete or unreadable archive, or unknown split.
    """

    def __init__(self, path: str, split: str = "train") -> None:
        import h5py

        from thelper.tasks import task_from_dict

        self.path, self.split = str(path), split
        _register_filters()  # lz4 keys (the default of 'thelper split') need hdf5plugin
        if not Path(path).is_file():
            raise DataError(f"hdf5 archive {self.path!r} does not exist; write one with "
                            "'thelper split CONFIG --out ARCHIVE.h5'")
        try:
            with h5py.File(self.path, "r") as f:
                if not bool(f.attrs.get("complete", False)):
                    raise DataError(f"archive {self.path!r} is incomplete (interrupted write)")
                if split not in f:
                    raise DataError(f"archive {self.path!r} has no split {split!r} "
                                    f"(splits: {', '.join(f.keys())})")
                g = f[split]
                self._size = int(g.attrs["size"])
                self._keys = [k for k in g.keys() if not k.startswith("__")
                              and not k.endswith(_SHAPE)]
                self.task = task_from_dict(json.loads(f.attrs["task"]))
                label_key = getattr(self.task, "label_key", None)
                if label_key in g and g[label_key].ndim == 1 and g[label_key].dtype.kind in "iu":
                    self.targets = [int(t) for t in g[label_key][()]]
                self.sources = [(s.decode() if isinstance(s, bytes) else s, int(i)) for s, i in
                                zip(g["__source_dataset__"][()], g["__source_index__"][()],
                                    strict=True)]
        except OSError as exc:
            raise DataError(f"cannot read archive {self.path!r}: {exc}") from None
        self._file: Any = None
        self._pid: int | None = None
        self._handles: dict[str, tuple[Any, str, str | None, Any]] = {}

    def _open(self) -> dict[str, tuple[Any, str, str | None, Any]]:
        """Per-process handles: ``{key: (dataset, kind, encoding, shape dataset)}``.

        h5py object lookups and attribute reads cost far more than reading a chunk, so they
        are done once per process, not per sample.
        """
        import h5py

        if self._file is None or self._pid != os.getpid():  # one handle per worker process
            _register_filters()  # a spawned worker process has not imported hdf5plugin yet
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            g = self._file[self.split]
            self._handles = {}
            for key in self._keys:
                ds = g[key]
                kind = "str" if ds.dtype.kind == "O" and h5py.check_string_dtype(ds.dtype) \
                    else "array"
                encoding = ds.attrs.get("encoding")
                shape_ds = g[key + _SHAPE] if key + _SHAPE in g else None
                self._handles[key] = (ds, kind, encoding, shape_ds)
        return self._handles

    def __len__(self) -> int:
        return self._size

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        for key, (ds, kind, encoding, shape_ds) in self._open().items():
            try:
                value = ds[index]
            except OSError as exc:
                raise DataError(f"cannot read key {key!r} of sample {index} (split "
                                f"{self.split!r}) from archive {self.path!r}: {exc}") from None
            if kind == "str":
                sample[key] = value.decode() if isinstance(value, bytes) else value
                continue
            if encoding:
                value = _decode(value, 0)
            elif shape_ds is not None:
                value = value.reshape(tuple(shape_ds[index]))
            sample[key] = torch.from_numpy(np.asarray(value).copy())
        return sample

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not cross process boundaries
        state.pop("_handles", None)
        return state

    def __repr__(self) -> str:
        return f"Hdf5Dataset({self.path!r}, split={self.split!r}, samples={len(self)})"
