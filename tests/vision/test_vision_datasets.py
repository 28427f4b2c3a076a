"""The ``image_folder`` dataset on real images (scikit-learn digits and sample photos)."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch

from thelper.exceptions import DataError
from thelper.tasks import Classification
from thelper_vision.datasets import ImageFolder, decode_image_file

DIGITS_PER_CLASS = 4  # as written by the digits_folder fixture (conftest.py)
DIGITS_UPSCALE = 4


def test_digits_folder_classes_targets_and_samples(digits_folder):
    ds = ImageFolder(digits_folder)
    assert ds.classes == [str(i) for i in range(10)]
    assert len(ds) == 10 * DIGITS_PER_CLASS
    assert ds.targets == [label for label in range(10) for _ in range(DIGITS_PER_CLASS)]
    assert ds.task == Classification(ds.classes, input_key="input", label_key="label",
                                     meta_keys=["path"])
    sample = ds[5]
    assert set(sample) == {"input", "label", "path"}
    size = 8 * DIGITS_UPSCALE
    assert sample["input"].shape == (3, size, size) and sample["input"].dtype == torch.uint8
    assert sample["label"] == ds.targets[5] == 1
    assert sample["path"].endswith(".png") and f"{digits_folder}/1/" in sample["path"]
    # grey PNG: the three RGB channels are equal, and the digit strokes are bright
    assert torch.equal(sample["input"][0], sample["input"][2])
    assert sample["input"].max() > 200


@pytest.mark.parametrize(("mode", "channels"), [("RGB", 3), ("L", 1), ("unchanged", 1)])
def test_modes_on_grey_png(digits_folder, mode, channels):
    image = ImageFolder(digits_folder, mode=mode)[0]["input"]
    assert image.shape[0] == channels and image.dtype == torch.uint8


def test_photos_jpeg_bmp_and_rgba(photos_folder):
    ds = ImageFolder(photos_folder)
    assert ds.classes == ["china", "flower"]
    names = [path.rsplit("/", 1)[-1] for path, _ in ds.samples]
    assert names == ["china.jpg", "china_rgba.png", "china_small.BMP",
                     "flower.jpg", "flower_rgba.png", "flower_small.BMP"]
    shapes = [tuple(ds[i]["input"].shape) for i in range(len(ds))]
    assert shapes == [(3, 427, 640), (3, 43, 64), (3, 43, 64)] * 2
    # the BMP (decoded by Pillow) and the PNG (by torchvision) hold the same pixels
    assert torch.equal(ds[1]["input"], ds[2]["input"])
    unchanged = ImageFolder(photos_folder, mode="unchanged")
    assert unchanged[1]["input"].shape == (4, 43, 64)  # RGBA kept
    grey = ImageFolder(photos_folder, mode="L", extensions=[".bmp"])
    assert len(grey) == 2 and grey[0]["input"].shape == (1, 43, 64)


def test_extensions_filter_and_class_selection(photos_folder):
    jpgs = ImageFolder(photos_folder, extensions=[".jpg"])
    assert len(jpgs) == 2 and jpgs.targets == [0, 1]
    reordered = ImageFolder(photos_folder, extensions=[".jpg"], classes=["flower", "china"])
    assert reordered.classes == ["flower", "china"]
    assert sorted(zip(reordered.targets, (p.rsplit("/", 1)[-1] for p, _ in reordered.samples),
                      strict=True)) == [(0, "flower.jpg"), (1, "china.jpg")]
    only = ImageFolder(photos_folder, classes=["flower"])
    assert len(only) == 3 and set(only.targets) == {0}


def test_built_through_registry_with_params_normalised(registry, photos_folder):
    ds = registry.build("dataset", "torchvision.datasets.ImageFolder",
                        {"root": str(photos_folder), "extensions": ["JPG"]})
    assert isinstance(ds, ImageFolder) and len(ds) == 2


def test_dataloader_collates_and_dataset_pickles(digits_folder):
    ds = ImageFolder(digits_folder, mode="L")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["input"].shape == (8, 1, 32, 32) and batch["input"].dtype == torch.uint8
    assert batch["label"].tolist() == ds.targets[:8]
    assert len(batch["path"]) == 8
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.samples == ds.samples and clone.task == ds.task


def test_corrupt_file_names_file_and_index(digits_folder, tmp_path):
    root = tmp_path / "digits"
    shutil.copytree(digits_folder, root)
    bad = root / "3" / "0000_truncated.png"
    data = (root / "3").glob("*.png").__next__().read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    (root / "7" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    ds = ImageFolder(root)
    for path in (bad, root / "7" / "garbage.jpg"):
        index = [p for p, _ in ds.samples].index(str(path))
        with pytest.raises(DataError, match=rf"sample {index} .*{path.name}"):
            ds[index]


def test_missing_root(tmp_path, registry):
    missing = tmp_path / "nope"
    with pytest.raises(DataError, match=r"nope.*does not exist.*root"):
        ImageFolder(missing)
    # user-facing errors pass through the registry unchanged (no wrapping)
    with pytest.raises(DataError, match="does not exist"):
        registry.build("dataset", "image_folder", {"root": str(missing)})


def test_empty_folders(tmp_path, digits_folder):
    with pytest.raises(DataError, match="no class sub-folder"):
        ImageFolder(tmp_path)
    root = tmp_path / "digits"
    shutil.copytree(digits_folder, root)
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="empty"):
        ImageFolder(root)
    assert len(ImageFolder(root, classes=[str(i) for i in range(10)])) == 40
    with pytest.raises(DataError, match="'ten'"):
        ImageFolder(root, classes=["0", "ten"])


def test_decode_image_file_rejects_unknown_mode(digits_folder):
    path = next(digits_folder.glob("0/*.png"))
    assert decode_image_file(path, "L").shape == (1, 32, 32)
    with pytest.raises(ValueError, match="mode"):
        decode_image_file(path, "CMYK")
