"""The bounding-box annotator driven with real mouse drags and key presses (xdotool) under
Xvfb, on scikit-image's coins; the saved COCO JSON checked exactly."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.gui.conftest import session_config
from tests.gui.xdo import Journaled, Window, finish, journal_lines, need_display, start, wait_for


@pytest.fixture
def _display() -> None:
    need_display()


@pytest.fixture
def box_config(tmp_path, coins_images):
    cfg = session_config(
        "coins-boxes",
        {"coins": {"type": "image_files", "params": {"root": str(coins_images), "mode": "L"},
                   "task": {"type": "detection",
                            "params": {"class_names": ["coin", "dime", "other"]}}}},
        {"type": "boxes", "params": {"window_name": "annot-coins-boxes", "save_interval": 3600}},
        {"type": "small_fasterrcnn", "params": {}},
        {"map": {"type": "mean_average_precision"}}, "map")
    path = tmp_path / "boxes.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.usefixtures("_display")
def test_draw_select_move_resize_class_delete(box_config, coins_images, tmp_path):
    out = tmp_path / "ann"
    session = out / "coins-boxes"
    journal = session / "journal.jsonl"
    proc = start(["annot", str(box_config), "--save-dir", str(out)], tmp_path)
    win = Window("annot-coins-boxes", proc, size=(384, 303 + 22))
    handled = Journaled(journal, proc)

    handled(win.drag, [(20, 30), (120, 100)])  # A: coin [20, 30, 100, 70], selected
    win.click(300, 20)  # a click outside the boxes: nothing selected
    win.key("2")  # class of new boxes: dime
    handled(win.drag, [(150, 40), (250, 200)])  # B: dime [150, 40, 100, 160], selected
    handled(win.drag, [(250, 200), (270, 180)])  # B's bottom-right corner dragged
    handled(win.drag, [(50, 50), (60, 45)])  # A selected and moved by (+10, -5)
    handled(win.key, "3")  # A: other
    win.click(300, 280)  # nothing selected
    handled(win.drag, [(300, 220), (350, 290)])  # C: other, selected
    handled(win.key, "d")  # C deleted
    win.key("n")  # coins_left.png
    handled(win.key, "Return")  # checked, no object; then coins_right.png
    win.key("q")
    finish(proc)

    coco = json.loads((session / "boxes.json").read_text())
    assert coco == {
        "images": [
            {"id": 1, "file_name": str(coins_images / "coins.png"), "height": 303,
             "width": 384, "thelper_sample": "coins/0"},
            {"id": 2, "file_name": str(coins_images / "coins_left.png"), "height": 303,
             "width": 192, "thelper_sample": "coins/1"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [30, 25, 100, 70],
             "area": 7000, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [150, 40, 120, 140],
             "area": 16800, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "coin"}, {"id": 2, "name": "dime"},
                       {"id": 3, "name": "other"}],
    }
    assert journal.read_bytes() == b""
    assert json.loads((session / "state.json").read_text())["key"] == "coins/2"

    from thelper_gui.datasets import annotations

    ds = annotations(str(session), mode="L")
    assert ds.task.class_names == ["coin", "dime", "other"]
    first, second = ds[0], ds[1]
    assert first["input"]["boxes"].tolist() == [[30, 25, 130, 95], [150, 40, 270, 180]]
    assert first["input"]["labels"].tolist() == [2, 1]
    assert tuple(first["input"]["image"].shape) == (1, 303, 384)
    assert first["path"] == str(coins_images / "coins.png")
    assert second["input"]["boxes"].shape[0] == 0

    # a new run shows the boxes saved: moving B again rewrites it, the rest is kept
    proc = start(["annot", str(box_config), "--save-dir", str(out)], tmp_path)
    win = Window("annot-coins-boxes", proc, size=(320, 303 + 22))  # coins_right, resumed
    win.key("p", "p")  # back to coins.png
    wait_for(lambda: json.loads((session / "state.json").read_text())["key"] == "coins/0",
             "coins.png shown", proc=proc)
    win.drag([(200, 100), (200, 110)])  # B down by 10
    wait_for(lambda: journal_lines(journal) >= 1, "the move in the journal", proc=proc)
    win.key("q")
    finish(proc)
    coco = json.loads((session / "boxes.json").read_text())
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in coco["annotations"]] == [
        (1, 3, [30, 25, 100, 70]), (1, 2, [150, 50, 120, 140])]
