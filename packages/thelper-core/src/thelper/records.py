"""Run records: reading, summarising and listing the ``run.json`` of session directories.

``run.json`` is written by the ``run-record`` tracker (:mod:`thelper.trackers.run_record`);
this module holds what both it and ``thelper runs`` need: the artifact inventory (each
file's kind, size and SHA-256), the per-step scalars of ``logs/steps.jsonl``, the metric
points a tracking server receives (:func:`metric_points`, shared by the live MLflow tracker
and ``thelper runs upload`` so that both send the same keys and steps), and the discovery
and summary of sessions. No torch import; JSON and the file system only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from thelper.exceptions import ThelperError

__all__ = ["RECORD_NAME", "STEPS_FILE", "RecordError", "load_record", "find_sessions",
           "collect_artifacts", "file_sha256", "read_steps", "metric_points",
           "summarize", "duration_s", "flat_metrics", "timestamp_ms", "iter_records",
           "redact_uri", "MAX_RECORD_BYTES"]

#: The run record's file name, at the session directory's root.
RECORD_NAME = "run.json"
#: Per-step scalars (``thelper_log_scalars``), one JSON object a line, appended.
STEPS_FILE = "logs/steps.jsonl"
#: How deep :func:`find_sessions` looks for ``run.json`` under a folder.
MAX_DEPTH = 4
#: File name suffixes of figures (the rest of ``output/`` is reports, events aside).
FIGURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".pdf")
#: The largest ``run.json`` read (bytes); a larger one is refused, not loaded into memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024

_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")


def redact_uri(text: str) -> str:
    """``text`` with the ``user:password@`` of every URI in it removed.

    ``https://user:token@host:5000/path`` becomes ``https://host:5000/path`` (scheme, host,
    port and path kept). Used for every tracking URI stored in ``run.json``, logged or
    printed, and for error messages that may quote one.
    """
    return _USERINFO.sub(r"\1", text)


class RecordError(ThelperError):
    """A session directory without a readable ``run.json`` (the message says which)."""

    exit_code = 2


def load_record(path: str | Path) -> dict[str, Any]:
    """Read a session's ``run.json``.

    Args:
        path: The session directory, or its ``run.json``.

    Returns:
        The record (a dict).

    Raises:
        RecordError: No ``run.json`` there, or it is not a regular file (a FIFO, a device),
            is larger than :data:`MAX_RECORD_BYTES`, or is not a JSON object.
    """
    from thelper.data.files import open_regular
    from thelper.exceptions import DataError

    p = Path(path)
    file = p / RECORD_NAME if p.is_dir() else p
    try:
        with open_regular(file) as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            raise RecordError(f"{str(file)!r} is larger than {MAX_RECORD_BYTES >> 20} MiB: "
                              "not a run record; move it out of the session directory")
        data = json.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        if os.path.islink(file):
            raise RecordError(f"{str(file)!r} is a link to a missing file: not a run record; "
                              "move it out of the session directory") from None
        raise RecordError(f"{str(p)!r} is not a session directory (no {RECORD_NAME}); "
                          "give a folder written by 'thelper run'") from None
    except DataError:
        raise RecordError(f"{str(file)!r} is not a regular file: not a run record; move it "
                          "out of the session directory") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"cannot read {str(file)!r}: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{str(file)!r} is not a run record (a JSON object expected)")
    return data


def find_sessions(root: str | Path, max_depth: int = MAX_DEPTH) -> list[Path]:
    """Session directories (folders holding a ``run.json``) at or under ``root``.

    Does not descend into a session directory nor follow symbolic links. A ``run.json``
    that is not a regular file still marks a session directory: :func:`load_record` then
    says what is wrong with it.

    Args:
        root: A session directory or a save directory.
        max_depth: How many folder levels below ``root`` are searched.

    Returns:
        The session directories, sorted by path.

    Raises:
        RecordError: ``root`` is not a directory.
    """
    root = Path(root)
    if not root.is_dir():
        raise RecordError(f"{str(root)!r} is not a directory")
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        # any run.json counts, also a FIFO or a link: listing it says why it is unreadable
        # instead of leaving the session out without a word
        if os.path.lexists(folder / RECORD_NAME):
            found.append(folder)
            return
        if depth >= max_depth:
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False) and not e.name.startswith("."):
                walk(Path(e.path), depth + 1)

    walk(root, 0)
    return sorted(found)


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex), read in 1 MiB chunks.

    Raises:
        DataError: ``path`` is not a regular file (a FIFO, a device: never opened).
        OSError: It cannot be read.
    """
    from thelper.data.files import open_regular

    h = hashlib.sha256()
    with open_regular(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _kind(rel: str) -> str | None:
    parts = rel.split("/")
    name = parts[-1]
    if name.startswith(".") or name == RECORD_NAME:
        return None
    if parts[0] == "checkpoints":
        return "checkpoint" if name.endswith(".pt") else None
    if rel in ("config.latest.yaml", "config.sources.yaml") or (
            parts[0] == "logs" and name.startswith("config.")):
        return "config"
    if parts[0] == "logs":
        return "log"
    if parts[0] == "export":
        return "export"
    if parts[0] == "output":
        if name.startswith("events.out.tfevents"):
            return "events"
        return "figure" if name.lower().endswith(FIGURE_SUFFIXES) else "report"
    if parts[0] == "predictions" or parts[0] == "infer":
        return "prediction"
    return None


def collect_artifacts(session_dir: str | Path,
                      previous: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The inventory of a session's files: configs, checkpoints, exports, reports, figures.

    Files are found under the session directory: ``config.latest.yaml``,
    ``config.sources.yaml`` and ``logs/config.*.yaml`` (kind ``config``), other ``logs/``
    files (``log``), ``checkpoints/*.pt`` (``checkpoint``), ``export/`` (``export``),
    ``output/`` (``figure`` for images, ``events`` for TensorBoard event files, ``report``
    otherwise). Hidden files (temporaries, the lock), ``run.json`` itself and anything that
    is not a regular file (FIFOs, sockets, devices) are left out; symbolic links are
    followed only when they stay inside the session (``ckpt.latest.pt``).

    Args:
        session_dir: The session directory.
        previous: An earlier inventory: a file whose size and modification time did not
            change keeps its SHA-256 instead of being read again.

    Returns:
        ``[{"path", "kind", "size", "sha256", "mtime"}]`` sorted by path (``path`` relative
        to the session directory, with ``/``; ``size`` in bytes; ``mtime`` in nanoseconds
        since the epoch).
    """
    from thelper.exceptions import DataError

    root = Path(session_dir)
    real_root = root.resolve()
    cache = {(a.get("path"), a.get("size"), a.get("mtime")): a.get("sha256")
             for a in previous or [] if isinstance(a, dict)}
    out: list[dict[str, Any]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            kind = _kind(rel)
            if kind is None:
                continue
            try:
                st = os.lstat(p)
                if stat.S_ISLNK(st.st_mode):  # only links that stay inside the session
                    if not p.resolve().is_relative_to(real_root):
                        continue
                    st = p.stat()
            except (OSError, RuntimeError):
                continue
            if not stat.S_ISREG(st.st_mode):  # FIFOs, sockets, devices: never opened
                continue
            sha = cache.get((rel, st.st_size, st.st_mtime_ns))
            if sha is None:
                try:
                    sha = file_sha256(p)
                except (OSError, DataError):
                    continue
            out.append({"path": rel, "kind": kind, "size": st.st_size, "sha256": sha,
                        "mtime": st.st_mtime_ns})
    return sorted(out, key=lambda a: a["path"])


def read_steps(session_dir: str | Path) -> list[dict[str, Any]]:
    """The per-step scalars of ``logs/steps.jsonl``, one dict per logged step.

    A step logged twice (a resume replays the steps after its checkpoint) keeps its last
    value; a truncated last line (a killed process) is skipped.

    Returns:
        ``[{"step", "split", "epoch", "time", <scalar>: value, ...}]`` sorted by step.
    """
    from thelper.data.files import open_regular
    from thelper.exceptions import DataError

    path = Path(session_dir) / STEPS_FILE
    by_step: dict[tuple[str, int], dict[str, Any]] = {}
    try:
        with open_regular(path, "r") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict) and isinstance(row.get("step"), int):
                    by_step[(str(row.get("split", "train")), row["step"])] = row
    except (OSError, DataError, UnicodeDecodeError):
        return []
    return [by_step[k] for k in sorted(by_step, key=lambda k: (k[1], k[0]))]


def timestamp_ms(iso: str | None, default: int) -> int:
    """Milliseconds since the epoch of an ISO-8601 time (``default`` when unset or bad)."""
    if not iso:
        return default
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except (TypeError, ValueError):
        return default


def metric_points(record: dict[str, Any], steps: list[dict[str, Any]] | None = None
                  ) -> list[tuple[str, float, int, int]]:
    """Every metric value of a record as ``(key, value, step, timestamp_ms)``.

    Keys: ``<split>/<metric>`` at step = epoch for the per-epoch metrics (``train/loss``,
    ``train/lr``, ``valid/accuracy``), ``step/<scalar>`` at the optimizer step for the
    per-step scalars (``step/loss``, ``step/lr``), and the final evaluation of the best
    model as ``test/<metric>`` (``final/<split>/<metric>`` when it evaluated another split)
    at the evaluated epoch. Non-finite and non-numeric values are left out.

    Args:
        record: A ``run.json`` record.
        steps: The rows of :func:`read_steps`.
    """
    import math

    out: list[tuple[str, float, int, int]] = []
    now_ms = int(datetime.now().timestamp() * 1000)
    epochs = record.get("epochs") if isinstance(record.get("epochs"), list) else []
    ended = {e["epoch"]: timestamp_ms(e.get("ended_at"), now_ms)
             for e in epochs if isinstance(e, dict) and isinstance(e.get("epoch"), int)}

    def add(key: str, value: Any, step: int, ts: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return
        if math.isfinite(float(value)):
            out.append((key, float(value), int(step), ts))

    for split, rows in (record.get("metrics") or {}).items():
        for row in rows or []:
            if not isinstance(row, dict) or "epoch" not in row:
                continue
            epoch = int(row["epoch"])
            for name, value in row.items():
                if name != "epoch":
                    add(f"{split}/{name}", value, epoch, ended.get(epoch, now_ms))
    for row in steps or []:
        ts = int(float(row.get("time", now_ms / 1000)) * 1000)
        for name, value in row.items():
            if name not in ("step", "split", "epoch", "time"):
                add(f"step/{name}", value, row["step"], ts)
    test = record.get("test")
    if isinstance(test, dict):
        split = test.get("split", "test")
        prefix = "test" if split == "test" else f"final/{split}"
        ts = timestamp_ms(record.get("ended_at"), now_ms)
        for name, value in test.items():
            if name not in ("split", "epoch", "checkpoint"):
                add(f"{prefix}/{name}", value, int(test.get("epoch") or 0), ts)
    return out


def duration_s(record: dict[str, Any]) -> float | None:
    """Wall-clock seconds of the session: the sum of its epochs' durations when recorded,
    else ``ended_at - started_at`` (``None`` when unknown)."""
    epochs = [e.get("duration_s") for e in record.get("epochs") or []
              if isinstance(e, dict)] if isinstance(record.get("epochs"), list) else []
    if epochs and all(isinstance(d, int | float) for d in epochs):
        return float(sum(epochs))
    try:
        start = datetime.fromisoformat(record["started_at"])
        end = datetime.fromisoformat(record["ended_at"])
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def flat_metrics(record: dict[str, Any]) -> dict[str, float]:
    """The last epoch's metrics as ``{"<split>/<metric>": value}`` plus the final evaluation
    as ``test/<metric>`` (what ``thelper runs compare`` puts side by side)."""
    out: dict[str, float] = {}
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    for split, rows in metrics.items():
        if rows and isinstance(rows, list) and isinstance(rows[-1], dict):
            for k, v in rows[-1].items():
                if k != "epoch" and isinstance(v, int | float):
                    out[f"{split}/{k}"] = v
    test = record.get("test")
    if isinstance(test, dict):
        split = test.get("split", "test")
        prefix = "test" if split == "test" else f"final/{split}"
        for k, v in test.items():
            if k not in ("split", "epoch", "checkpoint") and isinstance(v, int | float):
                out[f"{prefix}/{k}"] = v
    return out


def summarize(session_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    """One line of ``thelper runs list``: name, status, monitored metric, best epoch, ...

    Returns:
        ``{"path", "name", "status", "stopped_reason", "started_at", "duration_s",
        "epochs", "monitor", "best", "best_epoch", "test", "config_hash", "labels"}``.
    """
    best = record.get("best") if isinstance(record.get("best"), dict) else {}
    test = record.get("test") if isinstance(record.get("test"), dict) else {}
    config = record.get("config") if isinstance(record.get("config"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    monitor = best.get("metric") or trainer.get("monitor")
    metrics = record.get("metrics") if isinstance(record.get("metrics"), dict) else {}
    rows = [r for rows in metrics.values() if isinstance(rows, list) for r in rows
            if isinstance(r, dict)]
    return {
        "path": str(session_dir),
        "name": record.get("name"),
        "status": record.get("status"),
        "stopped_reason": record.get("stopped_reason"),
        "started_at": record.get("started_at"),
        "duration_s": duration_s(record),
        "epochs": max((r["epoch"] for r in rows if isinstance(r.get("epoch"), int)),
                      default=0),
        "monitor": monitor,
        "best": best.get("value"),
        "best_epoch": best.get("epoch"),
        "test": test.get(monitor) if isinstance(monitor, str) else None,
        "config_hash": record.get("config_hash"),
        "labels": [str(x) for x in record.get("labels") or []]
        if isinstance(record.get("labels"), list) else [],
    }


def iter_records(root: str | Path) -> Iterator[tuple[Path, dict[str, Any] | None, str | None]]:
    """``(session_dir, record or None, error or None)`` for every session under ``root``."""
    for d in find_sessions(root):
        try:
            yield d, load_record(d), None
        except RecordError as exc:
            yield d, None, str(exc)
