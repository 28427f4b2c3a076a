"""Console and file logging: what the console shows is also written to ``logs/``."""

from __future__ import annotations

import errno
import logging
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

__all__ = ["console", "setup_logging", "attach_file_handler", "detach_file_handlers"]

#: Console for logs and progress bars (stderr, so stdout stays machine-readable).
console = Console(stderr=True)
_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (so redirections and
    test captures made after set-up are honoured)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001
        pass


#: -1 quiet (``thelper -q``), 0 normal, 1 verbose (``thelper -v``): set per CLI invocation.
_VERBOSITY = {"level": 0}


def set_verbosity(level: int) -> None:
    """Set the console's verbosity for this invocation: -1 quiet (warnings and errors, no
    progress bars), 0 normal, 1 verbose (debug messages too)."""
    _VERBOSITY["level"] = level
    logger = logging.getLogger("thelper")
    for h in logger.handlers:
        if getattr(h, "_thelper_console", False):
            h.setLevel(logging.WARNING if level < 0 else logging.NOTSET)
    if logger.handlers:
        logger.setLevel(logging.DEBUG if level > 0 else logging.INFO)


def verbosity() -> int:
    """The verbosity :func:`set_verbosity` set (0 by default)."""
    return _VERBOSITY["level"]


def setup_logging(level: int | None = None) -> logging.Logger:
    """Configure the ``thelper`` logger with a rich console handler (idempotent).

    Args:
        level: The logger's level; by default INFO, or DEBUG under ``thelper -v``. Under
            ``thelper -q`` the console shows warnings and errors only.
    """
    logger = logging.getLogger("thelper")
    if level is None:
        level = logging.DEBUG if _VERBOSITY["level"] > 0 else logging.INFO
    logger.setLevel(level)
    logger.propagate = False
    if not any(getattr(h, "_thelper_console", False) for h in logger.handlers):
        handler: logging.Handler
        if console.is_terminal:
            handler = RichHandler(console=console, show_path=False, markup=False,
                                  rich_tracebacks=False)
        else:  # plain lines for pipes and CI logs (no wrapping, no colours)
            handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._thelper_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    for h in logger.handlers:
        if getattr(h, "_thelper_console", False):
            h.setLevel(logging.WARNING if _VERBOSITY["level"] < 0 else logging.NOTSET)
    return logger


class _NoFollowFileHandler(logging.FileHandler):
    """A :class:`logging.FileHandler` that appends without following a symbolic link at
    its path (``O_NOFOLLOW``): a link planted in a session cannot redirect the log."""

    def _open(self):  # noqa: ANN202
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.baseFilename, flags, 0o666)
        try:
            return open(fd, "a", encoding=self.encoding, errors=self.errors)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            raise


def attach_file_handler(path: Path, name: str = "thelper") -> logging.FileHandler:
    """Also write the ``name`` logger to ``path`` (appending, never through a link).

    Raises:
        SessionError: ``path`` is a symbolic link or cannot be opened for appending.
    """
    from thelper.exceptions import SessionError

    try:
        handler = _NoFollowFileHandler(path, encoding="utf-8")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            try:
                target = f" (to {os.readlink(path)!r})"
            except OSError:
                target = ""
            raise SessionError(f"{str(path)!r} is a symbolic link{target}; thelper does not "
                               "append logs through it: remove the link") from None
        raise SessionError(f"cannot open the log file {str(path)!r}: {exc.strerror or exc}") \
            from None
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    logger = logging.getLogger(name)
    logger.addHandler(handler)
    return handler


def detach_file_handlers(name: str = "thelper") -> None:
    """Close and remove the file handlers of the ``name`` logger."""
    logger = logging.getLogger(name)
    for h in list(logger.handlers):
        if isinstance(h, logging.FileHandler):
            logger.removeHandler(h)
            h.close()


def is_interactive() -> bool:
    """True when progress bars can be drawn (a terminal on stderr, not ``thelper -q``)."""
    return _VERBOSITY["level"] >= 0 and console.is_terminal and sys.stderr.isatty()
