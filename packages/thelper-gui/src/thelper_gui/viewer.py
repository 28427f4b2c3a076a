"""The batch viewer of ``thelper viz CONFIG --window`` (component ``viewer: window``).

Shows the transformed batches of a split in an OpenCV window, one batch at a time, as a
grid of tiles: masks over segmentation images, boxes over detection images, the class name
under classification images. Batches are drawn from the loader as the user steps forward
and kept, so stepping back shows the same augmentations again.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from thelper_gui.window import (
    KEY_BACKSPACE,
    KEY_ESC,
    KEY_LEFT,
    KEY_RIGHT,
    draw_help,
    key_char,
    put_text,
    write_png,
)

__all__ = ["BatchViewer"]

CAPTION = 18
BAR = 22


class BatchViewer:
    """An OpenCV window stepping through batches (see the module docstring).

    Args:
        params: :class:`thelper_gui.params.ViewerParams`.
    """

    keys_help = [
        ("n / space", "next batch"), ("p / backspace", "previous batch"),
        ("m", "masks on / off"), ("b", "boxes on / off"),
        ("h", "show / hide this help"), ("q / esc", "quit"),
    ]

    def __init__(self, params: Any) -> None:
        self.params = params
        self.show_masks = True
        self.show_boxes = True
        self.show_help = False
        self.limit = 16
        self.message = ""
        self.screenshot = os.environ.get("THELPER_GUI_SCREENSHOT", "")

    # ----------------------------------------------------------------- drawing
    def tile(self, task: Any, batch: dict[str, Any], i: int) -> tuple[np.ndarray, str]:
        """Sample ``i`` of ``batch`` drawn as ``(H, W, 3)`` uint8 BGR, and its caption."""
        import torch

        from thelper_vision import draw

        kind = getattr(task, "type_name", "")
        names = list(getattr(task, "class_names", None) or [])
        palette = task.palette() if hasattr(task, "palette") else None
        image = batch[task.input_key][i]
        target = batch.get(getattr(task, "label_key", None) or "")
        paths = batch.get("path")
        caption = Path(str(paths[i])).name if paths is not None else f"#{i}"
        if kind == "segmentation" and self.show_masks and target is not None:
            rgb = draw.overlay_mask(image, target[i], palette or [],
                                    float(self.params.mask_opacity))
        elif kind == "detection" and target is not None:
            t = target[i]
            caption += f" ({len(t['boxes'])} boxes)"
            rgb = (draw.draw_boxes(image, t["boxes"], t["labels"], names, palette, width=1)
                   if self.show_boxes else draw.to_rgb_uint8(image))
        else:
            rgb = draw.to_rgb_uint8(image if isinstance(image, torch.Tensor)
                                    else torch.as_tensor(image))
            if kind == "classification" and target is not None and names:
                value = target[i]
                index = int(value.item() if hasattr(value, "item") else value)
                if 0 <= index < len(names):
                    caption = f"{names[index]} - {caption}"
        bgr = np.ascontiguousarray(rgb.permute(1, 2, 0).numpy()[:, :, ::-1])
        return bgr, caption

    def compose(self, task: Any, batch: dict[str, Any], status: str) -> np.ndarray:
        """The window's frame for ``batch``: a grid of tiles with captions, a status bar."""
        import cv2

        n = min(self.limit, len(batch[task.input_key]))
        size = int(self.params.tile_size)
        cols = max(1, min(int(self.params.columns), n))
        rows = max(1, math.ceil(n / cols))
        frame = np.full((rows * (size + CAPTION) + BAR, max(320, cols * size), 3), 30,
                        np.uint8)
        for i in range(n):
            bgr, caption = self.tile(task, batch, i)
            h, w = bgr.shape[:2]
            scale = size / max(h, w)
            if scale != 1.0:
                interpolation = cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA
                bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))),
                                 interpolation=interpolation)
            r, c = divmod(i, cols)
            y0, x0 = r * (size + CAPTION), c * size
            frame[y0:y0 + bgr.shape[0], x0:x0 + bgr.shape[1]] = bgr
            put_text(frame, caption[:48], (x0 + 3, y0 + size + CAPTION - 5), 0.4)
        bar = frame[frame.shape[0] - BAR:]
        bar[...] = (40, 40, 40)
        put_text(bar, status, (4, 15), 0.4)
        return frame

    # -------------------------------------------------------------- event loop
    def run(self, task: Any, batches: Iterator[dict[str, Any]], *, title: str = "",
            limit: int = 16) -> int:
        """Show ``batches`` until ``q``, Escape or the window is closed; returns how many
        batches were drawn from the iterator.

        Call :func:`thelper_gui.display.require_display` first (the component's factory
        does): without a display, Qt aborts the process.
        """
        import cv2

        self.limit = limit
        name = self.params.window_name
        seen: list[dict[str, Any]] = []
        iterator = iter(batches)
        exhausted = False

        def fetch() -> bool:
            nonlocal exhausted
            if exhausted:
                return False
            try:
                seen.append(next(iterator))
                return True
            except StopIteration:
                exhausted = True
                return False

        if not fetch():
            from thelper.exceptions import DataError

            raise DataError("thelper viz --window: the split holds no batch")
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        current, dirty, running = 0, True, True
        try:
            while running:
                if dirty:
                    total = f"{len(seen)}" + ("" if exhausted else "+")
                    status = (f"{title} | batch {current + 1}/{total} | masks "
                              f"{'on' if self.show_masks else 'off'} | boxes "
                              f"{'on' if self.show_boxes else 'off'} | h: help")
                    if self.message:
                        status = f"{self.message} | {status}"
                    frame = self.compose(task, seen[current], status)
                    if self.show_help:
                        draw_help(frame, "thelper viz --window (h: close help)",
                                  self.keys_help)
                    cv2.imshow(name, frame)
                    if self.screenshot:
                        write_png(self.screenshot, frame)
                    dirty = False
                code = cv2.waitKeyEx(15)
                if code == -1:
                    if cv2.getWindowProperty(name, cv2.WND_PROP_VISIBLE) < 1:
                        break
                    continue
                code = key_char(code)
                char = chr(code) if 0 < code < 0x10000 else ""
                self.message = ""
                dirty = True
                if char == "q" or code == KEY_ESC:
                    running = False
                elif char in ("n", " ") or code == KEY_RIGHT:
                    if current + 1 < len(seen) or fetch():
                        current += 1
                    else:
                        self.message = "last batch"
                elif char == "p" or code in (KEY_BACKSPACE, KEY_LEFT):
                    if current > 0:
                        current -= 1
                    else:
                        self.message = "first batch"
                elif char == "m":
                    self.show_masks = not self.show_masks
                elif char == "b":
                    self.show_boxes = not self.show_boxes
                elif char == "h":
                    self.show_help = not self.show_help
        finally:
            cv2.destroyWindow(name)
            cv2.waitKey(1)
        return len(seen)
