"""Image datasets whose "images" are FIFOs or devices (issue #13).

A FIFO named like an image used to block its reader (and training) forever, a device such
as ``/dev/zero`` is never a valid image. Both must be data errors naming the file (skipped
under ``loaders.skip_bad_samples``). Whatever could hang runs in a subprocess whose
``timeout`` turns a hang into a failure; nothing here measures time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thelper.data.files import open_regular
from thelper.exceptions import DataError
from thelper_vision.dense_datasets import list_images

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")

READ_ALL = """
import sys
from thelper.exceptions import DataError
from thelper_vision.datasets import ImageFolder

ds = ImageFolder(sys.argv[1], mode="L")
print(len(ds))
for i in range(len(ds)):
    try:
        ds[i]
    except DataError as exc:
        print("DataError:", exc)
"""


@pytest.fixture
def special_folder(tmp_path, digits_folder) -> Path:
    """A copy of the digit class folders plus ``3/fifo.png`` (a FIFO) and ``5/zero.png``
    (a link to ``/dev/zero`` where it exists)."""
    root = tmp_path / "digits"
    shutil.copytree(digits_folder, root)
    os.mkfifo(root / "3" / "fifo.png")
    if os.path.exists("/dev/zero"):
        (root / "5" / "zero.png").symlink_to("/dev/zero")
    return root


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=300)


def test_open_regular_refuses_fifos_and_devices(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe.png' is a FIFO \(named pipe\), not a regular "
                                        "file: datasets read regular files only"):
        open_regular(fifo)  # opened without blocking: no writer needed
    if os.path.exists("/dev/zero"):
        with pytest.raises(DataError, match="'/dev/zero' is a character device"):
            open_regular("/dev/zero")
    with pytest.raises(DataError, match="is a directory"):
        open_regular(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "missing.png")
    real = tmp_path / "real.txt"
    real.write_text("ok")
    link = tmp_path / "link.txt"
    link.symlink_to(real)
    with open_regular(link) as f:
        assert f.read() == b"ok"
    with open_regular(link, "r") as f:
        assert f.read() == "ok"
    with pytest.raises(ValueError, match="mode must be 'rb' or 'r'"):
        open_regular(real, "wb")


def test_image_folder_reports_a_fifo_and_a_device_by_name(special_folder, digits_folder):
    res = _python("-c", READ_ALL, str(special_folder))
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    expected = sum(1 for p in Path(digits_folder).rglob("*.png"))
    errors = [ln for ln in lines[1:] if ln.startswith("DataError:")]
    if os.path.exists("/dev/zero"):
        assert int(lines[0]) == expected + 2
        (zero,) = [e for e in errors if "zero.png" in e]
        assert "is a character device, not a regular file" in zero
    (fifo,) = [e for e in errors if "fifo.png" in e]
    assert "cannot decode sample" in fifo and "class '3'" in fifo
    assert "is a FIFO (named pipe), not a regular file" in fifo


def test_folder_listings_skip_fifos(special_folder):
    names = [p.name for p in list_images(special_folder / "3")]
    assert "fifo.png" not in names and names


def _session_config(root: Path, skip: bool) -> dict:
    return {
        "name": "specials",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"pngs": {"type": "image_folder", "params": {"root": str(root),
                                                                  "mode": "L"}}},
        "loaders": {"batch_size": 8, "skip_bad_samples": skip,
                    "train_split": {"pngs": 0.8}, "test_split": {"pngs": 0.2},
                    "base_transforms": [{"type": "to_float"}]},
        "model": {"type": "simple_cnn", "params": {"in_channels": 1, "channels": [4]}},
        "trainer": {"epochs": 1, "device": "cpu", "progress": False,
                    "optimization": {"optimizer": {"type": "adam"}}},
    }


@pytest.mark.parametrize("skip", [False, True])
def test_training_on_a_folder_with_a_fifo_does_not_hang(tmp_path, special_folder, skip):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(_session_config(special_folder, skip)))
    res = _python("-m", "thelper", "run", str(config), "--save-dir", str(tmp_path / "s"))
    assert "Traceback" not in res.stderr
    if skip:
        assert res.returncode == 0, res.stderr[-3000:]
        assert "fifo.png" in res.stderr
    else:
        assert res.returncode == 1, res.stderr[-3000:]
        (error,) = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
        assert ("fifo.png" in error and "FIFO" in error) or "zero.png" in error


def test_coco_annotations_that_are_a_fifo_or_not_json_are_data_errors(tmp_path):
    """The COCO JSON of ``coco_detection`` is opened without blocking: a FIFO there is a
    one-line data error naming it (in a child process: a hang fails by its timeout)."""
    fifo = tmp_path / "instances.json"
    os.mkfifo(fifo)
    code = ("import sys\nfrom thelper.exceptions import DataError\n"
            "from thelper_vision.dense_datasets import CocoDetection\n"
            "try:\n    CocoDetection(sys.argv[1], sys.argv[2])\n"
            "except DataError as exc:\n    print('DataError:', exc)\n")
    res = _python("-c", code, str(tmp_path), str(fifo))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "instances.json' is a FIFO (named pipe)" in res.stdout
    assert res.stdout.startswith("DataError: coco_detection:")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    from thelper_vision.dense_datasets import CocoDetection

    with pytest.raises(DataError, match="broken.json' is not JSON"):
        CocoDetection(str(tmp_path), str(broken))
