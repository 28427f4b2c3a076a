"""The classification annotator driven with real key presses and clicks (xdotool) under
Xvfb, on scikit-image's and scikit-learn's photos; the saved CSV checked byte for byte."""

from __future__ import annotations

import json

import pytest

from tests.gui.xdo import Journaled, Window, finish, journal_lines, need_display, start, wait_for
from thelper_gui.classification import ROW


@pytest.fixture
def _display() -> None:
    need_display()


# max_display_size 320: chelsea 451x300 -> 320x213 (227 rows), china and flower 640x427 ->
# 320x214, coffee 600x400 -> 320x213; the class list is 220 px wide right of the image
SIZE = {"chelsea": (540, 213 + 22), "coffee": (540, 213 + 22), "china": (540, 214 + 22)}


@pytest.mark.usefixtures("_display")
def test_pick_skip_back_clear_and_resume(cls_config, photo_images, tmp_path):
    config = cls_config({"max_display_size": 320, "save_interval": 3600})
    out = tmp_path / "ann"
    session = out / "photos-annot"
    journal = session / "journal.jsonl"
    proc = start(["annot", str(config), "--save-dir", str(out)], tmp_path)
    win = Window("annot-photos-annot", proc, size=(540, 213 + 22))  # chelsea, scaled
    handled = Journaled(journal, proc)

    handled(win.key, "1")  # chelsea: cat, then china
    handled(win.key, "s")  # china: skipped, then coffee
    # coffee: a click on the 4th row of the class list ("drink"), then flower
    handled(win.click, 320 + 60, ROW + 4 + 3 * ROW + ROW // 2)
    handled(win.key, "3")  # flower: landscape (the last image: it stays)
    handled(win.key, "2")  # flower: corrected to flower
    win.key("p")  # back to coffee
    handled(win.key, "x")  # its label removed
    win.key("q")
    finish(proc)

    rows = [
        "sample,dataset,index,path,label",
        f"photos/0,photos,0,{photo_images / 'chelsea.png'},cat",
        f"photos/1,photos,1,{photo_images / 'china.png'},",
        f"photos/3,photos,3,{photo_images / 'flower.png'},flower",
    ]
    assert (session / "labels.csv").read_text() == "\n".join(rows) + "\n"
    assert journal.read_bytes() == b""
    meta = json.loads((session / "annotator.json").read_text())
    assert meta["annotator"] == "classification"
    assert meta["labels"] == ["cat", "flower", "landscape", "drink"]
    assert json.loads((session / "state.json").read_text())["key"] == "photos/2"

    # resumes on coffee (320x213); a pick there is appended
    proc = start(["annot", str(config), "--save-dir", str(out)], tmp_path)
    win = Window("annot-photos-annot", proc, size=(540, 213 + 22))
    win.key("4")
    wait_for(lambda: journal_lines(journal) >= 1, "the pick in the journal", proc=proc)
    win.key("q")
    finish(proc)
    rows.append(f"photos/2,photos,2,{photo_images / 'coffee.png'},drink")
    assert (session / "labels.csv").read_text() == "\n".join(rows) + "\n"

    from thelper_gui.datasets import annotations

    ds = annotations(str(session))
    assert ds.task.class_names == ["cat", "flower", "landscape", "drink"]
    assert [(s["path"], s["label"]) for s in (ds[i] for i in range(len(ds)))] == [
        (str(photo_images / "chelsea.png"), 0), (str(photo_images / "flower.png"), 1),
        (str(photo_images / "coffee.png"), 3)]
    assert tuple(ds[0]["input"].shape) == (3, 300, 451)
