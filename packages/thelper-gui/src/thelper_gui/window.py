"""The window all annotators share: image, status bar, help overlay, navigation, saving.

One OpenCV window (``cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL``: no toolbar, no
scaling), so a window pixel is an image pixel: the image is drawn at the window's top-left
corner, unscaled, and the status bar below it. Mouse and keyboard events are handled in the
thread that calls ``cv2.waitKeyEx``; saving runs in the store's compactor thread.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thelper_gui.samples import SampleSource, unique_stem
from thelper_gui.store import AnnotationStore

__all__ = ["WindowAnnotator", "KEY_ESC", "KEY_ENTER", "KEY_BACKSPACE", "KEY_TAB",
           "KEY_DELETE", "KEY_LEFT", "KEY_RIGHT", "key_char", "draw_help", "put_text",
           "write_png"]

log = logging.getLogger("thelper.gui")

KEY_ESC, KEY_ENTER, KEY_BACKSPACE, KEY_TAB = 27, 13, 8, 9
#: Qt key codes returned by cv2.waitKeyEx (OpenCV's Qt backend)
KEY_DELETE, KEY_LEFT, KEY_RIGHT = 0x1000007, 0x1000012, 0x1000014
_QT_ENTER, _QT_RETURN, _QT_BACKSPACE, _QT_TAB, _QT_ESC = (0x1000005, 0x1000004, 0x1000003,
                                                          0x1000001, 0x1000000)
_ALIASES = {_QT_ENTER: KEY_ENTER, _QT_RETURN: KEY_ENTER, 10: KEY_ENTER,
            _QT_BACKSPACE: KEY_BACKSPACE, 127: KEY_DELETE, _QT_TAB: KEY_TAB, _QT_ESC: KEY_ESC,
            0xFFFF: KEY_DELETE}


def key_char(code: int) -> int:
    """A key code of ``cv2.waitKeyEx`` normalised: Qt's Enter, Backspace, Tab, Escape and
    Delete codes mapped to their ASCII/``KEY_*`` values (other codes unchanged)."""
    return _ALIASES.get(code, code)


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float = 0.45,
             color: tuple[int, int, int] = (255, 255, 255), thickness: int = 1) -> None:
    """Anti-aliased Hershey text with a dark outline (readable over any image)."""
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness + 2,
                cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def draw_help(frame: np.ndarray, title: str, lines: Sequence[tuple[str, str]]) -> None:
    """Draw a key-binding table over ``frame`` (darkened box, ``key  action`` rows)."""
    import cv2

    h, w = frame.shape[:2]
    row = 18
    box_h = min(h - 8, row * (len(lines) + 2) + 8)
    box_w = min(w - 8, 420)
    x0, y0 = 4, 4
    roi = frame[y0:y0 + box_h, x0:x0 + box_w]
    cv2.addWeighted(roi, 0.25, np.zeros_like(roi), 0.75, 0, dst=roi)
    put_text(frame, title, (x0 + 8, y0 + row), 0.5, (120, 220, 255))
    for i, (key, action) in enumerate(lines):
        y = y0 + row * (i + 2)
        if y > y0 + box_h - 4:
            break
        put_text(frame, key, (x0 + 8, y), 0.42, (120, 220, 255))
        put_text(frame, action, (x0 + 110, y), 0.42)


class WindowAnnotator:
    """Base of the annotators: loads samples, runs the event loop, saves through a store.

    Subclasses implement :meth:`load_sample` (show a sample), :meth:`render` (draw the image
    area into ``self.frame``), :meth:`on_mouse`, :meth:`on_key` (annotator keys) and
    :meth:`status` (the status bar text), and list their keys in :attr:`keys_help`.

    Args:
        params: The annotator's validated params.
        source: The samples to annotate.
        store: Where annotations are saved.
        predictions: ``{sample key: model prediction}`` pre-filled for the user to correct
            (``--from``), or ``None``.
        order: Positions of the samples in the order they are shown (review mode shows the
            most disputed first); default: every sample in dataset order.
        title: Window title (default ``params.window_name``).
    """

    kind = ""
    help_title = "thelper annot"
    keys_help: list[tuple[str, str]] = []
    common_help = [
        ("n / space", "next sample"), ("p / backspace", "previous sample"),
        ("enter", "accept (saves a model pre-fill as is) and go to the next"),
        ("h", "show / hide this help"), ("q / esc", "quit (everything is already saved)"),
    ]

    def __init__(self, params: Any, source: SampleSource, store: AnnotationStore, *,
                 predictions: dict[str, Any] | None = None, order: Sequence[int] | None = None,
                 title: str | None = None) -> None:
        self.params = params
        self.source = source
        self.store = store
        self.predictions = predictions or {}
        self.order = list(order) if order is not None else list(range(len(source)))
        if not self.order:
            from thelper.exceptions import DataError

            raise DataError("no sample to show (review mode shows annotated samples only)")
        self.title = title or params.window_name
        self.bar = int(params.gui_bar_size)
        self.cursor = 0
        self.key = ""
        self.image: np.ndarray = np.zeros((1, 1, 3), np.uint8)
        self.frame: np.ndarray = np.zeros((1, 1, 3), np.uint8)
        self.show_help = False
        self.dirty = True
        self.running = False
        self.message = ""
        self.redraws: list[float] = []
        self.screenshot = os.environ.get("THELPER_GUI_SCREENSHOT", "")

    # -------------------------------------------------------------- navigation
    def start_cursor(self) -> int:
        """Where to start: the sample shown last (resume), else ``start_sample_idx``."""
        state = self.store.position()
        if state is not None:
            pos = self.source.position(str(state.get("key", "")))
            if pos is not None and pos in self.order:
                return self.order.index(pos)
        start = getattr(self.params, "start_sample_idx", None)
        if start is not None and start in self.order:
            return self.order.index(start)
        return 0

    def goto(self, cursor: int) -> None:
        """Show the sample at ``cursor`` in :attr:`order` (clamped)."""
        cursor = max(0, min(len(self.order) - 1, cursor))
        pos = self.order[cursor]
        ref = self.source.refs[pos]
        sample = self.source.sample(pos)
        image = self.source.image(sample, ref)
        self.register(ref, sample, image)
        image = self.display_image(image)
        self.cursor, self.key, self.image = cursor, ref.key, image
        self.frame = np.zeros((*self.frame_size(image), 3), np.uint8)
        self.load_sample(ref.key, sample)
        self.store.set_position(pos, ref.key)
        self.dirty = True

    def display_image(self, image: np.ndarray) -> np.ndarray:
        """The image as the window shows it (default: unscaled, a window pixel is an image
        pixel)."""
        return image

    def frame_size(self, image: np.ndarray) -> tuple[int, int]:
        """``(height, width)`` of the window for ``image``: the image over the status bar,
        at least 320 pixels wide."""
        h, w = image.shape[:2]
        return h + self.bar, max(w, 320)

    def register(self, ref: Any, sample: dict[str, Any], image: np.ndarray) -> None:
        """Record the sample in the session (stem, file, size); images without a file of
        their own are copied to ``images/<stem>.png``."""
        known = self.store.samples.get(ref.key)
        h, w = image.shape[:2]
        path = self.source.path_of(sample)
        if known is None:
            taken = {s["stem"] for s in self.store.samples.values()}
            stem = unique_stem(Path(path).stem if path else ref.key.replace("/", "_"), taken,
                               ref)
        else:
            stem = known["stem"]
        info: dict[str, Any] = {"dataset": ref.dataset, "index": ref.index, "stem": stem,
                                "height": h, "width": w,
                                "path": str(_absolute(path)) if path else None}
        if not path:
            import cv2

            from thelper_gui.journal import atomic_write

            rel = f"images/{stem}.png"
            target = self.store.root / rel
            if not target.is_file():
                target.parent.mkdir(exist_ok=True)
                ok, png = cv2.imencode(".png", image)
                if ok:
                    atomic_write(target, png.tobytes())
            info["image"] = rel
        self.store.register(ref.key, info)

    # --------------------------------------------------------------- event loop
    def run(self) -> None:
        """Open the window and handle events until ``q``, Escape or the window is closed.

        Call :func:`thelper_gui.display.require_display` first: without a display, Qt
        aborts the process.
        """
        import cv2

        cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.setMouseCallback(self.title, self._mouse)
        self.goto(self.start_cursor())
        self.running = True
        try:
            while self.running:
                if self.dirty:
                    self.redraw()
                code = cv2.waitKeyEx(15)
                if code != -1:
                    self.handle_key(key_char(code))
                elif cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    break  # closed with the window manager
        finally:
            try:
                self.leave_sample()
            finally:
                self.store.close()  # folds the journal into the files
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)

    def redraw(self) -> None:
        """Draw the frame and show it; times each redraw into :attr:`redraws`.

        With ``THELPER_GUI_SCREENSHOT=PATH`` in the environment, every frame shown is also
        written to ``PATH`` (PNG, atomically): the window as the user sees it, for
        documentation and tests.
        """
        import cv2

        t0 = time.perf_counter()
        restore = self.render()
        self.draw_bar()
        if self.show_help:
            saved = self.frame.copy()
            draw_help(self.frame, f"{self.help_title}: {self.kind} (h: close help)",
                      self.keys_help + self.common_help)
            self._show(cv2)
            self.frame[...] = saved
        else:
            self._show(cv2)
        if restore is not None:
            restore()
        self.dirty = False
        self.redraws.append(time.perf_counter() - t0)

    def _show(self, cv2: Any) -> None:
        cv2.imshow(self.title, self.frame)
        if self.screenshot:
            write_png(self.screenshot, self.frame)

    def draw_bar(self) -> None:
        bar = self.frame[self.frame.shape[0] - self.bar:]
        bar[...] = (40, 40, 40)
        text = f"{self.cursor + 1}/{len(self.order)} {self.store.samples[self.key]['stem']} | "
        text += self.status()
        if self.store.compactor.error is not None:
            text = f"SAVE FAILED: {self.store.compactor.error} | " + text
        elif self.message:
            text = f"{self.message} | {text}"
        put_text(bar, text, (4, min(self.bar - 6, 15)), 0.4)

    def handle_key(self, code: int) -> None:
        """Common keys first (help, quit, navigation), then the annotator's."""
        char = chr(code) if 0 < code < 0x110000 and code < 0x10000 else ""
        self.message = ""
        if char == "h":
            self.show_help = not self.show_help
        elif char == "q" or code == KEY_ESC:
            self.running = False
        elif char in ("n", " ") or code == KEY_RIGHT:
            self.move(1)
        elif char == "p" or code in (KEY_BACKSPACE, KEY_LEFT):
            self.move(-1)
        elif code == KEY_ENTER:
            self.accept()
            self.move(1)
        else:
            self.on_key(code, char)
        self.dirty = True

    def move(self, step: int) -> None:
        """Go ``step`` samples forward or back (staying put at either end)."""
        target = max(0, min(len(self.order) - 1, self.cursor + step))
        if target != self.cursor:
            self.leave_sample()
            self.goto(target)
        else:
            self.message = "last sample" if step > 0 else "first sample"

    def _mouse(self, event: int, x: int, y: int, flags: int, param: Any) -> None:
        h, w = self.image.shape[:2]
        self.on_mouse(event, x, y, flags, inside=0 <= x < w and 0 <= y < h)

    # ----------------------------------------------------------- per annotator
    def load_sample(self, key: str, sample: dict[str, Any]) -> None:
        raise NotImplementedError

    def leave_sample(self) -> None:
        """Called before another sample is shown and at exit."""

    def accept(self) -> None:
        """Enter: save the shown annotation as is (e.g. a model pre-fill)."""

    def render(self) -> Any:
        """Draw the image area of :attr:`frame`; may return a callable that undoes
        temporary overlays after the frame is shown."""
        raise NotImplementedError

    def status(self) -> str:
        return ""

    def on_key(self, code: int, char: str) -> None:
        pass

    def on_mouse(self, event: int, x: int, y: int, flags: int, inside: bool) -> None:
        pass


def write_png(path: str, image: np.ndarray) -> None:
    """Write ``image`` (BGR uint8) to ``path`` as PNG, atomically."""
    import cv2

    from thelper_gui.journal import atomic_write

    ok, png = cv2.imencode(".png", image)
    if ok:
        atomic_write(Path(path), png.tobytes())


def _absolute(path: str) -> Any:
    return Path(path).absolute()
