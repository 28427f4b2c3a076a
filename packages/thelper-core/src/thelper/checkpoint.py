"""Checkpoints: plain tensors, containers and strings, written atomically.

A checkpoint opens anywhere with ``torch.load(path, weights_only=True)``, with or without
thelper installed. Keys:

``format`` (``"thelper-checkpoint/1"``), ``version``, ``name``, ``epoch`` (1-based, last
finished), ``step`` (optimizer steps so far), ``model`` (state dict), ``model_type``,
``model_params``, ``optimizer``, ``scheduler`` (state dicts or ``None``), ``monitor``
(metric, goal, best value, best epoch), ``early_stopping``, ``history`` (metrics per split and
epoch), ``rng`` (Python, NumPy, torch CPU/CUDA states), ``config`` (the session config),
``task`` (``{type, params}``), ``seeds``, ``source`` (host, time), ``torch`` (version),
``input_shape`` (per-sample input shape seen in training), ``skipped_samples``, and
``in_epoch``: ``None`` at epoch ends; for mid-epoch step checkpoints
(``ckpt.step.<step>.pt``) the running epoch, batches done, sampler position, running loss
and metric accumulators, so that a resume continues at the next step exactly.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thelper.exceptions import CheckpointError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint", "find_checkpoint",
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
        os.chmod(tmp, _file_mode())  # mkstemp creates 0600; use the usual umask instead
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: {exc}; free disk space "
                              "or fix the directory's permissions") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


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


def load_checkpoint(path: str | Path, map_location: str | torch.device | None = None
                    ) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``: no code runs while unpickling).

    Args:
        path: Checkpoint file.
        map_location: Device to map tensors to (e.g. ``"cpu"`` for GPU checkpoints).

    Raises:
        CheckpointError: Missing, truncated, corrupted, unsafe or not a thelper checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure means the same to the user
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
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
