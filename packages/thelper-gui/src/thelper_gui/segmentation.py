"""The segmentation annotator: brush, eraser, flood fill, label palette, undo/redo, zoom
tooltip and mask opacity; masks saved as ``masks/<stem>.png`` (uint8 label ids).

The brush paints every pixel whose centre lies within ``radius`` pixels of the mouse path
(the segment between two successive mouse positions): a stroke is a union of discs swept
along the path, the same on every machine (no anti-aliasing, no OpenCV line rasteriser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thelper.exceptions import ConfigError
from thelper_gui.store import MaskStore, encode_patch
from thelper_gui.window import KEY_DELETE, WindowAnnotator

__all__ = ["SegmentationAnnotator", "paint_segment", "resolve_labels", "Rect"]

Rect = tuple[int, int, int, int]  # x, y, w, h


def paint_segment(mask: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], radius: int,
                  value: int) -> Rect | None:
    """Set to ``value`` every pixel of ``mask`` within ``radius`` of the segment ``p0-p1``.

    Args:
        mask: ``(H, W)`` uint8, changed in place.
        p0: Segment start ``(x, y)`` in pixels.
        p1: Segment end ``(x, y)`` (equal to ``p0`` for a single disc).
        radius: Brush radius in pixels (distance from pixel centre to segment, inclusive).
        value: Label id written.

    Returns:
        The rectangle ``(x, y, w, h)`` that may have changed (clipped to the mask), or
        ``None`` when the brush lies outside the mask.
    """
    h, w = mask.shape
    x0, x1 = max(0, min(p0[0], p1[0]) - radius), min(w, max(p0[0], p1[0]) + radius + 1)
    y0, y1 = max(0, min(p0[1], p1[1]) - radius), min(h, max(p0[1], p1[1]) + radius + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    ys, xs = np.mgrid[y0:y1, x0:x1]
    ax, ay = float(p0[0]), float(p0[1])
    dx, dy = float(p1[0]) - ax, float(p1[1]) - ay
    length2 = dx * dx + dy * dy
    if length2 > 0:
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
        cx, cy = ax + t * dx, ay + t * dy
    else:
        cx, cy = ax, ay
    inside = (xs - cx) ** 2 + (ys - cy) ** 2 <= radius * radius + 1e-9
    mask[y0:y1, x0:x1][inside] = value
    return x0, y0, x1 - x0, y1 - y0


def union(a: Rect | None, b: Rect | None) -> Rect | None:
    """Smallest rectangle holding both."""
    if a is None or b is None:
        return a or b
    x0, y0 = min(a[0], b[0]), min(a[1], b[1])
    x1, y1 = max(a[0] + a[2], b[0] + b[2]), max(a[1] + a[3], b[1] + b[3])
    return x0, y0, x1 - x0, y1 - y0


def resolve_labels(labels: Sequence[Any] | None, task: Any) -> list[dict[str, Any]]:
    """The palette ``[{id, name, color: [r, g, b]}]``: the configured labels, else the
    task's classes (id = class index, the task's colours).

    Raises:
        ConfigError: No labels configured and the task has no class names.
    """
    from thelper_vision.tasks import DEFAULT_COLORS, class_palette

    if labels:
        out = []
        for i, label in enumerate(labels):
            color = label.color or list(DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
            out.append({"id": label.id, "name": label.name, "color": [int(c) for c in color]})
        return out
    names = list(getattr(task, "class_names", None) or [])
    if not names:
        raise ConfigError("annotator.params.labels: the task has no class names; list the "
                          "labels as [{id, name, color}]")
    palette = class_palette(names, dict(getattr(task, "color_map", None) or {}))
    pairs = zip(names, palette, strict=True)
    return [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(pairs)]


class SegmentationAnnotator(WindowAnnotator):
    """Paint label ids into a mask per image (see the module docstring)."""

    kind = "segmentation"
    keys_help = [
        ("left drag", "paint with the current tool"),
        ("right drag", "erase (paint the background id)"),
        ("1-9", "pick a label of the palette"),
        ("b / e / f", "brush / eraser / flood fill tool"),
        ("[ ]  - +", "brush radius -1 / +1 ({ } : -5 / +5)"),
        ("o / O", "mask opacity -10% / +10%"),
        ("u / r", "undo / redo (per sample, this session)"),
        ("z", "zoom tooltip on / off"),
        ("c", "clear the mask (to the fill id)"),
    ]

    def __init__(self, params: Any, source: Any, store: MaskStore, **kwargs: Any) -> None:
        super().__init__(params, source, store, **kwargs)
        self.store: MaskStore = store
        self.labels = list(store.meta["labels"])
        self.label = 0
        self.tool = "brush"
        self.radius = int(params.default_brush_radius)
        self.opacity = float(params.default_mask_opacity)
        self.zoom = True
        self.mouse: tuple[int, int] | None = None
        self.stroke: dict[str, Any] | None = None
        self.history: dict[str, tuple[list[Any], list[Any]]] = {}
        self.prefill = False
        self.mask = np.zeros((1, 1), np.uint8)
        self.composite = np.zeros((1, 1, 3), np.uint8)
        self._luts()

    # ----------------------------------------------------------------- drawing
    def _luts(self) -> None:
        self.color_lut = np.zeros((256, 3), np.float32)
        self.alpha_lut = np.zeros(256, np.float32)
        for label in self.labels:
            r, g, b = label["color"]
            self.color_lut[label["id"]] = (b, g, r)
            if label["id"] != self.params.background_id:
                self.alpha_lut[label["id"]] = self.opacity

    def compose(self, rect: Rect | None = None) -> None:
        """Blend the label colours over the image in ``rect`` (default: everywhere)."""
        h, w = self.mask.shape
        x, y, rw, rh = rect if rect is not None else (0, 0, w, h)
        m = self.mask[y:y + rh, x:x + rw]
        img = self.image[y:y + rh, x:x + rw]
        a = self.alpha_lut[m][..., None]
        out = img * (1.0 - a) + self.color_lut[m] * a
        self.composite[y:y + rh, x:x + rw] = np.rint(out).astype(np.uint8)

    def render(self) -> Any:
        """Copy the composite in, then draw the cursor and zoom tooltip (undone after the
        frame is shown)."""
        import cv2

        h, w = self.mask.shape
        area = self.frame[:h, :w]
        if self._full:
            area[...] = self.composite
            self._full = False
        saved: list[tuple[Rect, np.ndarray]] = []

        def keep(x0: int, y0: int, x1: int, y1: int) -> None:
            x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
            if x0 < x1 and y0 < y1:
                saved.append(((x0, y0, x1 - x0, y1 - y0), area[y0:y1, x0:x1].copy()))

        if self.mouse is not None:
            mx, my = self.mouse
            r = self.radius
            if self.zoom:
                zs = int(self.params.window_zoom_size)
                c = int(self.params.window_zoom_crop_size)
                zx = w - zs - 4 if mx < w // 2 else 4
                zy = 4
                if zx >= 0 and zy + zs <= h:
                    keep(zx - 1, zy - 1, zx + zs + 1, zy + zs + 1)
                    cx0, cy0 = mx - c // 2, my - c // 2
                    crop = np.zeros((c, c, 3), np.uint8)
                    sx0, sy0 = max(0, cx0), max(0, cy0)
                    sx1, sy1 = min(w, cx0 + c), min(h, cy0 + c)
                    if sx0 < sx1 and sy0 < sy1:
                        crop[sy0 - cy0:sy1 - cy0, sx0 - cx0:sx1 - cx0] = \
                            self.composite[sy0:sy1, sx0:sx1]
                    big = cv2.resize(crop, (zs, zs), interpolation=cv2.INTER_NEAREST)
                    k = zs / c
                    centre = (int((mx - cx0 + 0.5) * k), int((my - cy0 + 0.5) * k))
                    cv2.circle(big, centre, max(1, int(r * k)), (255, 255, 255), 1, cv2.LINE_AA)
                    area[zy:zy + zs, zx:zx + zs] = big
                    cv2.rectangle(area, (zx - 1, zy - 1), (zx + zs, zy + zs), (255, 255, 255), 1)
            keep(mx - r - 3, my - r - 3, mx + r + 4, my + r + 4)
            color = (255, 255, 255) if self.tool != "eraser" else (0, 0, 255)
            cv2.circle(area, (mx, my), max(1, r), color, int(self.params.brush_thickness),
                       cv2.LINE_AA)

        def restore() -> None:
            for (x, y, rw, rh), pixels in reversed(saved):
                area[y:y + rh, x:x + rw] = pixels

        return restore

    def refresh(self, rect: Rect | None) -> None:
        """Recompose ``rect`` (``None``: all) and copy it into the frame."""
        if rect is None:
            self.compose()
            self._full = True
        else:
            x, y, w, h = rect
            self.compose(rect)
            self.frame[y:y + h, x:x + w] = self.composite[y:y + h, x:x + w]
        self.dirty = True

    def status(self) -> str:
        label = self.labels[self.label]
        tool = self.tool if self.tool != "brush" else f"brush r={self.radius}"
        if self.tool == "eraser":
            tool = f"eraser r={self.radius}"
        text = (f"{tool} | label {label['id']}:{label['name']} | opacity "
                f"{self.opacity:.1f}")
        if self.prefill:
            text += " | model pre-fill (enter or any edit saves it)"
        return text + " | h: help"

    def draw_bar(self) -> None:
        super().draw_bar()
        h = self.image.shape[0]
        r, g, b = self.labels[self.label]["color"]
        x1 = self.frame.shape[1] - 4
        self.frame[h + 4:h + self.bar - 4, x1 - 14:x1] = (b, g, r)

    # ----------------------------------------------------------------- samples
    def load_sample(self, key: str, sample: dict[str, Any]) -> None:
        fill = int(self.params.default_fill_id)
        prediction = self.predictions.get(key)
        self.prefill = prediction is not None and not self.store.saved(key)
        if self.prefill:
            self.mask = np.asarray(prediction, dtype=np.uint8).copy()
        else:
            self.mask = self.store.mask(key, fill).copy()
        self.composite = np.empty_like(self.image)
        self.history.setdefault(key, ([], []))
        self.stroke = None
        self.refresh(None)

    def leave_sample(self) -> None:
        if self.stroke is not None:
            self._end_stroke()

    def accept(self) -> None:
        self._save_prefill()

    def _save_prefill(self) -> None:
        if self.prefill:
            h, w = self.mask.shape
            self.store.record({"sample": self.key, "op": "prefill", "rect": [0, 0, w, h],
                               "fill": int(self.params.default_fill_id),
                               "data": encode_patch(self.mask)})
            self.prefill = False

    def _commit(self, op: str, rect: Rect, before: np.ndarray, **extra: Any) -> None:
        """Journal the pixels of ``rect`` as they are now and push the change on the undo
        stack."""
        x, y, w, h = rect
        after = self.mask[y:y + h, x:x + w].copy()
        if np.array_equal(before, after):
            return
        self._save_prefill()
        self.store.record({"sample": self.key, "op": op, "rect": [x, y, w, h],
                           "fill": int(self.params.default_fill_id),
                           "data": encode_patch(after), **extra})
        undo, redo = self.history[self.key]
        undo.append((rect, before, after))
        redo.clear()

    # ------------------------------------------------------------------ events
    def on_mouse(self, event: int, x: int, y: int, flags: int, inside: bool) -> None:
        import cv2

        h, w = self.mask.shape
        x, y = min(max(x, 0), w - 1), min(max(y, 0), h - 1)
        old = self.mouse
        self.mouse = (x, y)
        if event in (cv2.EVENT_LBUTTONDOWN, cv2.EVENT_RBUTTONDOWN) and inside:
            if self.stroke is not None:
                self._end_stroke()
            erase = event == cv2.EVENT_RBUTTONDOWN or self.tool == "eraser"
            if self.tool == "fill" and event == cv2.EVENT_LBUTTONDOWN:
                self._fill(x, y)
                return
            value = int(self.params.background_id) if erase else self.labels[self.label]["id"]
            self.stroke = {"value": value, "points": [[x, y]], "rect": None,
                           "before": self.mask.copy(), "erase": erase}
            self._paint((x, y), (x, y))
        elif event == cv2.EVENT_MOUSEMOVE and self.stroke is not None:
            last = self.stroke["points"][-1]
            self.stroke["points"].append([x, y])
            self._paint((last[0], last[1]), (x, y))
        elif event in (cv2.EVENT_LBUTTONUP, cv2.EVENT_RBUTTONUP) and self.stroke is not None:
            last = self.stroke["points"][-1]
            if [x, y] != last:
                self.stroke["points"].append([x, y])
                self._paint((last[0], last[1]), (x, y))
            self._end_stroke()
        if old != self.mouse:
            self.dirty = True

    def _paint(self, p0: tuple[int, int], p1: tuple[int, int]) -> None:
        assert self.stroke is not None
        rect = paint_segment(self.mask, p0, p1, self.radius, self.stroke["value"])
        if rect is not None:
            self.stroke["rect"] = union(self.stroke["rect"], rect)
            self.refresh(rect)

    def _end_stroke(self) -> None:
        stroke, self.stroke = self.stroke, None
        if stroke is None or stroke["rect"] is None:
            return
        x, y, w, h = stroke["rect"]
        before = stroke["before"][y:y + h, x:x + w].copy()
        self._commit("erase" if stroke["erase"] else "brush", stroke["rect"], before,
                     label=stroke["value"], radius=self.radius, points=stroke["points"])

    def _fill(self, x: int, y: int) -> None:
        import cv2

        value = self.labels[self.label]["id"]
        before = self.mask.copy()
        flood = np.zeros((self.mask.shape[0] + 2, self.mask.shape[1] + 2), np.uint8)
        _, _, _, (rx, ry, rw, rh) = cv2.floodFill(self.mask, flood, (x, y), value,
                                                  flags=4 | cv2.FLOODFILL_FIXED_RANGE)
        if rw > 0 and rh > 0:
            rect = (rx, ry, rw, rh)
            self._commit("fill", rect, before[ry:ry + rh, rx:rx + rw].copy(), seed=[x, y],
                         label=value)
            self.refresh(rect)

    def _history_step(self, undo: bool) -> None:
        stacks = self.history[self.key]
        source, target = (stacks[0], stacks[1]) if undo else (stacks[1], stacks[0])
        if not source:
            self.message = "nothing to undo" if undo else "nothing to redo"
            return
        rect, before, after = source.pop()
        x, y, w, h = rect
        pixels = before if undo else after
        self.mask[y:y + h, x:x + w] = pixels
        self.store.record({"sample": self.key, "op": "undo" if undo else "redo",
                           "rect": [x, y, w, h], "fill": int(self.params.default_fill_id),
                           "data": encode_patch(pixels)})
        target.append((rect, before, after))
        self.refresh(rect)

    def on_key(self, code: int, char: str) -> None:
        if char.isdigit() and char != "0":
            index = int(char) - 1
            if index < len(self.labels):
                self.label = index
                if self.tool == "eraser":
                    self.tool = "brush"
            else:
                self.message = f"no label {char} (palette of {len(self.labels)})"
        elif char == "b":
            self.tool = "brush"
        elif char == "e":
            self.tool = "eraser"
        elif char == "f":
            self.tool = "fill"
        elif char in ("]", "+", "="):
            self.radius = min(500, self.radius + 1)
        elif char in ("[", "-", "_"):
            self.radius = max(0, self.radius - 1)
        elif char == "}":
            self.radius = min(500, self.radius + 5)
        elif char == "{":
            self.radius = max(0, self.radius - 5)
        elif char in ("o", "O"):
            step = -0.1 if char == "o" else 0.1
            self.opacity = round(min(1.0, max(0.0, self.opacity + step)), 2)
            self._luts()
            self.refresh(None)
        elif char == "u" or code == 26:
            self._history_step(undo=True)
        elif char == "r" or code == 25:
            self._history_step(undo=False)
        elif char == "z":
            self.zoom = not self.zoom
        elif char == "c" or code == KEY_DELETE:
            before = self.mask.copy()
            self.mask[...] = int(self.params.default_fill_id)
            h, w = self.mask.shape
            self._commit("clear", (0, 0, w, h), before)
            self.refresh(None)

    _full = True


def check_labels(labels: list[dict[str, Any]]) -> None:
    """Raise :class:`ConfigError` when the palette cannot be shown (no label)."""
    if not labels:
        raise ConfigError("annotator.params.labels: no label to paint with")
