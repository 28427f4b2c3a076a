"""The session: its directory, logs and shared state, as seen by the trainer and plugins.

Layout of ``<save_dir>/<name>/``::

    checkpoints/  ckpt.<epoch>.pt  ckpt.latest.pt  ckpt.best.pt
    logs/         config.<time>.yaml  packages.txt  model.txt  task.json  splits.json
                  datasets.txt  trainer.log
    output/<name>/{train,valid,test}/   TensorBoard events, metric reports, plots
    config.latest.yaml
    run.json
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from thelper.exceptions import SessionError

__all__ = ["Session", "SilentPlugins", "create_session_dir", "probe_writable", "draw_seeds",
           "write_json", "platform_info", "git_info", "flatten_hparams", "now"]

LOGGER_NAME = "thelper"


def now() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same directory, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def probe_writable(directory: Path) -> None:
    """Check that ``directory`` (created if needed) accepts files.

    Raises:
        SessionError: Not creatable or not writable; the message names it.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".thelper-probe.", dir=directory)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise SessionError(f"save directory {str(directory)!r} is not writable: "
                           f"{exc.strerror or exc}; pick another one with --save-dir") from None


def create_session_dir(save_dir: Path, name: str) -> Path:
    """Create ``save_dir/name`` and its sub-folders; never reuse an existing one.

    Raises:
        SessionError: The directory exists already or cannot be created.
    """
    probe_writable(save_dir)
    session_dir = save_dir / name
    if session_dir.exists():
        raise SessionError(
            f"session directory {str(session_dir)!r} already exists; continue it with "
            f"'thelper resume {session_dir}', or start a new one with another --save-dir or "
            "--set name=<new-name>"
        )
    for sub in ("checkpoints", "logs", f"output/{name}"):
        (session_dir / sub).mkdir(parents=True, exist_ok=True)
    return session_dir


def draw_seeds(given: dict[str, int | None]) -> dict[str, int]:
    """Fill unset seeds with random 31-bit values."""
    return {k: (int(v) if v is not None else secrets.randbelow(2**31)) for k, v in given.items()}


def platform_info() -> dict[str, Any]:
    """Host, OS, Python, torch and accelerator facts for the run record."""
    info: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda if torch.cuda.is_available() else None
        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:  # pragma: no cover
        pass
    for dist in ("thelper-core", "thelper-vision"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def git_info(start: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch and dirty flag of the git work tree around ``start`` (or the CWD)."""
    import subprocess

    cwd = str(start or Path.cwd())

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                                 timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status)}


def flatten_hparams(config: dict[str, Any]) -> dict[str, Any]:
    """Scalar hyperparameters as ``{"a.b.c": value}`` (model, loaders, trainer, seeds)."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, list):
            if all(isinstance(v, int | float | str | bool) for v in value) and len(value) <= 16:
                out[prefix] = ",".join(map(str, value))
        elif isinstance(value, int | float | str | bool) or value is None:
            out[prefix] = value

    for section in ("model", "trainer", "seeds"):
        if section in config:
            walk(section, config[section])
    loaders = config.get("loaders", {})
    for key in ("batch_size", "train_batch_size", "workers", "shuffle", "drop_last"):
        if key in loaders:
            out[f"loaders.{key}"] = loaders[key]
    out.pop("trainer.progress", None)
    return out


#: The facade's lifecycle methods (dispatched by rank 0 only).
LIFECYCLE = ("session_start", "session_end", "epoch_end", "evaluation_end", "log_figure",
             "checkpoint_saved")


class SilentPlugins:
    """A plugin manager whose lifecycle hooks do nothing (everything else is ``pm``'s).

    What the ranks other than 0 and ``config validate --dry-run`` report to: trackers see
    one session, from one process.
    """

    def __init__(self, pm: Any) -> None:
        self._pm = pm

    def __getattr__(self, name: str) -> Any:
        if name in LIFECYCLE:
            return lambda *args, **kwargs: None
        return getattr(self._pm, name)


@dataclass
class Session:
    """State shared by the trainer and the lifecycle plugins.

    Attributes:
        name: Session name (the directory's name).
        session_dir: ``<save_dir>/<name>``.
        config: The full config as plain data (seeds filled in).
        cfg: The validated config model.
        seeds: The seeds in use (``split``, ``torch``, ``numpy``, ``random``, ``worker``).
        plugins: The plugin manager (call its lifecycle methods, never ``pm.hook``).
        task: The merged task of the datasets.
        resumed: True when continuing from a checkpoint.
        start_epoch: First epoch to run (1-based).
        history: ``{split: [{"epoch": e, metric: value, ...}, ...]}``.
        test_metrics: Final metrics of the best model on the test split.
        started_at: ISO time when this process started the session.
        hparams: Flat hyperparameters for trackers.
        logger: The session's logger (console + ``logs/trainer.log``).
        extras: Free space for plugins (keyed by plugin name).
        runtime: Rank, world size and device of this process
            (:class:`thelper.runtime.Runtime`); only rank 0 writes files.
    """

    name: str
    session_dir: Path
    config: dict[str, Any]
    cfg: Any
    seeds: dict[str, int]
    plugins: Any
    task: Any = None
    resumed: bool = False
    start_epoch: int = 1
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    test_metrics: dict[str, float] = field(default_factory=dict)
    started_at: str = field(default_factory=now)
    hparams: dict[str, Any] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger(LOGGER_NAME))
    extras: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    status: str = "running"
    runtime: Any = None

    def __post_init__(self) -> None:
        if self.runtime is None:
            from thelper.runtime import Runtime

            self.runtime = Runtime()

    @property
    def is_main(self) -> bool:
        """True in the process that writes the session's files (rank 0)."""
        return self.runtime.is_main

    @property
    def checkpoints_dir(self) -> Path:
        return self.session_dir / "checkpoints"

    @property
    def logs_dir(self) -> Path:
        return self.session_dir / "logs"

    @property
    def output_dir(self) -> Path:
        """``output/<name>``: one sub-folder per split."""
        return self.session_dir / "output" / self.name

    def split_dir(self, split: str) -> Path:
        """``output/<name>/<split>`` (created on rank 0)."""
        d = self.output_dir / split
        if self.is_main:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def write_config_files(self) -> None:
        """``logs/config.<time>.yaml`` backup and ``config.latest.yaml`` (rank 0 only)."""
        if not self.is_main:
            return
        text = yaml.safe_dump(self.config, sort_keys=False)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        (self.logs_dir / f"config.{stamp}.yaml").write_text(text)
        (self.session_dir / "config.latest.yaml").write_text(text)

    def write_packages(self) -> None:
        """``logs/packages.txt``: every installed distribution and version (rank 0 only)."""
        if not self.is_main:
            return
        lines = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                        if d.metadata.get("Name")}, key=str.lower)
        (self.logs_dir / "packages.txt").write_text("\n".join(lines) + "\n")
