"""Drive OpenCV windows with xdotool under Xvfb (pytest-xvfb gives the display)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
THELPER = Path(sys.executable).parent / "thelper"
TIMEOUT = 120.0  # generous: the window of a cold process on a loaded 2-core machine


def need_display() -> None:
    """Skip unless an X display and xdotool are available."""
    from thelper_gui.display import display_problem

    problem = display_problem()
    if problem is not None:
        pytest.skip(f"no display for GUI tests: {problem}")
    if shutil.which("xdotool") is None:
        pytest.skip("xdotool is not installed")


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = TIMEOUT,
             proc: subprocess.Popen | None = None) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` s or when
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for "
                                 f"{what}:\n{out}")
        time.sleep(0.05)
    out = ""
    if proc is not None and proc.poll() is None:  # its output says where it stood
        proc.kill()
        out = "\n" + (proc.communicate(timeout=60)[0] or "")
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{out}")


def xdotool(*args: str) -> str:
    result = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=60,
                            check=False)
    return result.stdout.strip()


class Window:
    """An OpenCV window found by its title."""

    def __init__(self, title: str, proc: subprocess.Popen,
                 size: tuple[int, int] | None = None) -> None:
        """Wait for the window ``title`` of ``proc``; with ``size`` (width, height), until
        it has that size (the first frame is shown: the window exists before it)."""

        def find() -> str | None:
            ids = xdotool("search", "--name", f"^{title}$").split()
            for wid in ids:
                geo = self.geometry(wid)
                if geo is None or geo[2] <= 1 or geo[3] <= 1:
                    continue
                if size is None or (geo[2], geo[3]) == tuple(size):
                    return wid
            return None

        self.proc = proc
        self.wid = wait_for(find, f"window {title!r}", proc=proc)
        # keys go through XTEST to the focused window, in one queue with the mouse events
        # (keys sent to a window with XSendEvent can overtake pending mouse events)
        xdotool("mousemove", "--window", self.wid, "0", "0")

        def focused() -> bool:
            xdotool("windowfocus", self.wid)
            return xdotool("getwindowfocus") == self.wid

        wait_for(focused, f"window {title!r} to take the keyboard focus", proc=proc)

    @staticmethod
    def geometry(wid: str) -> tuple[int, int, int, int] | None:
        out = xdotool("getwindowgeometry", "--shell", wid)
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        try:
            return (int(values["X"]), int(values["Y"]), int(values["WIDTH"]),
                    int(values["HEIGHT"]))
        except KeyError:
            return None

    def size(self) -> tuple[int, int]:
        geo = self.geometry(self.wid)
        assert geo is not None
        return geo[2], geo[3]

    def drag(self, points: list[tuple[int, int]], button: int = 1) -> None:
        """Press at the first point, move through the others, release at the last."""
        args = ["mousemove", "--window", self.wid, str(points[0][0]), str(points[0][1]),
                "mousedown", str(button)]
        for x, y in points[1:]:
            args += ["mousemove", "--window", self.wid, str(x), str(y)]
        args += ["mouseup", str(button)]
        xdotool(*args)

    def click(self, x: int, y: int, button: int = 1) -> None:
        xdotool("mousemove", "--window", self.wid, str(x), str(y), "click", str(button))

    def key(self, *keys: str) -> None:
        """Press and release ``keys`` (xdotool key names) one after the other."""
        for key in keys:
            xdotool("key", key)


def start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``thelper`` with ``args`` (stdout and stderr merged, text)."""
    full = {**os.environ, "COLUMNS": "250", **(env or {})}
    return subprocess.Popen([str(THELPER), *args], cwd=cwd, env=full, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> str:
    """Wait for ``proc``; its output (asserting exit code 0)."""
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return out


def journal_lines(path: Path) -> int:
    """Complete lines in a journal file (0 when missing)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


class Journaled:
    """``handled(action, *args)``: run a window action, then wait until it has reached the
    journal (one more complete line; the tests set a long ``save_interval`` so that the
    journal only grows). Scheduling by what is on disk, never by sleeps."""

    def __init__(self, journal: Path, proc: subprocess.Popen) -> None:
        self.journal, self.proc, self.entries = journal, proc, 0

    def __call__(self, action: Callable[..., Any], *args: Any) -> None:
        action(*args)
        self.entries += 1
        wait_for(lambda: journal_lines(self.journal) >= self.entries,
                 f"journal entry {self.entries}", proc=self.proc)
