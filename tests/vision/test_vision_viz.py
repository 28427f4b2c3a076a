"""``thelper viz``: PNG grids of transformed batches, through the CLI."""

from __future__ import annotations

import yaml
from PIL import Image

from thelper.cli import main


def _seg_config(root) -> dict:
    return {
        "name": "viz-seg",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"coins": {"type": "segmentation_folder", "params": {
            "images": str(root / "images"), "masks": str(root / "masks"),
            "class_names": ["background", "coin"], "mode": "L"}}},
        "loaders": {"batch_size": 3, "train_split": {"coins": 1.0},
                    "train_augments": [{"type": "random_crop", "params": {"size": 40}}],
                    "base_transforms": [{"type": "to_float"}]},
        "model": {"type": "unet", "params": {"in_channels": 1}},
        "trainer": {"epochs": 1, "optimization": {"optimizer": {"type": "adam"}}},
    }


def test_viz_writes_segmentation_and_detection_grids(tmp_path, coins_segmentation, coins_coco):
    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(_seg_config(coins_segmentation)))
    assert main(["viz", str(path), "--out", str(tmp_path / "viz"), "--batches", "2"]) == 0
    first = tmp_path / "viz" / "viz-seg" / "train_batch0.png"
    assert first.is_file() and (tmp_path / "viz" / "viz-seg" / "train_batch1.png").is_file()
    assert Image.open(first).size[0] > 300
    det = _seg_config(coins_segmentation)
    det["name"] = "viz-det"
    det["datasets"] = {"coins": {"type": "coco_detection", "params": {
        "images": str(coins_coco / "images"), "annotations": str(coins_coco / "annotations.json")}}}
    det["model"] = {"type": "small_fasterrcnn"}
    det["loaders"]["train_augments"] = [{"type": "random_horizontal_flip"}]
    path.write_text(yaml.safe_dump(det))
    assert main(["viz", str(path), "--out", str(tmp_path / "viz")]) == 0
    assert (tmp_path / "viz" / "viz-det" / "train_batch0.png").is_file()


def test_viz_reports_an_empty_split(tmp_path, coins_segmentation):
    # no capsys here: the first setup_logging() of a process binds the console handler to
    # the sys.stderr of that moment, which capsys would replace for this test only
    import pytest

    from thelper.exceptions import ConfigError
    from thelper_vision.viz import write_batches

    path = tmp_path / "seg.yaml"
    path.write_text(yaml.safe_dump(_seg_config(coins_segmentation)))
    assert main(["viz", str(path), "--split", "test", "--out", str(tmp_path)]) == 2
    with pytest.raises(ConfigError, match="split 'test' is empty"):
        write_batches(path, tmp_path, split="test")


def test_viz_draws_tabular_samples_as_a_heat_map(tmp_path, mlp_config):
    """Digits as 64-feature vectors (``as_image: false``): one heat-map row per sample."""
    import numpy as np

    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(mlp_config))
    assert main(["viz", str(path), "--out", str(tmp_path / "viz"), "--limit", "6"]) == 0
    png = tmp_path / "viz" / "digits-mlp" / "train_batch0.png"
    pixels = np.asarray(Image.open(png).convert("RGB"))
    assert pixels.shape[1] > 300 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20


def test_viz_captions_vectors_and_refuses_scalars(tmp_path):
    import pytest
    import torch

    from thelper.exceptions import ConfigError
    from thelper.tasks import Classification, Regression
    from thelper_vision.viz import _caption, draw_batch

    names = Classification(["cat", "dog"])
    batch = {"input": torch.rand(3, 5), "label": torch.tensor([1, 0, 1])}
    assert [_caption(names, batch, i) for i in range(3)] == ["dog - #0", "cat - #1", "dog - #2"]
    assert draw_batch(names, batch, tmp_path / "c.png").is_file()
    values = Regression()
    assert _caption(values, {"target": torch.tensor([[0.25], [2.0]])}, 0) == "0.25 - #0"
    assert _caption(values, {"path": ["a/b.png"], "target": torch.rand(1, 2, 2)}, 0) == "b.png"
    assert draw_batch(values, {"input": torch.rand(2, 300), "target": torch.rand(2, 1)},
                      tmp_path / "r.png").is_file()
    with pytest.raises(ConfigError, match=r"images and 1-D feature vectors.*are \(\)"):
        draw_batch(names, {"input": torch.rand(4), "label": torch.zeros(4)}, tmp_path / "s.png")
