"""Output consumers of the vision tasks: predicted masks, detection logs and overlays.

Metrics without a goal (never monitored) that write files when the trainer writes reports:
for the validation split at its best and last epochs, and for the final test. Their figure
(a grid of the first images) is shown in TensorBoard by the trackers. Images are numbered
in loader order (evaluation loaders are not shuffled, so image ``i`` is the ``i``-th index
of the split in ``logs/splits.json``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from thelper.metrics import Metric, Report
from thelper_vision import draw
from thelper_vision.tasks import DEFAULT_COLORS, model_output

__all__ = ["SegmentationMasks", "ImagePanels", "DetectionLogger", "DetectionOverlays"]


def _palette(task: Any) -> list[tuple[int, int, int]]:
    palette = getattr(task, "palette", None)
    return palette() if callable(palette) else list(DEFAULT_COLORS)


class SegmentationMasks(Metric):
    """Predicted and true masks of the first ``max_images`` images, as palette PNGs and
    overlays on the input images.

    Writes ``<stem>/<i>_pred.png`` and ``<stem>/<i>_true.png`` (pixel values are class
    indices, displayed in the task's colours; ignored pixels white) and ``<stem>/grid.png``:
    for each of the first ``grid_images`` images a row input | ground truth over the input |
    prediction over the input (50 % opacity, background class unpainted), with a legend of
    the class colours; the same figure goes to TensorBoard.

    Args:
        max_images: Images kept per split.
        grid_images: Images in the grid figure.
        task: The segmentation task (class names, colours, ignore index).
    """

    goal = None
    needs_inputs = True

    def __init__(self, max_images: int = 16, grid_images: int = 8, task: Any = None) -> None:
        self.max_images = int(max_images)
        self.grid_images = int(grid_images)
        self.palette = _palette(task)
        self.class_names = list(getattr(task, "class_names", None) or [])
        self.ignore_index = getattr(task, "ignore_index", None)
        self.add_state("_preds", [], "cat")
        self.add_state("_targets", [], "cat")
        self.add_state("_inputs", [], "cat")  # RGB uint8 of the first grid_images inputs
        self.add_state("_count", 0, "sum")

    def observe_inputs(self, inputs: Any) -> None:
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4:
            return
        have = sum(int(x.shape[0]) for x in self._inputs)
        n = min(inputs.shape[0], self.grid_images - have, self.max_images - self._count)
        if n > 0:
            self._inputs.append(torch.stack([draw.to_rgb_uint8(x) for x in inputs[:n]]))

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        if outputs is None or self._count >= self.max_images:
            return
        logits = model_output(outputs)
        n = min(logits.shape[0], self.max_images - self._count)
        self._preds.append(logits[:n].argmax(dim=1).to(torch.uint8))
        self._targets.append(targets[:n].clamp(0, 255).to(torch.uint8))
        self._count += n

    def _legend(self) -> list[tuple[str, Any]]:
        names = self.class_names or [str(i) for i in range(len(self.palette))]
        legend = [(name, self.palette[i % len(self.palette)]) for i, name in enumerate(names)]
        if self.ignore_index is not None:
            legend.append((f"ignored ({self.ignore_index})", (255, 255, 255)))
        return legend

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._preds:
            return None
        preds = torch.cat(self._preds).cpu()
        targets = torch.cat(self._targets).cpu()
        inputs = torch.cat(self._inputs).cpu() if self._inputs else None
        folder = out_dir / stem
        files = []
        for i in range(preds.shape[0]):
            files.append(draw.save_index_png(preds[i], self.palette, folder / f"{i:04d}_pred.png",
                                             self.ignore_index))
            files.append(draw.save_index_png(targets[i], self.palette,
                                             folder / f"{i:04d}_true.png", self.ignore_index))
        tiles = []
        shown = min(self.grid_images, preds.shape[0])
        with_inputs = inputs is not None and inputs.shape[0] >= shown \
            and inputs.shape[-2:] == preds.shape[-2:]
        for i in range(shown):
            if with_inputs:
                tiles += [inputs[i], draw.overlay_mask(inputs[i], targets[i], self.palette),
                          draw.overlay_mask(inputs[i], preds[i], self.palette)]
            else:
                tiles += [draw.colorize(targets[i], self.palette, self.ignore_index),
                          draw.colorize(preds[i], self.palette, self.ignore_index)]
        image = draw.grid(tiles, nrow=3 if with_inputs else 4)
        what = "input | true | predicted" if with_inputs else "true | predicted"
        fig = draw.figure_of(image, self.report_title(f"{stem}: {what}"), self._legend())
        files.append(draw.save_figure(fig, folder / "grid.png"))
        return Report(files, fig)


class ImagePanels(Metric):
    """Input | output | target panels of the first ``max_images`` images of an
    image-to-image task (super-resolution, autoencoding), as PNGs and in TensorBoard.

    Writes ``<stem>/<i>.png`` (the three panels side by side; a low-resolution input is
    shown upscaled with nearest-neighbour pixels to the output's size) and
    ``<stem>/grid.png``. Images are shown as RGB uint8, values in ``[0, 1]`` scaled by 255
    (others stretched to their range).

    Args:
        max_images: Images written per split.
        task: The image-to-image task (unused; accepted like every metric).
    """

    goal = None
    needs_inputs = True

    def __init__(self, max_images: int = 8, task: Any = None) -> None:
        self.max_images = int(max_images)
        self.add_state("_inputs", [], "cat")
        self.add_state("_outputs", [], "cat")
        self.add_state("_targets", [], "cat")
        self.add_state("_count", 0, "sum")

    def observe_inputs(self, inputs: Any) -> None:
        n = min(int(inputs.shape[0]), self.max_images - self._count)
        if n > 0:
            self._inputs.append(torch.stack([draw.to_rgb_uint8(x) for x in inputs[:n]]))

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        n = min(int(targets.shape[0]), self.max_images - self._count)
        if outputs is None or n <= 0:
            return
        out = model_output(outputs)
        self._outputs.append(torch.stack([draw.to_rgb_uint8(x) for x in out[:n].float()]))
        self._targets.append(torch.stack([draw.to_rgb_uint8(x) for x in targets[:n].float()]))
        self._count += n

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._outputs:
            return None
        outputs = torch.cat(self._outputs).cpu()
        targets = torch.cat(self._targets).cpu()
        inputs = torch.cat(self._inputs).cpu() if self._inputs else None
        folder = out_dir / stem
        files, rows = [], []
        for i in range(outputs.shape[0]):
            panels = [outputs[i], targets[i]]
            if inputs is not None and i < inputs.shape[0]:
                x = inputs[i]
                if x.shape[-2:] != outputs.shape[-2:]:
                    x = torch.nn.functional.interpolate(x[None].float(), outputs.shape[-2:],
                                                        mode="nearest")[0].to(torch.uint8)
                panels.insert(0, x)
            row = draw.grid(panels, nrow=len(panels))
            rows.append(row)
            files.append(draw.save_png(row, folder / f"{i:04d}.png"))
        image = draw.grid(rows, nrow=1 if len(rows) < 4 else 2)
        what = "input | output | target" if inputs is not None else "output | target"
        fig = draw.figure_of(image, self.report_title(f"{stem}: {what}"))
        files.append(draw.save_figure(fig, folder / "grid.png"))
        return Report(files, fig)


def _class_name(names: list[str], index: int) -> str:
    return names[index] if 0 <= index < len(names) else str(index)


class DetectionLogger(Metric):
    """Detections of every image of the split, as ``<stem>.json``.

    One record per image: ``{"index", "detections": [{"box": [x1, y1, x2, y2], "label",
    "class", "score"}], "targets": [{"box", "label", "class"}]}``; boxes XYXY in pixels of
    the transformed image; detections with a score below ``min_score`` are left out.

    Args:
        min_score: Lowest score written.
        task: The detection task (class names).
    """

    goal = None

    def __init__(self, min_score: float = 0.05, task: Any = None) -> None:
        self.min_score = float(min_score)
        self.class_names = list(getattr(task, "class_names", None) or [])
        self.add_state("_records", [], "cat")  # (detections, ground truth) per image

    def update(self, outputs: Any, targets: Any) -> None:
        if outputs is None:
            return
        for o, t in zip(outputs, targets, strict=True):
            self._records.append(({k: o[k].detach() for k in ("boxes", "scores", "labels")},
                                  {k: t[k].detach() for k in ("boxes", "labels")}))

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._records:
            return None
        rows = []
        for i, (o, t) in enumerate(self._records):
            o = {k: v.cpu() for k, v in o.items()}
            t = {k: v.cpu() for k, v in t.items()}
            keep = o["scores"] >= self.min_score
            rows.append({
                "index": i,
                "detections": [
                    {"box": [round(float(v), 2) for v in b], "label": int(lab),
                     "class": _class_name(self.class_names, int(lab)),
                     "score": round(float(s), 5)}
                    for b, lab, s in zip(o["boxes"][keep], o["labels"][keep], o["scores"][keep],
                                         strict=True)],
                "targets": [
                    {"box": [round(float(v), 2) for v in b], "label": int(lab),
                     "class": _class_name(self.class_names, int(lab))}
                    for b, lab in zip(t["boxes"], t["labels"], strict=True)],
            })
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}.json"
        path.write_text(json.dumps(rows, indent=1))
        return Report([path])


class DetectionOverlays(Metric):
    """The first ``max_images`` images with their boxes drawn, as PNGs and a TensorBoard grid.

    Ground-truth boxes are white (1 px), detections with a score of at least ``min_score``
    are drawn in their class colour with ``class score`` captions. Writes
    ``<stem>/<i>.png`` and ``<stem>/grid.png``. Needs targets that carry the ``image`` (the
    ``detection`` task provides it).

    Args:
        max_images: Images drawn per split.
        min_score: Lowest score drawn.
        task: The detection task (class names, colours).
    """

    goal = None

    def __init__(self, max_images: int = 8, min_score: float = 0.5, task: Any = None) -> None:
        self.max_images = int(max_images)
        self.min_score = float(min_score)
        self.class_names = list(getattr(task, "class_names", None) or [])
        self.palette = _palette(task)
        self.add_state("_items", [], "cat")  # (image, detections, ground truth) per image

    def update(self, outputs: Any, targets: Any) -> None:
        if outputs is None:
            return
        for o, t in zip(outputs, targets, strict=True):
            if len(self._items) >= self.max_images:
                return
            if "image" not in t:
                continue
            self._items.append((t["image"].detach(),
                                {k: o[k].detach() for k in ("boxes", "scores", "labels")},
                                {k: t[k].detach() for k in ("boxes", "labels")}))

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if not self._items:
            return None
        folder = out_dir / stem
        files, drawn, seen = [], [], set()
        for i, (image, o, t) in enumerate(self._items):
            keep = o["scores"] >= self.min_score
            canvas = draw.draw_boxes(image, t["boxes"], width=1, color=(255, 255, 255))
            canvas = draw.draw_boxes(canvas, o["boxes"][keep], o["labels"][keep],
                                     self.class_names, self.palette, o["scores"][keep],
                                     width=None, scaled=True)
            seen.update(int(v) for v in o["labels"][keep].tolist())
            drawn.append(canvas)
            files.append(draw.save_png(canvas, folder / f"{i:04d}.png"))
        image = draw.grid(drawn, nrow=4)
        legend = [("ground truth", (255, 255, 255))] + [
            (_class_name(self.class_names, c), self.palette[c % len(self.palette)])
            for c in sorted(seen)]
        fig = draw.figure_of(image, self.report_title(f"{stem}: white = ground truth"), legend)
        files.append(draw.save_figure(fig, folder / "grid.png"))
        return Report(files, fig)
