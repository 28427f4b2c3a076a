"""Opening the files that datasets read, whoever made them.

A dataset folder may come from someone else: a FIFO named like an image would block its
reader forever (waiting for a writer), and a device such as ``/dev/zero`` would never end.
:func:`open_regular` opens without blocking and refuses anything but a regular file;
symbolic links to regular files are followed. What is *decoded* from a file is bounded by
the decoder (e.g. Pillow's ``Image.MAX_IMAGE_PIXELS``), not here: a large file is fine.
"""

from __future__ import annotations

import io
import os
import stat
from typing import IO, Any

from thelper.exceptions import DataError

__all__ = ["open_regular", "file_kind"]

_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
          | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def file_kind(mode: int) -> str:
    """What a non-regular ``st_mode`` is, in words (``"a FIFO (named pipe)"``, ...)."""
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], mode: str = "rb",
                 encoding: str | None = None) -> IO[Any]:
    """Open a regular file for reading, refusing FIFOs, devices, sockets and directories.

    The file is opened with ``O_NONBLOCK`` (opening a FIFO does not wait for a writer) and
    checked with ``fstat`` on the opened descriptor, so what is read is what was checked.

    Args:
        path: The file; a symbolic link to a regular file is fine.
        mode: ``"rb"`` (binary) or ``"r"`` (text).
        encoding: Text encoding for ``mode="r"`` (default: UTF-8).

    Returns:
        An open file object (use it as a context manager).

    Raises:
        ValueError: ``mode`` is not a read mode.
        DataError: ``path`` is not a regular file (the message names it and what it is;
            datasets wrap it with the sample and the fix: replace or delete the file).
        OSError: The file is missing or cannot be opened.
    """
    if mode not in ("rb", "r", "rt"):
        raise ValueError(f"open_regular reads files: mode must be 'rb' or 'r' (got {mode!r})")
    name = os.fspath(path)
    st = os.stat(name)  # refuse devices and FIFOs before opening them at all
    fd = -1
    try:
        if stat.S_ISREG(st.st_mode):
            fd = os.open(name, _FLAGS)
            st = os.fstat(fd)  # the file opened, not the one stat()ed before
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{os.fsdecode(name)!r} is {file_kind(st.st_mode)}, not a regular "
                            "file: datasets read regular files only")
        f = os.fdopen(fd, "rb")
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return f if mode == "rb" else io.TextIOWrapper(f, encoding=encoding or "utf-8")
