"""Checkpoints: plain tensors, containers and strings, written atomically.

A checkpoint opens anywhere with ``torch.load(path, weights_only=True)``, with or without
thelper installed. Keys:

``format`` (``"thelper-checkpoint/1"``), ``version``, ``name``, ``epoch`` (1-based, last
finished), ``step`` (optimizer steps so far), ``model`` (state dict), ``model_type``,
``model_params``, ``optimizer``, ``scheduler`` (state dicts or ``None``), ``monitor``
(metric, goal, best value, best epoch), ``early_stopping``, ``top_k`` (with
``trainer.save_top_k``: the kept ``ckpt.epoch<NNNN>-<metric><value>.pt`` files, best first,
``[{file, epoch, value}]``; a resume keeps exactly these), ``ema`` (with ``trainer.ema``:
``{model, n_averaged, decay, every_n_steps}``, the moving average of the weights as a state
dict with the keys of ``model``; else ``None``), ``elapsed_time`` (seconds of training,
summed over the resumes, for ``trainer.max_time``), ``history`` (metrics per split and
epoch), ``rng`` (Python, NumPy, torch CPU/CUDA states), ``config`` (the session config),
``task`` (``{type, params}``), ``seeds``, ``source`` (host, time), ``torch`` (version),
``input_shape`` (per-sample input shape seen in training), ``skipped_samples``, and
``in_epoch``: ``None`` at epoch ends; for mid-epoch step checkpoints
(``ckpt.step.<step>.pt``) the running epoch, batches done, sampler position, running loss
and metric accumulators, so that a resume continues at the next step exactly.

A checkpoint is a zip archive (torch's format) whose records carry CRC-32 checksums;
:func:`load_checkpoint` verifies them (``torch.load`` does not), so that a flipped bit in a
weight, an RNG state or the pickle is reported instead of loaded.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import zipfile
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thelper.exceptions import CheckpointError, ConfigError
from thelper.session import fsync_dir, new_file_mode

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "find_checkpoint",
           "verify_checkpoint", "check_map_location", "resume_candidates",
           "get_rng_state", "set_rng_state", "source_info"]

FORMAT = "thelper-checkpoint/1"


def source_info() -> dict[str, str]:
    """Host name and UTC time of creation."""
    return {"host": socket.gethostname(), "time": datetime.now(UTC).isoformat(timespec="seconds")}


def get_rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and every CUDA device), as plain data."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned."""
    if "python" in state:
        v, internal, gauss = state["python"]
        random.setstate((v, tuple(internal), gauss))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state(("MT19937", s["key"].numpy().astype(np.uint32), s["pos"],
                             s["has_gauss"], s["cached_gaussian"]))
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(data: dict[str, Any], path: str | Path) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    A reader never sees a half-written checkpoint; on failure the previous file is intact.

    Raises:
        CheckpointError: The directory is not writable or the disk is full.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp creates 0600; use the usual umask instead
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename survives a power loss too
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {exc}; free disk space "
                              "or fix the directory's permissions") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def link_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` an atomic alias of ``src`` (hard link, or a copy where links fail).

    Raises:
        CheckpointError: Neither a link nor a copy could be written.
    """
    import shutil

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link")
    try:
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {str(dst)!r}: {exc}; free disk space "
                              "or fix the directory's permissions") from exc
    return dst


def check_map_location(map_location: Any) -> None:
    """Check that ``map_location`` names a device this machine has.

    Args:
        map_location: ``None``, a device string (``cpu``, ``cuda:1``) or a
            :class:`torch.device`; dicts and callables (as ``torch.load`` accepts) pass
            unchecked.

    Raises:
        ConfigError: Not a device name, or a device this machine does not have (e.g.
            ``cuda:3`` without CUDA or with fewer GPUs).
    """
    if map_location is None or isinstance(map_location, dict) or callable(map_location):
        return
    try:
        device = torch.device(map_location)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"map location (--map-location) {str(map_location)!r} is not a "
                          f"device: {str(exc).splitlines()[0] if str(exc) else exc}; use "
                          "e.g. cpu, cuda or cuda:0") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"map location (--map-location) {str(map_location)!r}: CUDA is "
                              "not available on this machine; use --map-location cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(f"map location (--map-location) {str(map_location)!r}: this "
                              f"machine has {count} GPU(s) (cuda:0 to cuda:{count - 1})")
    elif device.type not in ("cpu", "meta"):
        backend = getattr(torch.backends, device.type, None) or getattr(torch, device.type,
                                                                        None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise ConfigError(f"map location (--map-location) {str(map_location)!r}: "
                              f"{device.type} is not available on this machine; use "
                              "--map-location cpu")


def verify_checkpoint(path: str | Path) -> None:
    """Check the CRC-32 of every record of a checkpoint (``torch.load`` does not).

    Reads the whole file once (about 0.3 s per GB from the page cache). Files that are not
    zip archives (truncated ones, torch's legacy format) are left to ``torch.load``.

    Args:
        path: Checkpoint file.

    Raises:
        CheckpointError: A record's data does not match its checksum, or the archive's
            headers are inconsistent; the message names the file and the record.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: {exc}; its zip "
                              "structure is damaged (a disk problem or a bad copy)") from None
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupted: record {bad!r} fails its CRC-32 check "
            "(its bytes changed after it was written: a disk problem or a bad copy)")


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = None, *,
                    verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code runs while unpickling).

    Args:
        path: Checkpoint file.
        map_location: Device to map tensors to (e.g. ``"cpu"`` for GPU checkpoints).
        verify: Check the CRC-32 of every record first (:func:`verify_checkpoint`).

    Raises:
        ConfigError: ``map_location`` is not a device of this machine, or the checkpoint
            holds CUDA tensors and CUDA is not available (load it with ``"cpu"``).
        CheckpointError: Missing, truncated, corrupted, unsafe or not a thelper checkpoint.
    """
    path = Path(path)
    check_map_location(map_location)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if verify:
        verify_checkpoint(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure means the same to the user
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        if lines and lines[0].startswith("Attempting to deserialize object on"):
            raise ConfigError(
                f"checkpoint {str(path)!r} holds tensors of a device this machine does not "
                f"have ({lines[0]}); load it on the CPU with --map-location cpu (map_location"
                "='cpu')") from None
        detail = next((ln for ln in lines if "Unsupported global" in ln), lines[0] if lines
                      else "")
        raise CheckpointError(
            f"cannot load checkpoint {str(path)!r}: {type(exc).__name__}: {detail}; the file "
            "is truncated, corrupted or holds objects that are unsafe to unpickle (thelper "
            "only loads plain tensors and containers)"
        ) from None
    if not isinstance(data, dict) or "model" not in data:
        raise CheckpointError(f"{str(path)!r} is not a thelper checkpoint (no 'model' key)")
    return data


def _progress(path: Path) -> tuple[int, int] | None:
    """``(step, epoch)`` of a checkpoint, read from its pickle only (the tensors are
    memory-mapped, not read); ``None`` when it cannot be opened."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(data.get("step") or 0), int(data.get("epoch") or 0)
    except Exception:  # noqa: BLE001 - unreadable: ranked last, verified later
        return None


def resume_candidates(folder: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """The checkpoints of a ``checkpoints/`` folder, newest first, to resume from.

    Newest means the most optimizer steps, then the most epochs (an epoch checkpoint before
    a step checkpoint of the same step), then ``ckpt.<epoch>.pt``/``ckpt.step.*.pt``
    before ``ckpt.best.pt`` and ``ckpt.latest.pt``, then the modification time; files whose
    pickle cannot be read come last. Temporary files of a killed save (``.*.tmp``) are not
    checkpoints. Only the pickles are read (cheap), nothing is verified.

    Args:
        folder: A session's ``checkpoints/``.
        exclude: A file to leave out, with every hard link to it (e.g. a damaged
            ``ckpt.latest.pt`` and the step checkpoint it links).
    """
    folder = Path(folder)
    skip = None
    if exclude is not None:
        try:
            st = os.stat(exclude)
            skip = (st.st_dev, st.st_ino)
        except OSError:
            pass
    ranked = []
    for p in folder.glob("ckpt.*.pt"):
        try:
            st = p.stat()
        except OSError:
            continue
        if not p.is_file() or (st.st_dev, st.st_ino) == skip:
            continue
        progress = _progress(p)
        alias = p.name in ("ckpt.best.pt", "ckpt.latest.pt")
        ranked.append(((progress is not None, *(progress or (0, 0)), not alias, st.st_mtime),
                       p))
    ranked.sort(key=lambda item: item[0], reverse=True)
    return [p for _, p in ranked]


def find_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """Resolve a session directory or checkpoint file to a checkpoint file.

    Args:
        path: A session directory (``checkpoints/ckpt.<which>.pt`` is used) or a file.
        which: ``latest`` or ``best``.

    Raises:
        CheckpointError: Nothing to load there.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for candidate in (p / "checkpoints" / f"ckpt.{which}.pt", p / f"ckpt.{which}.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"no ckpt.{which}.pt under {str(p)!r}; is it a session "
                              "directory created by 'thelper run'?")
    raise CheckpointError(f"{str(p)!r} is neither a session directory nor a checkpoint file")


def evaluated_weights(ckpt: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The weights a checkpoint's session evaluated: the EMA's when it has one.

    With ``trainer.ema`` validation, the best checkpoint and the test all use the average
    (``ckpt["ema"]["model"]``, same keys as ``model``), so ``infer``, ``export`` and
    ``model.init_from`` load it too, to predict what the session's test measured.

    Returns:
        ``(state dict, "ema" or "model")``.
    """
    ema = ckpt.get("ema")
    if isinstance(ema, Mapping) and isinstance(ema.get("model"), Mapping) and ema["model"]:
        return ema["model"], "ema"
    return ckpt["model"], "model"
