"""Redraw latency of the segmentation annotator after a brush stroke (issue 20).

A 2000x2000 RGB image (scikit-image's ``hubble_deep_field``, resized) with a mask overlay
(a third of the pixels labelled, from a threshold of the image) is shown by the real
:class:`thelper_gui.segmentation.SegmentationAnnotator` in an OpenCV window on a private
Xvfb (``Xvfb :N -screen 0 2200x2200x24``, started and stopped by its PID). Each round
sends the annotator the mouse events of one brush stroke (press, move 60 px, release,
radius 10, at a new place each time: the stroke is painted, journaled and fsynced) and
then times:

* ``redraw``: :meth:`~thelper_gui.window.WindowAnnotator.redraw` (compose the changed
  rectangle, draw the cursor and zoom tooltip, ``cv2.imshow``);
* ``paint``: ``cv2.waitKey(1)``, where Qt paints the window;
* ``frame``: both, what the user waits for between the stroke and the picture;
* ``stroke``: handling the stroke's events (paint the mask, journal entry + fsync).

Target: median ``frame`` <= 16 ms (60 frames per second).

Usage::

    uv run python benchmarks/bench_gui.py            # 200 strokes
    uv run python benchmarks/bench_gui.py --strokes 50
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

SIZE = 2000
TARGET_MS = 16.0


def start_xvfb(size: str) -> tuple[subprocess.Popen, str]:
    """A private X server on the first free display from :90; returns it and DISPLAY."""
    for num in range(90, 130):
        if Path(f"/tmp/.X11-unix/X{num}").exists() or Path(f"/tmp/.X{num}-lock").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", size, "-nolisten", "tcp",
                                 "-noreset"],  # no reset (and refused windows) between clients
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if Path(f"/tmp/.X11-unix/X{num}").exists():
                return proc, f":{num}"
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    raise RuntimeError("no free X display between :90 and :129")


def run(strokes: int) -> dict[str, list[float]]:
    import cv2
    import numpy as np
    import torch
    from skimage import data

    from thelper_gui.params import SegmentationAnnotatorParams
    from thelper_gui.samples import SampleSource
    from thelper_gui.segmentation import SegmentationAnnotator
    from thelper_gui.store import open_store

    rgb = cv2.resize(data.hubble_deep_field(), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    image = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
    labels = [{"id": 0, "name": "background", "color": [0, 0, 0]},
              {"id": 1, "name": "galaxy", "color": [255, 170, 0]},
              {"id": 2, "name": "star", "color": [0, 0, 255]}]
    params = SegmentationAnnotatorParams(labels=None, default_brush_radius=10,
                                         window_name="bench-gui")
    source = SampleSource({"hubble": [{"input": image}]}, SimpleNamespace(input_key="input"))
    with tempfile.TemporaryDirectory(prefix="bench-gui-") as tmp:
        store = open_store(Path(tmp), "segmentation", labels, "bench", 0.5)
        annot = SegmentationAnnotator(params, source, store)
        cv2.namedWindow(annot.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        annot.goto(0)
        grey = rgb.mean(axis=2)
        annot.mask[...] = (grey > np.percentile(grey, 67)).astype(np.uint8)  # the overlay
        annot.refresh(None)
        annot.redraw()
        cv2.waitKey(1)
        annot.label = 2
        rng = np.random.default_rng(0)
        out: dict[str, list[float]] = {"stroke": [], "redraw": [], "paint": [], "frame": []}
        for _ in range(strokes):
            x, y = (int(v) for v in rng.integers(50, SIZE - 110, size=2))
            t0 = time.perf_counter()
            annot.on_mouse(cv2.EVENT_LBUTTONDOWN, x, y, 0, inside=True)
            annot.on_mouse(cv2.EVENT_MOUSEMOVE, x + 30, y + 20, 0, inside=True)
            annot.on_mouse(cv2.EVENT_LBUTTONUP, x + 60, y + 40, 0, inside=True)
            t1 = time.perf_counter()
            annot.redraw()
            t2 = time.perf_counter()
            cv2.waitKey(1)
            t3 = time.perf_counter()
            out["stroke"].append(t1 - t0)
            out["redraw"].append(t2 - t1)
            out["paint"].append(t3 - t2)
            out["frame"].append(t3 - t1)
        cv2.destroyAllWindows()
        cv2.waitKey(1)
        store.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strokes", type=int, default=200)
    args = parser.parse_args()
    xvfb, display = start_xvfb(f"{SIZE + 200}x{SIZE + 200}x24")
    os.environ["DISPLAY"] = display
    os.environ.pop("QT_QPA_PLATFORM", None)
    try:
        times = run(args.strokes)
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=30)
    print(f"segmentation annotator, {SIZE}x{SIZE} RGB image + mask overlay, {args.strokes} "
          f"brush strokes (radius 10, 60 px), Xvfb {display} {SIZE + 200}x{SIZE + 200}x24")
    print(f"python {platform.python_version()}, {platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"{'step':<8} {'median ms':>10} {'p90 ms':>8} {'max ms':>8}")
    for name, values in times.items():
        ms = sorted(v * 1000 for v in values)
        print(f"{name:<8} {statistics.median(ms):>10.2f} {ms[int(0.9 * (len(ms) - 1))]:>8.2f} "
              f"{ms[-1]:>8.2f}")
    median = statistics.median(times["frame"]) * 1000
    verdict = "meets" if median <= TARGET_MS else "misses"
    print(f"frame median {median:.2f} ms {verdict} the {TARGET_MS:.0f} ms target "
          f"({1000 / median:.0f} frames per second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
