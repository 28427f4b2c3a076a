"""Is there a display OpenCV can open a window on? Checked before any window function.

OpenCV's wheels draw windows with Qt, and Qt without a usable display aborts the whole
process (SIGABRT, no Python exception). :func:`require_display` looks for an X server the
way Qt's ``xcb`` platform would reach it and raises a one-line :class:`DisplayError`
(exit code 2) instead.
"""

from __future__ import annotations

import os
import re
import socket

from thelper.exceptions import ConfigError

__all__ = ["DisplayError", "display_problem", "require_display"]

_DISPLAY = re.compile(r"^(?P<host>[^:]*):(?P<num>\d+)(\.\d+)?$")


class DisplayError(ConfigError):
    """No usable display: the command needs a desktop session, ``ssh -X`` or Xvfb."""


def _connects(family: int, address: str | tuple[str, int]) -> bool:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(2.0)
    try:
        sock.connect(address)
        return True
    except OSError:
        return False
    finally:
        sock.close()


def display_problem(environ: dict[str, str] | None = None) -> str | None:
    """Why no window can be opened, or ``None`` when an X server answers on ``DISPLAY``.

    ``QT_QPA_PLATFORM=offscreen`` (windows drawn in memory) counts as usable.

    Args:
        environ: The environment to read (default: ``os.environ``).
    """
    env = os.environ if environ is None else environ
    if env.get("QT_QPA_PLATFORM", "").split(":")[0] == "offscreen":
        return None
    display = env.get("DISPLAY", "")
    if not display:
        return "DISPLAY is not set"
    match = _DISPLAY.match(display)
    if match is None:
        return f"DISPLAY={display!r} is not of the form [host]:number"
    host, num = match.group("host"), int(match.group("num"))
    if host in ("", "unix") or host.startswith("/"):
        path = f"/tmp/.X11-unix/X{num}"
        if hasattr(socket, "AF_UNIX") and (
                _connects(socket.AF_UNIX, "\0" + path) or _connects(socket.AF_UNIX, path)):
            return None
        if host == "":  # Xlib falls back to TCP on localhost
            host = "localhost"
        else:
            return f"no X server answers on DISPLAY={display!r} ({path})"
    if _connects(socket.AF_INET, (host, 6000 + num)):
        return None
    return f"no X server answers on DISPLAY={display!r}"


def require_display(command: str) -> None:
    """Raise :class:`DisplayError` (one line, exit code 2) when no window can be opened.

    Args:
        command: What needs the window, for the message (``"thelper annot"``).

    Raises:
        DisplayError: No usable display.
    """
    problem = display_problem()
    if problem is not None:
        raise DisplayError(f"{command} opens a window but {problem}; run it in a desktop "
                           "session, over 'ssh -X', or under a virtual display "
                           "('xvfb-run -a thelper ...')")
