"""The classification annotator: one class per image, picked with a number key or a click in
the class list; images can be skipped (saved with an empty label) and revisited.

Saved as ``labels.csv`` (``sample, dataset, index, path, label``) through
:class:`~thelper_gui.store.LabelStore`: every pick is journaled and fsynced before the window
redraws.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from thelper.exceptions import ConfigError
from thelper_gui.store import LabelStore
from thelper_gui.window import KEY_DELETE, WindowAnnotator, put_text

__all__ = ["ClassificationAnnotator", "resolve_classes", "ROW"]

#: Height in pixels of a row of the class list
ROW = 24


def resolve_classes(classes: Sequence[str] | None, task: Any) -> list[str]:
    """The class names to pick from: the configured ones, else the task's.

    Raises:
        ConfigError: Neither gives a class.
    """
    if classes:
        return [str(c) for c in classes]
    names = [str(n) for n in (getattr(task, "class_names", None) or [])]
    if not names:
        raise ConfigError("annotator.params.classes: the task has no class names; list the "
                          "classes, e.g. classes: [cat, dog]")
    return names


def scale_for(h: int, w: int, smallest: int, largest: int) -> float:
    """Display scale of an ``h x w`` image: down to ``largest`` pixels on its longest side,
    or up by a whole factor when it is shorter than ``smallest``."""
    side = max(h, w)
    if side > largest:
        return largest / side
    if side < smallest:
        return float(max(1, smallest // side))
    return 1.0


class ClassificationAnnotator(WindowAnnotator):
    """Pick a class per image (see the module docstring).

    The window shows the image (scaled to fit ``max_display_size``) with the class list to
    its right: ``1 cat``, ``2 dog``, ...; the saved class is highlighted, and a model
    pre-fill (``--from``) is marked with its probability.
    """

    kind = "classification"
    keys_help = [
        ("1-9, 0", "pick class 1-9, 10 (then the next image)"),
        ("click", "pick the class clicked in the list"),
        ("s", "skip the image (saved with an empty label)"),
        ("x / delete", "remove the image's label"),
    ]

    def __init__(self, params: Any, source: Any, store: LabelStore, **kwargs: Any) -> None:
        super().__init__(params, source, store, **kwargs)
        self.store: LabelStore = store
        self.classes = [str(c) for c in store.meta["labels"]]
        self.panel_x = 0

    # ----------------------------------------------------------------- layout
    def display_image(self, image: np.ndarray) -> np.ndarray:
        import cv2

        h, w = image.shape[:2]
        scale = scale_for(h, w, int(self.params.min_display_size),
                          int(self.params.max_display_size))
        if scale == 1.0:
            return image
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST
        return cv2.resize(image, size, interpolation=interpolation)

    def frame_size(self, image: np.ndarray) -> tuple[int, int]:
        h, w = image.shape[:2]
        self.panel_x = w
        rows = ROW * (len(self.classes) + 1) + 8
        return max(h, rows) + self.bar, w + int(self.params.list_width)

    def row_at(self, x: int, y: int) -> int | None:
        """Index of the class whose list row holds the window point ``(x, y)``."""
        if x < self.panel_x or y < ROW + 4:
            return None
        index = (y - ROW - 4) // ROW
        return index if 0 <= index < len(self.classes) else None

    # ----------------------------------------------------------------- drawing
    def render(self) -> None:
        import cv2

        h, w = self.image.shape[:2]
        body = self.frame[:self.frame.shape[0] - self.bar]
        body[...] = (30, 30, 30)
        body[:h, :w] = self.image
        saved = self.store.labels.get(self.key, "-")
        predicted = self.predictions.get(self.key)
        x0 = self.panel_x + 8
        put_text(body, "classes", (x0, ROW - 6), 0.5, (120, 220, 255))
        for i, name in enumerate(self.classes):
            top = ROW + 4 + i * ROW
            if name == saved:
                cv2.rectangle(body, (self.panel_x + 2, top), (body.shape[1] - 3, top + ROW - 3),
                              (0, 160, 0), -1)
            key = str(i + 1) if i < 9 else ("0" if i == 9 else " ")
            text = f"{key}  {name}"
            if predicted is not None:
                p = predicted[1].get(name)
                if p is not None:
                    text += f"  {p:.2f}"
            put_text(body, text, (x0, top + ROW - 8), 0.45,
                     (255, 255, 255) if name != predicted_name(predicted) else (120, 220, 255))

    def status(self) -> str:
        if self.key not in self.store.labels:
            state = "not labelled"
            name = predicted_name(self.predictions.get(self.key))
            if name is not None:
                state += f" | model: {name} (enter accepts)"
        else:
            label = self.store.labels[self.key]
            state = f"label: {label}" if label is not None else "skipped"
        return state + " | h: help"

    # ----------------------------------------------------------------- samples
    def load_sample(self, key: str, sample: dict[str, Any]) -> None:
        self.dirty = True

    def accept(self) -> None:
        name = predicted_name(self.predictions.get(self.key))
        if self.key not in self.store.labels and name is not None:
            self.store.record({"sample": self.key, "op": "label", "label": name})

    def pick(self, label: str | None) -> None:
        """Save ``label`` for the image shown (``None``: skipped), then go to the next one
        when ``advance`` is set."""
        self.store.record({"sample": self.key, "op": "label", "label": label})
        if self.params.advance:
            self.move(1)

    # ------------------------------------------------------------------ events
    def on_key(self, code: int, char: str) -> None:
        if char.isdigit():
            index = (int(char) - 1) % 10
            if index < len(self.classes):
                self.pick(self.classes[index])
            else:
                self.message = f"no class {char} ({len(self.classes)} classes)"
        elif char == "s":
            self.pick(None)
        elif char == "x" or code == KEY_DELETE:
            if self.key in self.store.labels:
                self.store.record({"sample": self.key, "op": "clear"})

    def on_mouse(self, event: int, x: int, y: int, flags: int, inside: bool) -> None:
        import cv2

        if event == cv2.EVENT_LBUTTONDOWN:
            index = self.row_at(x, y)
            if index is not None:
                self.pick(self.classes[index])
                self.dirty = True


def predicted_name(prediction: Any) -> str | None:
    """The class a ``--from`` prediction ``(name, probabilities)`` picks, if any."""
    return prediction[0] if prediction is not None else None
