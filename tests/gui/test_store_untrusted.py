"""An annotation session from a stranger: ``annotator.json`` and ``journal.jsonl`` are
untrusted input. Replaying them never writes outside the session, never expands a patch
beyond its rectangle, and fails with a one-line DataError naming the journal and line.
No display needed."""

from __future__ import annotations

import base64
import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from thelper.exceptions import DataError
from thelper_gui.datasets import annotations
from thelper_gui.store import MAX_PIXELS, decode_patch, encode_patch

LABELS = [{"id": 0, "name": "background", "color": [0, 0, 0]},
          {"id": 1, "name": "coin", "color": [255, 170, 0]}]


def make_session(root: Path, entries: list, stem: str = "coins", height: int = 40,
                 width: int = 60) -> Path:
    """A segmentation session over a real image (scikit-image's coins, cropped) whose
    journal holds ``entries`` (dicts, written one JSON line each)."""
    import cv2
    from skimage import data

    root.mkdir(parents=True)
    image = root / "coins.png"
    assert cv2.imwrite(str(image), data.coins()[:40, :60])
    meta = {"format": 1, "annotator": "segmentation", "config": "x", "labels": LABELS,
            "samples": {"coins:0": {"dataset": "coins", "index": 0, "path": str(image),
                                    "stem": stem, "height": height, "width": width}}}
    (root / "annotator.json").write_text(json.dumps(meta))
    (root / "journal.jsonl").write_text("".join(json.dumps(e) + "\n" for e in entries))
    return root


def entry(rect, data: str) -> dict:
    return {"sample": "coins:0", "op": "fill", "rect": rect, "data": data}


def good_patch(h: int = 5, w: int = 7) -> str:
    return encode_patch(np.ones((h, w), np.uint8))


def test_a_valid_journal_is_folded_into_the_mask(tmp_path):
    session = make_session(tmp_path / "s", [entry([2, 3, 7, 5], good_patch())])
    ds = annotations(str(session), mode="L")
    mask = ds[0]["input"]["mask"]
    assert mask.shape == (40, 60) and int(mask.sum()) == 35
    assert int(mask[3:8, 2:9].sum()) == 35


def test_stem_leading_out_of_the_session_is_refused(tmp_path):
    session = make_session(tmp_path / "a" / "b" / "s", [entry([0, 0, 7, 5], good_patch())],
                           stem="../../ESCAPED")
    with pytest.raises(DataError, match=r"journal\.jsonl: line 1: .*'\.\./\.\./ESCAPED' is "
                                        r"not a plain file name"):
        annotations(str(session), mode="L")
    assert not list(tmp_path.rglob("ESCAPED*"))
    assert not (session / "masks").exists() or not any((session / "masks").iterdir())


@pytest.mark.parametrize("stem", ["..", "a/b", "a\\b", "", "x\0y", 7])
def test_unsafe_stems(tmp_path, stem):
    session = make_session(tmp_path / "s", [], stem=stem)
    (session / "masks").mkdir()
    (session / "masks" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a plain file name"):
        annotations(str(session), mode="L")


def test_oversized_mask_is_refused_before_allocating(tmp_path):
    session = make_session(tmp_path / "s", [entry([0, 0, 7, 5], good_patch())],
                           height=2**20, width=2**20)
    with pytest.raises(DataError, match=r"journal\.jsonl: line 1: .*1048576x1048576 mask is "
                                        r"out of range"):
        annotations(str(session), mode="L")


def test_zip_bomb_patch_is_refused(tmp_path):
    bomb = base64.b64encode(zlib.compress(bytes(64 * 2**20), 9)).decode()  # 64 MiB of zeros
    assert len(bomb) < 200_000
    session = make_session(tmp_path / "s", [entry([0, 0, 7, 5], good_patch()),
                                            entry([0, 0, 7, 5], bomb)])
    with pytest.raises(DataError, match=r"journal\.jsonl: line 2: data of 'coins:0': patch "
                                        r"holds more than 36 bytes, not 5x7 = 35"):
        annotations(str(session), mode="L")
    with pytest.raises(ValueError, match="more than"):
        decode_patch(bomb, (5, 7))
    with pytest.raises(ValueError, match="holds 34 bytes"):
        decode_patch(encode_patch(np.zeros(34, np.uint8)), (5, 7))
    with pytest.raises(ValueError, match="out of range"):
        decode_patch(good_patch(), (MAX_PIXELS, 2))


@pytest.mark.parametrize("rect", [[58, 0, 7, 5], [-1, 0, 7, 5], [0, 38, 7, 5], [0, 0, 0, 5],
                                  [0, 0, 7], ["0", 0, 7, 5], [0.5, 0, 7, 5]])
def test_rect_outside_the_mask_is_refused(tmp_path, rect):
    session = make_session(tmp_path / "s", [entry(rect, good_patch())])
    with pytest.raises(DataError, match=r"journal\.jsonl: line 1: rect .*(outside the 40x60 "
                                        r"mask|not four integers)"):
        annotations(str(session), mode="L")
    assert not (session / "masks" / "coins.png").exists()


def test_malformed_entry_names_the_line(tmp_path):
    session = make_session(tmp_path / "s", [entry([0, 0, 7, 5], good_patch()),
                                            {"sample": "coins:0", "op": "fill"}])
    with pytest.raises(DataError, match=r"journal\.jsonl: line 2 is not a valid segmentation "
                                        r"entry \(KeyError"):
        annotations(str(session), mode="L")


def test_oversized_journal_is_refused(tmp_path, monkeypatch):
    from thelper_gui import journal

    session = make_session(tmp_path / "s", [entry([0, 0, 7, 5], good_patch())] * 20)
    monkeypatch.setattr(journal, "MAX_JOURNAL_BYTES", 1000)
    with pytest.raises(DataError, match=r"journal\.jsonl: larger than"):
        annotations(str(session), mode="L")


def test_lock_symlink_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    session = make_session(tmp_path / "s", [entry([0, 0, 7, 5], good_patch())])
    (session / ".lock").symlink_to(outside)
    with pytest.raises(DataError, match=r"\.lock is a symbolic link"):
        annotations(str(session), mode="L")
    assert outside.read_text() == "keep"


def test_cli_reports_the_escape_in_one_line(tmp_path):
    """``thelper run`` on a config whose ``annotations`` session is hostile: one error line,
    DataError's exit code, no traceback, nothing written outside."""
    from tests.gui.conftest import session_config
    from tests.gui.test_gui_cli import run

    session = make_session(tmp_path / "a" / "b" / "s", [entry([0, 0, 7, 5], good_patch())],
                           stem="../../ESCAPED")
    cfg = session_config(
        "hostile", {"ann": {"type": "annotations", "params": {"session": str(session),
                                                              "mode": "L"}}},
        {"type": "segmentation"},
        {"type": "unet", "params": {"in_channels": 1, "base_channels": 4, "depth": 2}},
        {"miou": {"type": "miou"}}, "miou")
    del cfg["annotator"]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    result = run(["run", str(path), "--save-dir", str(tmp_path / "runs")], tmp_path)
    assert result.returncode == DataError.exit_code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "journal.jsonl: line 1:" in errors[0], result.stderr
    assert "ESCAPED" in errors[0] and "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("ESCAPED*"))


def test_fifos_in_a_session_are_refused_not_waited_on(tmp_path):
    """``annotator.json`` or ``boxes.json`` that is a FIFO: a one-line DataError naming it,
    and the session is released; a FIFO ``state.json`` (the saved position) is ignored. In a
    child process: a hang fails by its timeout."""
    import os
    import subprocess
    import sys

    session = make_session(tmp_path / "s", [])
    meta = json.loads((session / "annotator.json").read_text())
    (session / "annotator.json").unlink()
    os.mkfifo(session / "annotator.json")
    code = ("import sys\nfrom pathlib import Path\nfrom thelper.exceptions import DataError\n"
            "from thelper_gui.store import open_store, read_meta\n"
            "try:\n    read_meta(Path(sys.argv[1]))\n"
            "except DataError as exc:\n    print('DataError:', exc)\n"
            "try:\n    open_store(Path(sys.argv[1]), 'segmentation', [])\n"
            "except DataError as exc:\n    print('refused')\n"
            "Path(sys.argv[1], 'annotator.json').unlink()\n"
            "open_store(Path(sys.argv[1]), 'segmentation', []).close()\n")
    res = subprocess.run([sys.executable, "-c", code, str(session)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert "annotator.json' is a FIFO (named pipe)" in lines[0] and lines[1:] == ["refused"]

    meta["annotator"] = "boxes"
    for name in ("b", "p"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "annotator.json").write_text(json.dumps(meta))
    os.mkfifo(tmp_path / "b" / "boxes.json")
    os.mkfifo(tmp_path / "p" / "state.json")
    code = ("import sys\nfrom pathlib import Path\nfrom thelper.exceptions import DataError\n"
            "from thelper_gui.store import open_store\n"
            "try:\n    open_store(Path(sys.argv[1]), 'boxes', ['coin'])\n"
            "except DataError as exc:\n    print('DataError:', exc)\n"
            "store = open_store(Path(sys.argv[2]), 'boxes', ['coin'])\n"
            "print('position:', store.position())\nstore.close()\n"
            # the refused session was released: once mended, it opens
            "Path(sys.argv[1], 'boxes.json').unlink()\n"
            "open_store(Path(sys.argv[1]), 'boxes', ['coin']).close()\n")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "b"), str(tmp_path / "p")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert len(lines) == 2 and "boxes.json' is a FIFO (named pipe)" in lines[0]
    assert lines[1] == "position: None"
