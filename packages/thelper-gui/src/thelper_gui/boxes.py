"""The bounding-box annotator: drag to draw a box, click to select one, drag it to move it,
drag a corner of the selected box to resize it, delete it, change its class.

Boxes are ``[x, y, w, h]`` in image pixels (COCO's convention, integers: the window shows
the image unscaled), with a class index. Each change journals the image's whole box list
(:class:`~thelper_gui.store.BoxStore`), fsynced before the window redraws; the store
writes ``boxes.json`` (COCO JSON) atomically.
"""

from __future__ import annotations

from typing import Any

from thelper_gui.store import BoxStore
from thelper_gui.window import KEY_DELETE, KEY_TAB, WindowAnnotator, put_text

__all__ = ["BoxAnnotator", "box_from_points"]

Box = list[int]  # x, y, w, h


def box_from_points(p0: tuple[int, int], p1: tuple[int, int]) -> Box:
    """The box ``[x, y, w, h]`` spanned by two opposite corners."""
    x0, x1 = sorted((int(p0[0]), int(p1[0])))
    y0, y1 = sorted((int(p0[1]), int(p1[1])))
    return [x0, y0, x1 - x0, y1 - y0]


def corners(box: Box) -> list[tuple[int, int]]:
    """The four corners of a box: top-left, top-right, bottom-right, bottom-left."""
    x, y, w, h = box
    return [(x, y), (x + w, y), (x + w, y + h), (x, y + h)]


class BoxAnnotator(WindowAnnotator):
    """Draw and edit the boxes of each image (see the module docstring)."""

    kind = "boxes"
    keys_help = [
        ("left drag", "draw a box (outside the boxes)"),
        ("click a box", "select it (tab: the next one)"),
        ("drag a box", "move it"),
        ("drag a corner", "resize the selected box"),
        ("1-9, 0", "class of new boxes and of the selected box"),
        ("d / delete", "delete the selected box"),
    ]

    def __init__(self, params: Any, source: Any, store: BoxStore, **kwargs: Any) -> None:
        super().__init__(params, source, store, **kwargs)
        from thelper_vision.tasks import class_palette

        self.store: BoxStore = store
        self.classes = [str(c) for c in store.meta["labels"]]
        colors = dict(getattr(source.task, "color_map", None) or {})
        self.colors = [(b, g, r) for r, g, b in class_palette(self.classes, colors, offset=1)]
        self.label = 0
        self.boxes: list[dict[str, Any]] = []
        self.selected: int | None = None
        self.drag: dict[str, Any] | None = None
        self.prefill = False
        self.mouse: tuple[int, int] = (0, 0)

    # ----------------------------------------------------------------- samples
    def load_sample(self, key: str, sample: dict[str, Any]) -> None:
        prediction = self.predictions.get(key)
        self.prefill = prediction is not None and key not in self.store.boxes
        source = prediction if self.prefill else self.store.boxes.get(key, [])
        self.boxes = [{"bbox": [int(round(v)) for v in b["bbox"]], "label": int(b["label"])}
                      for b in source]
        self.selected = None
        self.drag = None

    def leave_sample(self) -> None:
        if self.drag is not None:
            self._end_drag(*self.mouse)

    def accept(self) -> None:
        if self.key not in self.store.boxes or self.prefill:
            self._commit()  # a pre-fill as is, or "checked: no object" for an empty list

    def _commit(self) -> None:
        self.store.record({"sample": self.key, "op": "boxes",
                           "boxes": [{"bbox": list(b["bbox"]), "label": b["label"]}
                                     for b in self.boxes]})
        self.prefill = False

    # ----------------------------------------------------------------- drawing
    def render(self) -> None:
        import cv2

        h, w = self.image.shape[:2]
        body = self.frame[:self.frame.shape[0] - self.bar]
        body[...] = 0
        body[:h, :w] = self.image
        lw = int(self.params.line_width)
        for i, box in enumerate(self.boxes):
            x, y, bw, bh = box["bbox"]
            color = self.colors[box["label"] % len(self.colors)]
            chosen = i == self.selected
            cv2.rectangle(body, (x, y), (x + bw, y + bh), color, lw + (1 if chosen else 0))
            put_text(body, self.classes[box["label"]], (x + 2, max(12, y - 4)), 0.4, color)
            if chosen:
                s = int(self.params.handle_size) // 2
                for cx, cy in corners(box["bbox"]):
                    cv2.rectangle(body, (cx - s, cy - s), (cx + s, cy + s), (255, 255, 255), -1)
        if self.drag is not None and self.drag["mode"] == "draw":
            x, y, bw, bh = box_from_points(self.drag["start"], self.mouse)
            cv2.rectangle(body, (x, y), (x + bw, y + bh), self.colors[self.label % len(
                self.colors)], 1)

    def status(self) -> str:
        text = f"class {self.label + 1}:{self.classes[self.label]} | {len(self.boxes)} boxes"
        if self.selected is not None:
            x, y, w, h = self.boxes[self.selected]["bbox"]
            text += f" | selected {self.selected + 1}: {w}x{h} at {x},{y}"
        if self.prefill:
            text += " | model pre-fill (enter or any edit saves it)"
        elif self.key not in self.store.boxes:
            text += " | not checked (enter: no object)"
        return text + " | h: help"

    # ------------------------------------------------------------------ events
    def _hit(self, x: int, y: int) -> int | None:
        """The box under ``(x, y)``: the selected one first, then the last drawn."""
        order = list(range(len(self.boxes) - 1, -1, -1))
        if self.selected is not None:
            order.remove(self.selected)
            order.insert(0, self.selected)
        for i in order:
            bx, by, bw, bh = self.boxes[i]["bbox"]
            if bx <= x <= bx + bw and by <= y <= by + bh:
                return i
        return None

    def _clamp(self, x: int, y: int) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return min(max(x, 0), w - 1), min(max(y, 0), h - 1)

    def on_mouse(self, event: int, x: int, y: int, flags: int, inside: bool) -> None:
        import cv2

        x, y = self._clamp(x, y)
        self.mouse = (x, y)
        if event == cv2.EVENT_LBUTTONDOWN and inside:
            self._start_drag(x, y)
        elif event == cv2.EVENT_MOUSEMOVE and self.drag is not None:
            self._update_drag(x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.drag is not None:
            self._end_drag(x, y)
        else:
            return
        self.dirty = True

    def _start_drag(self, x: int, y: int) -> None:
        s = int(self.params.handle_size)
        if self.selected is not None:
            box = self.boxes[self.selected]["bbox"]
            for k, (cx, cy) in enumerate(corners(box)):
                if abs(cx - x) <= s and abs(cy - y) <= s:
                    self.drag = {"mode": "resize", "fixed": corners(box)[(k + 2) % 4],
                                 "orig": list(box)}
                    return
        hit = self._hit(x, y)
        if hit is not None:
            self.selected = hit
            self.drag = {"mode": "move", "start": (x, y),
                         "orig": list(self.boxes[hit]["bbox"])}
        else:
            self.selected = None
            self.drag = {"mode": "draw", "start": (x, y)}

    def _update_drag(self, x: int, y: int) -> None:
        drag = self.drag
        assert drag is not None
        if drag["mode"] == "move":
            h, w = self.image.shape[:2]
            ox, oy, bw, bh = drag["orig"]
            nx = min(max(ox + x - drag["start"][0], 0), w - 1 - bw)
            ny = min(max(oy + y - drag["start"][1], 0), h - 1 - bh)
            self.boxes[self.selected]["bbox"] = [max(0, nx), max(0, ny), bw, bh]
        elif drag["mode"] == "resize":
            self.boxes[self.selected]["bbox"] = box_from_points(drag["fixed"], (x, y))

    def _end_drag(self, x: int, y: int) -> None:
        drag, self.drag = self.drag, None
        if drag is None:
            return
        if drag["mode"] == "draw":
            box = box_from_points(drag["start"], (x, y))
            if min(box[2], box[3]) >= int(self.params.min_box_size):
                self.boxes.append({"bbox": box, "label": self.label})
                self.selected = len(self.boxes) - 1
                self._commit()
            return
        self.drag = drag
        self._update_drag(x, y)
        self.drag = None
        box = self.boxes[self.selected]["bbox"]
        if min(box[2], box[3]) < int(self.params.min_box_size):
            self.boxes[self.selected]["bbox"] = drag["orig"]  # resized to nothing: undone
            self.message = "box too small"
        elif box != drag["orig"]:
            self._commit()

    def on_key(self, code: int, char: str) -> None:
        if char.isdigit():
            index = (int(char) - 1) % 10
            if index >= len(self.classes):
                self.message = f"no class {char} ({len(self.classes)} classes)"
                return
            self.label = index
            if self.selected is not None and self.boxes[self.selected]["label"] != index:
                self.boxes[self.selected]["label"] = index
                self._commit()
        elif char == "d" or code == KEY_DELETE:
            if self.selected is not None:
                del self.boxes[self.selected]
                self.selected = None
                self._commit()
        elif code == KEY_TAB:
            if self.boxes:
                self.selected = 0 if self.selected is None else (self.selected + 1) % len(
                    self.boxes)

