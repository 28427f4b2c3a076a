"""Take the screenshots of docs/gui.md: each annotator and the viewer, driven with xdotool
under a private Xvfb, the frame each window shows saved by ``THELPER_GUI_SCREENSHOT``.

Run from the repository root (starts and stops its own Xvfb, by PID)::

    uv run python -m tests.gui.screenshots            # writes docs/images/gui-*.png
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from tests.gui.conftest import session_config, write_png

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "docs" / "images"


def start_xvfb(size: str = "1280x1024x24") -> tuple[subprocess.Popen, str]:
    """A private X server (the first free display from :90); returns it and its DISPLAY."""
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


def _seg_config(tmp: Path) -> Path:
    from skimage import data

    write_png(tmp / "coins" / "coins.png", data.coins())
    cfg = session_config(
        "coins-annot",
        {"coins": {"type": "image_files", "params": {"root": str(tmp / "coins"), "mode": "L"},
                   "task": {"type": "segmentation",
                            "params": {"class_names": ["background", "coin", "edge"]}}}},
        {"type": "segmentation", "params": {
            "window_name": "annot-seg", "default_brush_radius": 6, "save_interval": 3600,
            "labels": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                       {"id": 1, "name": "coin", "color": [255, 170, 0]},
                       {"id": 2, "name": "edge", "color": [0, 0, 255]}]}},
        {"type": "unet", "params": {"in_channels": 1}}, {"miou": {"type": "miou"}}, "miou")
    path = tmp / "seg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cls_config(tmp: Path) -> Path:
    import cv2
    from skimage import data

    write_png(tmp / "photos" / "chelsea.png", cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    cfg = session_config(
        "photos-annot",
        {"photos": {"type": "image_files", "params": {"root": str(tmp / "photos")},
                    "task": {"type": "classification", "params": {
                        "class_names": ["cat", "flower", "landscape", "drink"]}}}},
        {"type": "classification", "params": {"window_name": "annot-cls", "save_interval": 3600}},
        {"type": "simple_cnn", "params": {"in_channels": 3}},
        {"accuracy": {"type": "accuracy"}}, "accuracy")
    path = tmp / "cls.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _box_config(tmp: Path) -> Path:
    cfg = session_config(
        "coins-boxes",
        {"coins": {"type": "image_files", "params": {"root": str(tmp / "coins"), "mode": "L"},
                   "task": {"type": "detection",
                            "params": {"class_names": ["coin", "dime", "other"]}}}},
        {"type": "boxes", "params": {"window_name": "annot-boxes", "save_interval": 3600}},
        {"type": "small_fasterrcnn", "params": {}},
        {"map": {"type": "mean_average_precision"}}, "map")
    path = tmp / "boxes.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _viz_config(tmp: Path) -> Path:
    from skimage import data

    coins = data.coins()
    for i, (y, x) in enumerate([(30, 30), (30, 150), (160, 30), (160, 150)]):
        tile = np.ascontiguousarray(coins[y:y + 96, x:x + 96])
        write_png(tmp / "seg" / "images" / f"tile{i}.png", tile)
        write_png(tmp / "seg" / "masks" / f"tile{i}.png", (tile > 110).astype(np.uint8))
    cfg = session_config(
        "coins-viz",
        {"tiles": {"type": "segmentation_folder", "params": {
            "images": str(tmp / "seg" / "images"), "masks": str(tmp / "seg" / "masks"),
            "class_names": ["background", "coin"], "mode": "L",
            "color_map": {"coin": [255, 170, 0]}}}},
        {}, {"type": "unet", "params": {"in_channels": 1}}, {"miou": {"type": "miou"}}, "miou",
        batch_size=4)
    del cfg["annotator"]
    path = tmp / "viz.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def main() -> int:
    from tests.gui import xdo

    xvfb, display = start_xvfb()
    os.environ["DISPLAY"] = display
    tmp = Path(tempfile.mkdtemp(prefix="thelper-gui-shots-"))
    shot = tmp / "shot.png"
    env = {"THELPER_GUI_SCREENSHOT": str(shot)}

    def take(args: list[str], title: str, actions, name: str, session: str = "") -> None:
        shot.unlink(missing_ok=True)
        proc = xdo.start(args, tmp, env)
        win = xdo.Window(title, proc)
        journal = tmp / "ann" / session / "journal.jsonl"
        entries = [0]

        def handled(action, *a):
            """Do ``action`` and wait for its journal entry (the journal is folded at exit
            only: save_interval 3600)."""
            action(*a)
            entries[0] += 1
            xdo.wait_for(lambda: xdo.journal_lines(journal) >= entries[0], name, proc=proc)

        actions(win, handled)
        xdo.wait_for(shot.exists, name, proc=proc)
        time.sleep(1.0)  # not a test: let the last events' frame land before copying it
        shutil.copyfile(shot, OUT / f"gui-{name}.png")
        win.key("q")
        xdo.finish(proc)
        print(f"wrote docs/images/gui-{name}.png")

    try:
        OUT.mkdir(parents=True, exist_ok=True)
        seg = _seg_config(tmp)

        def paint(win, handled):
            win.key("2")
            handled(win.drag, [(20, 40), (60, 35)])
            handled(win.drag, [(60, 35), (90, 50)])
            win.key("3")
            handled(win.drag, [(30, 150), (80, 170)])
            # the brush outline at the pointer, the zoom tooltip on the other side
            xdo.xdotool("mousemove", "--window", win.wid, "100", "110")

        take(["annot", str(seg), "-o", str(tmp / "ann")], "annot-seg", paint, "segmentation",
             "coins-annot")
        take(["annot", str(seg), "-o", str(tmp / "ann")], "annot-seg",
             lambda win, handled: win.key("h"), "segmentation-help", "coins-annot")
        cls = _cls_config(tmp)
        take(["annot", str(cls), "-o", str(tmp / "ann")], "annot-cls",
             lambda win, handled: None, "classification", "photos-annot")
        boxes = _box_config(tmp)

        def draw(win, handled):
            handled(win.drag, [(45, 15), (105, 75)])
            win.click(200, 80)  # nothing selected
            win.key("2")
            handled(win.drag, [(225, 100), (285, 160)])
            win.click(60, 30)  # the first box selected

        take(["annot", str(boxes), "-o", str(tmp / "ann")], "annot-boxes", draw, "boxes",
             "coins-boxes")
        viz = _viz_config(tmp)
        take(["viz", str(viz), "--window"], "thelper-viz", lambda win, handled: None, "viewer")
    finally:
        xvfb.terminate()
        xvfb.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
