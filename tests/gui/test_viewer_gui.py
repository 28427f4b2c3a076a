"""thelper viz CONFIG --window: vision's viz finds thelper-gui's viewer component; driven
with xdotool under Xvfb on tiles of scikit-image's coins with threshold masks."""

from __future__ import annotations

import os
import subprocess

import cv2
import numpy as np
import pytest
import yaml

from tests.gui.conftest import session_config, write_png
from tests.gui.xdo import THELPER, Window, finish, need_display, start, wait_for


@pytest.fixture
def viz_config(tmp_path):
    """Four 64x64 tiles of coins with masks (coin where brighter than 110), batches of 2."""
    from skimage import data

    coins = data.coins()
    for i, (y, x) in enumerate([(40, 40), (40, 200), (180, 40), (180, 200)]):
        tile = np.ascontiguousarray(coins[y:y + 64, x:x + 64])
        write_png(tmp_path / "seg" / "images" / f"tile{i}.png", tile)
        write_png(tmp_path / "seg" / "masks" / f"tile{i}.png", (tile > 110).astype(np.uint8))
    cfg = session_config(
        "coins-viz",
        {"tiles": {"type": "segmentation_folder", "params": {
            "images": str(tmp_path / "seg" / "images"), "masks": str(tmp_path / "seg" / "masks"),
            "class_names": ["background", "coin"], "mode": "L",
            "color_map": {"coin": [255, 170, 0]}}}},
        {}, {"type": "unet", "params": {"in_channels": 1, "base_channels": 4, "depth": 2}},
        {"miou": {"type": "miou"}}, "miou")
    del cfg["annotator"]
    path = tmp_path / "viz.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _run(args, cwd, drop=()):
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["COLUMNS"] = "250"
    return subprocess.run([str(THELPER), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, check=False)


def test_window_without_a_viewer_plugin(viz_config, tmp_path):
    result = _run(["-p", "no:gui", "viz", str(viz_config), "--window"], tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: thelper viz --window needs a viewer component and none is registered; "
        "install one with 'pip install thelper-gui' (or drop --window to write PNG files)"]
    assert "Traceback" not in result.stderr


def test_window_without_a_display(viz_config, tmp_path):
    result = _run(["viz", str(viz_config), "--window"], tmp_path,
                  drop=("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"))
    assert result.returncode == 2, result.stdout + result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: thelper viz --window opens a window but DISPLAY is not set; run it in a "
        "desktop session, over 'ssh -X', or under a virtual display ('xvfb-run -a thelper "
        "...')"]
    assert "Traceback" not in result.stderr


def _coloured(frame: np.ndarray) -> int:
    """Pixels of the two tiles (256x256 each) that are not grey."""
    tiles = frame[:256, :512].astype(int)
    return int(((tiles[..., 0] != tiles[..., 1]) | (tiles[..., 1] != tiles[..., 2])).sum())


def test_window_steps_through_batches_and_toggles_masks(viz_config, tmp_path):
    need_display()
    shot = tmp_path / "shot.png"
    proc = start(["viz", str(viz_config), "--window", "--limit", "2"], tmp_path,
                 env={"THELPER_GUI_SCREENSHOT": str(shot)})
    win = Window("thelper-viz", proc, size=(512, 256 + 18 + 22))
    frames = []

    def shown(change: str) -> np.ndarray:
        """The next frame the window shows (the screenshot file is replaced per frame)."""
        def new():
            frame = cv2.imread(str(shot)) if shot.is_file() else None
            if frame is None or any(np.array_equal(frame, f) for f in frames[-1:]):
                return None
            return (frame,)
        (frame,) = wait_for(new, change, proc=proc)
        frames.append(frame)
        return frame

    first = shown("the first batch")
    assert _coloured(first) > 1000  # coins painted over the grey tiles
    win.key("m")
    plain = shown("masks off")
    assert _coloured(plain) == 0
    win.key("n")
    second = shown("the next batch, masks still off")
    assert _coloured(second) == 0 and not np.array_equal(second[:256], plain[:256])
    win.key("p")
    back = shown("the first batch again")
    np.testing.assert_array_equal(back[:256], plain[:256])  # the same samples
    win.key("m")
    again = shown("masks on again")
    np.testing.assert_array_equal(again[:256], first[:256])
    win.key("q")
    finish(proc)
