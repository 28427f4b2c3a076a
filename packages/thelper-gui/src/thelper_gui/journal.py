"""Durable writes: an append-only journal fsynced per entry, and atomic file replacement.

Every change an annotator makes is one journal line (JSON), appended and fsynced before the
window redraws, so a crash or a closed window loses at most the stroke in progress. A
background thread (:class:`Compactor`) later folds the journal into the saved files (PNG
masks, CSV, COCO JSON), written atomically (temporary file, fsync, rename, fsync of the
folder), and only then drops the folded lines. Entries set absolute values (pixels of a
rectangle, the label of an image, the boxes of an image), so replaying a line that was
already folded in is harmless: a crash between the two steps loses nothing either.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from thelper.exceptions import DataError
from thelper.session import fsync_dir

__all__ = ["atomic_write", "Journal", "Compactor"]

log = logging.getLogger("thelper.gui")

#: Largest journal file read back (bytes); the compactor keeps real ones far smaller.
MAX_JOURNAL_BYTES = 512 * 2**20


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader (or a crash) sees either the old or
    the new file, never a torn one.

    Raises:
        OSError: The folder is not writable or the disk is full (``path`` is untouched).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Journal:
    """An append-only file of JSON lines, each fsynced as it is written.

    Not thread-safe by itself: the owner serialises :meth:`append` and :meth:`drop`.

    Args:
        path: The journal file (created when missing).

    Attributes:
        count: Entries in the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.count = len(self.read(self.path))
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                       | getattr(os, "O_NOFOLLOW", 0), 0o644)

    @staticmethod
    def read(path: Path) -> list[dict[str, Any]]:
        """The entries of a journal file (none when it is missing).

        A last line cut short by a crash (no newline, or not JSON) is ignored: it is the
        entry that was being written.

        Raises:
            DataError: A line before the last is not a JSON object (the file was edited), or
                the file is larger than :data:`MAX_JOURNAL_BYTES`.
        """
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_JOURNAL_BYTES + 1)
        except FileNotFoundError:
            return []
        if len(raw) > MAX_JOURNAL_BYTES:
            raise DataError(f"{path}: larger than {MAX_JOURNAL_BYTES // 2**20} MiB, not a journal "
                            "thelper annot wrote; delete it to drop the unsaved changes")
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" after a complete last line
        out = []
        for n, line in enumerate(lines, 1):
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                if n == len(lines) and not tail:
                    log.warning("%s: ignoring a torn last entry (%s)", path, exc)
                    break
                raise DataError(f"{path}: line {n} is not a journal entry ({exc}); restore "
                                "the file or delete it to drop the unsaved changes") from None
            out.append(entry)
        if tail:
            log.warning("%s: ignoring a torn last entry (%d bytes)", path, len(tail))
        return out

    def append(self, entry: dict[str, Any]) -> None:
        """Write one entry and fsync it (on disk when this returns).

        Raises:
            OSError: Disk full or I/O error.
        """
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self.count += 1

    def drop(self, n: int) -> None:
        """Remove the first ``n`` entries (folded into the saved files), atomically."""
        if n <= 0:
            return
        rest = self.read(self.path)[n:]
        data = b"".join((json.dumps(e, separators=(",", ":")) + "\n").encode() for e in rest)
        os.close(self._fd)
        try:
            atomic_write(self.path, data)
        finally:
            self._fd = self._open()
        self.count = len(rest)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class Compactor(threading.Thread):
    """Runs ``compact()`` in the background, at most every ``interval`` seconds after a
    :meth:`poke`, and once more at :meth:`stop`.

    Args:
        compact: Folds the journal into the saved files; returns nothing.
        interval: Seconds to gather changes before compacting.
        on_error: Called with the exception when ``compact`` fails (it is retried at the
            next poke).
    """

    def __init__(self, compact: Callable[[], None], interval: float = 0.5,
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__(name="thelper-gui-compactor", daemon=True)
        self._compact = compact
        self._interval = interval
        self._on_error = on_error
        self._wake = threading.Condition()
        self._pending = False
        self._stopping = False
        self.error: BaseException | None = None

    def poke(self) -> None:
        """Ask for a compaction (returns at once)."""
        with self._wake:
            self._pending = True
            self._wake.notify()

    def run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopping:
                    self._wake.wait()
                deadline = time.monotonic() + self._interval  # gather a burst of changes
                while not self._stopping and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                if self._stopping:
                    return
                self._pending = False
            self._run_once()

    def _run_once(self) -> None:
        try:
            self._compact()
            self.error = None
        except Exception as exc:  # noqa: BLE001 - reported, the journal still holds it
            self.error = exc
            log.error("saving annotations failed (kept in the journal): %s", exc)
            if self._on_error is not None:
                self._on_error(exc)

    def stop(self) -> None:
        """Stop the thread and compact what is left (in the caller's thread)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self.is_alive():
            self.join()
        self._run_once()
