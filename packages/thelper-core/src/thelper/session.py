"""The session: its directory, logs and shared state, as seen by the trainer and plugins.

Layout of ``<save_dir>/<name>/``::

    checkpoints/  ckpt.<epoch>.pt  ckpt.latest.pt  ckpt.best.pt
    logs/         config.<time>.yaml  packages.txt  model.txt  task.json  splits.json
                  datasets.txt  trainer.log
    output/<name>/{train,valid,test}/   TensorBoard events, metric reports, plots
    config.latest.yaml
    run.json
    .lock         held (``fcntl.flock``) by the process training or evaluating there

Writes never follow a symbolic link out of the session directory: :func:`check_links`
refuses a session that holds one (on resume), and the session's own files are written
through :func:`safe_path` (atomic replacement, which replaces a link instead of following
it) or opened with ``O_NOFOLLOW`` (``logs/trainer.log``).
"""

from __future__ import annotations

import errno
import fcntl
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

__all__ = ["Session", "SilentPlugins", "SessionLock", "create_session_dir", "probe_writable",
           "draw_seeds", "write_json", "write_text", "safe_path", "check_links",
           "clean_stale_files", "session_dir_of", "platform_info", "git_info",
           "flatten_hparams", "now", "new_file_mode", "fsync_dir"]

LOGGER_NAME = "thelper"

#: The lock file of a session directory (see :class:`SessionLock`).
LOCK_NAME = ".lock"

#: Descriptors of the session locks this process holds (closed in forked children).
_HELD_LOCKS: set[int] = set()


def _forget_locks_in_child() -> None:
    """A forked child (a DataLoader worker) must not keep the session locked: an flock
    lives as long as any process holds its file open, and workers can outlive a killed
    parent by seconds. Closing the child's copy leaves the parent's lock in place."""
    for fd in list(_HELD_LOCKS):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_forget_locks_in_child)


def now() -> str:
    """Current UTC time, ISO 8601, seconds precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


_UMASK: int | None = None


def new_file_mode() -> int:
    """Permission bits of a new file under the process's umask (``0o666 & ~umask``).

    ``mkstemp`` creates ``0600`` files; atomic writes chmod their temporary file to this.
    The umask is read from ``/proc/self/status`` where it exists; elsewhere it is probed
    once (``os.umask`` sets the umask to read it, which must not race with threads that
    create files: the probe runs once, on first use, and is cached).
    """
    global _UMASK
    if _UMASK is None:
        try:
            with open("/proc/self/status", encoding="ascii", errors="replace") as f:
                line = next((ln for ln in f if ln.startswith("Umask:")), "")
            _UMASK = int(line.split()[1], 8)
        except (OSError, IndexError, ValueError):
            umask = os.umask(0o022)
            os.umask(umask)
            _UMASK = umask
    return 0o666 & ~_UMASK


def fsync_dir(folder: Path) -> None:
    """Flush a directory's entries to disk (after a rename into it), where the platform
    allows opening a directory; errors are ignored (the rename itself is done)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` atomically (temporary file in the same directory, fsync, rename).

    A symbolic link at ``path`` is replaced, never followed; a reader never sees a
    half-written file.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, new_file_mode())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)  # the rename survives a power loss too


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file in the same directory, fsync, rename)."""
    write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def safe_path(session_dir: Path, rel: str | Path) -> Path:
    """``session_dir / rel``, checked for writing: its folder is inside the session
    directory once links are resolved, and it is not itself a symbolic link.

    Args:
        session_dir: The session directory.
        rel: A path relative to it (``logs/packages.txt``).

    Raises:
        SessionError: Writing there would follow a symbolic link (the message names it).
    """
    path = Path(session_dir) / rel
    root = Path(session_dir).resolve()
    try:
        parent = path.parent.resolve()
    except (OSError, RuntimeError) as exc:
        raise SessionError(f"cannot resolve {str(path.parent)!r}: {exc}") from None
    if not parent.is_relative_to(root):
        raise SessionError(f"{str(path.parent)!r} leads out of the session directory "
                           f"{str(session_dir)!r} (to {str(parent)!r}) through a symbolic "
                           "link; thelper does not write through it: replace the link with "
                           "a real directory")
    if path.is_symlink():
        raise SessionError(f"{str(path)!r} is a symbolic link (to {os.readlink(path)!r}); "
                           "thelper does not write through it: remove the link")
    return path


def check_links(session_dir: Path) -> None:
    """Refuse a session directory that holds a symbolic link leading out of it.

    Every file and folder under ``session_dir`` is checked (links are not followed), so
    that no write of the session (logs, summaries, checkpoints, reports, TensorBoard
    events) can land outside it. Links that stay inside are allowed.

    Args:
        session_dir: The session directory.

    Raises:
        SessionError: A link points outside (or loops); the message names each one.
    """
    root = Path(session_dir).resolve()
    bad: list[str] = []
    for dirpath, dirnames, filenames in os.walk(session_dir):  # does not enter linked dirs
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if not p.is_symlink():
                continue
            try:
                inside = p.resolve().is_relative_to(root)
            except (OSError, RuntimeError):  # a loop
                inside = False
            if not inside:
                try:
                    target = os.readlink(p)
                except OSError:
                    target = "?"
                bad.append(f"{p.relative_to(session_dir)} -> {target}")
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise SessionError(
            f"session directory {str(session_dir)!r} holds symbolic links that lead out of "
            f"it: {shown}; thelper never writes through them: replace each with the real "
            "file or directory (or remove it)")


def session_dir_of(path: Path) -> Path:
    """The session directory of a ``resume`` target: the directory itself, or the folder
    above ``checkpoints/`` for a checkpoint file."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def clean_stale_files(session_dir: Path) -> list[Path]:
    """Remove the temporary files a killed process left behind.

    These are ``checkpoints/.*.tmp`` and ``checkpoints/.*.link`` (a checkpoint being
    written or linked), ``.*.tmp`` in the session and ``logs/`` folders (atomic JSON and
    text writes), and ``.thelper-probe.*`` files. Call it only while holding the
    session's lock: a running session's temporaries look the same.

    Args:
        session_dir: The session directory.

    Returns:
        The files removed.
    """
    removed = []
    patterns = {"checkpoints": (".*.tmp", ".*.link", ".thelper-probe.*"),
                ".": (".*.tmp", ".thelper-probe.*"), "logs": (".*.tmp",)}
    for sub, globs in patterns.items():
        folder = Path(session_dir) / sub
        if not folder.is_dir() or folder.is_symlink():
            continue
        for pattern in globs:
            for p in folder.glob(pattern):
                if p.is_symlink() or p.is_file():
                    try:
                        p.unlink()
                    except OSError:
                        continue
                    removed.append(p)
    return removed


class SessionLock:
    """Advisory lock (``fcntl.flock``) on ``<session>/.lock``, holding the owner's PID.

    A process holds it for as long as it trains or evaluates in the session (``thelper
    run`` and ``thelper resume``; rank 0 only under several ranks), so that a second
    process cannot write into the same session. The lock dies with its process (even on
    ``SIGKILL``; forked children such as DataLoader workers do not keep it); the file
    itself stays (removing it would let two processes lock two different files).

    Args:
        session_dir: The session directory.
    """

    def __init__(self, session_dir: Path) -> None:
        self.session_dir = Path(session_dir)
        self.path = self.session_dir / LOCK_NAME
        self._fd: int | None = None
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        """True while this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> SessionLock:
        """Take the lock without waiting.

        Raises:
            SessionError: Another process holds it (the message gives its PID), or the
                lock file cannot be opened (e.g. it is a symbolic link).
        """
        if self._fd is not None:
            return self
        self._pid = os.getpid()
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SessionError(f"{str(self.path)!r} is a symbolic link; thelper does not "
                                   "write through it: remove it") from None
            raise SessionError(f"cannot open the lock file {str(self.path)!r}: "
                               f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # a file system without locks: run unprotected rather than not at all
                logging.getLogger(LOGGER_NAME).warning(
                    "cannot lock %s (%s); nothing stops another process from using this "
                    "session at the same time", self.path, exc.strerror or exc)
                self._fd = fd
                _HELD_LOCKS.add(fd)
                return self
            owner = _read_pid(fd)
            os.close(fd)
            who = f"PID {owner}" if owner else "another process"
            raise SessionError(f"session {str(self.session_dir)!r} is in use by {who}; wait "
                               "for it or stop it") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the lock holds; only the PID shown to others is missing
        self._fd = fd
        _HELD_LOCKS.add(fd)
        return self

    def release(self) -> None:
        """Give the lock back (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _HELD_LOCKS.discard(fd)
        if os.getpid() != self._pid:  # a forked child: its copy is closed already
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # releases the flock

    def __enter__(self) -> SessionLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


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

    The directory is created with one ``mkdir`` of its final name, so of two processes
    racing to create it, exactly one succeeds.

    Raises:
        SessionError: The directory exists already (the message suggests ``thelper
            resume``) or cannot be created.
    """
    probe_writable(save_dir)
    session_dir = save_dir / name
    try:
        os.mkdir(session_dir)
    except FileExistsError:
        raise SessionError(
            f"session directory {str(session_dir)!r} already exists; continue it with "
            f"'thelper resume {session_dir}', or start a new one with another --save-dir or "
            "--set name=<new-name>"
        ) from None
    except OSError as exc:
        raise SessionError(f"cannot create session directory {str(session_dir)!r}: "
                           f"{exc.strerror or exc}; pick another one with --save-dir") \
            from None
    for sub in ("checkpoints", "logs", f"output/{name}"):
        (session_dir / sub).mkdir(parents=True, exist_ok=True)
    return session_dir


def draw_seeds(given: dict[str, int | None]) -> dict[str, int]:
    """Fill unset seeds with random 31-bit values."""
    return {k: (int(v) if v is not None else secrets.randbelow(2**31)) for k, v in given.items()}


def platform_info() -> dict[str, Any]:
    """Host, OS, Python, torch and accelerator facts for the run record.

    Returns:
        ``host``, ``os``, ``python``, ``executable``, ``cpu_count``, ``processor`` (CPU
        model name when known), ``torch``, ``cuda`` (CUDA version torch was built with when
        a GPU is usable, else ``None``), ``cudnn`` (version number or ``None``), ``gpus``
        (device names, when CUDA is available) and ``devices``: one entry per accelerator,
        ``{index, name, memory_gb, capability}``, empty on a CPU-only machine. Versions of
        the thelper distributions installed (``thelper-core``, ``thelper-vision``, ...)
        are included under their names. Never raises.
    """
    info: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "processor": _cpu_model(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        cuda = torch.cuda.is_available()
        info["cuda"] = torch.version.cuda if cuda else None
        info["cudnn"] = torch.backends.cudnn.version() if cuda else None
        devices = []
        if cuda:
            info["gpus"] = [torch.cuda.get_device_name(i)
                            for i in range(torch.cuda.device_count())]
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                devices.append({"index": i, "name": props.name,
                                "memory_gb": round(props.total_memory / 2**30, 2),
                                "capability": f"{props.major}.{props.minor}"})
        info["devices"] = devices
    except Exception:  # pragma: no cover - a broken torch must not fail the record
        pass
    for dist in ("thelper-core", "thelper-vision", "thelper-geo", "thelper-gui"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return info


def _cpu_model() -> str | None:
    """The CPU model name (``/proc/cpuinfo`` on Linux, ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_info(start: Path | None = None) -> dict[str, Any] | None:
    """Commit, branch, dirty flag and remote of the git work tree around ``start``.

    Args:
        start: A file or directory inside the work tree (the session's config file, so that
            a config kept in another repository than the current directory's is described);
            default: the current directory.

    Returns:
        ``{"commit", "branch", "dirty", "remote", "root"}`` (``remote``: the URL of
        ``origin``, or of the first remote, with any ``user:password@`` removed; ``None``
        without one; ``root``: the work tree's top folder), or ``None`` when ``start`` is
        not inside a git work tree or git is not installed. Never raises.
    """
    import subprocess

    where = Path(start) if start is not None else Path.cwd()
    if where.is_file() or not where.exists():
        where = where.parent
    if not where.is_dir():
        return None
    cwd = str(where)

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
    remote = git("remote", "get-url", "origin")
    if remote is None:
        names = (git("remote") or "").split()
        remote = git("remote", "get-url", names[0]) if names else None
    if remote:
        import re

        remote = re.sub(r"^(\w+://)[^/@]*@", r"\1", remote)  # no credentials in the record
    return {"commit": commit, "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
            "dirty": bool(status), "remote": remote or None,
            "root": git("rev-parse", "--show-toplevel")}


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
             "checkpoint_saved", "log_scalars")


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
        """``logs/config.<time>.yaml`` backup and ``config.latest.yaml`` (the resolved
        config), and for a new session ``config.sources.yaml``: the files it was composed
        from as written, and how (``extras["config-sources"]``, see
        :func:`thelper.config.compose.sources_yaml`). Rank 0 only; a resumed session keeps
        the sources of its first run.

        Raises:
            SessionError: One of them, or ``logs/``, is a symbolic link.
        """
        if not self.is_main:
            return
        text = yaml.safe_dump(self.config, sort_keys=False)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        write_text(safe_path(self.session_dir, f"logs/config.{stamp}.yaml"), text)
        write_text(safe_path(self.session_dir, "config.latest.yaml"), text)
        sources = self.extras.get("config-sources")
        if sources and not self.resumed:
            write_text(safe_path(self.session_dir, "config.sources.yaml"), sources)

    def write_packages(self) -> None:
        """``logs/packages.txt``: every installed distribution and version, and
        ``logs/plugins.json``: the loaded plugins and local plugin modules (rank 0 only).

        Raises:
            SessionError: It, or ``logs/``, is a symbolic link.
        """
        if not self.is_main:
            return
        lines = sorted({f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions()
                        if d.metadata.get("Name")}, key=str.lower)
        write_text(safe_path(self.session_dir, "logs/packages.txt"), "\n".join(lines) + "\n")
        records = getattr(self.plugins, "records", {})
        write_json(safe_path(self.session_dir, "logs/plugins.json"), {
            # local plugin modules (thelper -p MODULE): a resume must name them again
            "local_modules": list(getattr(self.plugins, "local_modules", ())),
            "plugins": [{"name": r.name, "distribution": r.distribution, "version": r.version}
                        for r in records.values()],
        })
