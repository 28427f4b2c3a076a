"""Dense vision tasks: joint transforms, collation, steps, datasets and consumers, on real
images (scikit-image's coins photo)."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision import tv_tensors

from thelper.exceptions import ConfigError, DataError
from thelper_vision.detection import Detection, DetectionCollate
from thelper_vision.tasks import Autoencoding, Segmentation, SuperResolution

SEG = Segmentation(["background", "coin"], meta_keys=["path"])


def _coins_joint():
    """A joint sample whose image is 200 exactly where the mask is 1 (so that any
    geometric transform that moves both the same way keeps ``image == 200 * mask``)."""
    from skimage import data
    from skimage.filters import threshold_otsu

    coins = torch.from_numpy(data.coins()[:96, :128].copy())
    mask = (coins > threshold_otsu(coins.numpy())).long()
    return {"image": tv_tensors.Image((mask * 200).to(torch.uint8)[None]),
            "mask": tv_tensors.Mask(mask)}


@pytest.mark.parametrize(("name", "params"), [
    ("random_crop", {"size": [48, 40]}),
    ("random_resized_crop", {"size": [40, 40], "scale": [0.3, 1.0], "interpolation": "nearest"}),
    ("random_horizontal_flip", {"p": 1.0}),
    ("random_rotation", {"degrees": 40}),
    ("random_affine", {"degrees": 20, "translate": [0.2, 0.1], "scale": [0.8, 1.2]}),
    ("resize", {"size": [50, 70], "interpolation": "nearest"}),
])
def test_joint_transforms_move_masks_with_images(registry, name, params):
    sample = _coins_joint()
    transform = registry.build("transform", name, params)
    torch.manual_seed(3)
    out = transform(sample)
    assert isinstance(out["mask"], tv_tensors.Mask)
    assert out["image"].shape[-2:] == out["mask"].shape[-2:]
    inside = out["mask"] != SEG.ignore_index  # rotations and shifts fill the corners
    assert torch.equal(out["image"][0].long()[inside], out["mask"].long()[inside] * 200)
    assert not out["image"][0][~inside].any()  # the image is filled with 0 there
    assert int(out["mask"][inside].sum()) > 0


@pytest.mark.parametrize(("name", "params"), [
    ("pad", {"padding": [3, 5], "fill": 7}),
    ("random_crop", {"size": [110, 140], "pad_if_needed": True, "fill": 7}),
    ("random_crop", {"size": [96, 128], "padding": 6, "fill": 7}),
    ("center_crop", {"size": [104, 131]}),
    ("random_rotation", {"degrees": [30, 30], "fill": 7}),
    ("random_affine", {"degrees": 0, "translate": [0.2, 0.2], "fill": 7}),
])
def test_padding_fills_masks_with_the_ignore_index(registry, name, params):
    """Pixels created outside the image are ``ignore_index`` in masks (not class 0, which
    would train and score them as background) and ``fill`` in images."""
    from thelper_vision.metrics import MeanIoU
    from thelper_vision.transforms import MASK_FILL

    assert MASK_FILL == SEG.ignore_index == 255
    sample = _coins_joint()  # mask: 1 (coin) where the image is 200, else 0
    torch.manual_seed(1)
    out = registry.build("transform", name, params)(sample)
    filled = out["mask"] == SEG.ignore_index
    assert int(filled.sum()) > 0
    fill = params.get("fill", 0)
    assert bool((out["image"][0][filled] == fill).all())  # images keep their fill
    if fill:  # and only there (the image is 0 or 200 elsewhere)
        assert not bool((out["image"][0][~filled] == fill).any())
    if name in ("pad", "center_crop"):  # the whole border
        assert bool(filled[0].all() and filled[-1].all())
        assert bool(filled[:, 0].all() and filled[:, -1].all())
    batch = SEG.collate_fn()([{"input": out, "path": "coins.png"}])
    assert batch["mask"].dtype == torch.int64
    assert torch.equal(batch["mask"][0] == SEG.ignore_index, filled)
    # predicted "coin" on the padding, exact elsewhere: the padding counts nowhere
    target = batch["mask"]
    pred = torch.where(target == SEG.ignore_index, torch.ones_like(target), target)
    logits = torch.nn.functional.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    miou = MeanIoU(SEG)
    miou.update(logits, target)
    assert miou.compute() == 1.0
    assert int(miou.matrix.sum()) == int((~filled).sum())


def test_colour_and_normalisation_leave_masks_alone(registry):
    sample = _coins_joint()
    mask = sample["mask"].clone()
    for name, params in [("to_float", {}), ("minmax_normalize", {}),
                         ("normalize", {"mean": [0.5], "std": [0.25]}),
                         ("color_jitter", {"brightness": 0.5}), ("gaussian_blur",
                                                                  {"kernel_size": 3})]:
        sample = registry.build("transform", name, params)(sample)
        assert torch.equal(sample["mask"], mask) and sample["mask"].dtype == torch.int64
    assert sample["image"].dtype == torch.float32


def test_boxes_move_with_images_and_are_sanitised(registry):
    image = tv_tensors.Image(torch.zeros(3, 40, 100, dtype=torch.uint8))
    boxes = tv_tensors.BoundingBoxes([[10.0, 5.0, 30.0, 25.0], [90.0, 0.0, 100.0, 10.0]],
                                     format="XYXY", canvas_size=(40, 100))
    sample = {"image": image, "boxes": boxes, "labels": torch.tensor([0, 1])}
    flipped = registry.build("transform", "random_horizontal_flip", {"p": 1.0})(sample)
    assert flipped["boxes"].tolist() == [[70.0, 5.0, 90.0, 25.0], [0.0, 0.0, 10.0, 10.0]]
    cropped = registry.build("transform", "center_crop", {"size": [40, 60]})(sample)
    clean = registry.build("transform", "sanitize_boxes", {})(cropped)
    assert clean["labels"].tolist() == [0]  # the second box fell outside the crop
    assert clean["boxes"].tolist() == [[0.0, 5.0, 10.0, 25.0]]


def test_segmentation_collate_and_step(coins_segmentation, registry):
    ds = registry.build("dataset", "segmentation_folder", {
        "images": str(coins_segmentation / "images"), "masks": str(coins_segmentation / "masks"),
        "class_names": ["background", "coin"], "mode": "L"})
    batch = ds.task.collate_fn()([ds[0], ds[1]])
    assert batch["input"].shape == (2, 1, 64, 64) and batch["input"].dtype == torch.float32
    assert batch["mask"].shape == (2, 64, 64) and batch["mask"].dtype == torch.int64
    assert int(batch["mask"][0, 0, 0]) == 255 and len(batch["path"]) == 2
    model = registry.build("model", "unet", {"in_channels": 1, "base_channels": 4, "depth": 2},
                           task=ds.task)
    loss_fn = registry.build("loss", *ds.task.default_loss())
    outputs, targets, loss = ds.task.step(model, loss_fn, batch, torch.device("cpu"))
    assert outputs.shape == (2, 2, 64, 64) and torch.isfinite(loss)
    assert ds.task.decode(outputs).shape == (2, 64, 64)


def test_segmentation_rejects_bad_masks_and_outputs():
    bad = {"input": {"image": torch.zeros(1, 4, 4, dtype=torch.uint8),
                     "mask": torch.full((4, 4), 7)}, "path": "x.png"}
    with pytest.raises(DataError, match=r"x\.png.*\[7\]"):
        SEG.collate_fn()([bad])
    with pytest.raises(ConfigError, match="expected logits"):
        SEG.check_outputs(torch.zeros(1, 3, 4, 4), "net")
    with pytest.raises(ConfigError, match="ignore_index 1"):
        Segmentation(["a", "b"], ignore_index=1)


def test_torchvision_segmentation_dict_output_is_unwrapped(registry):
    model = registry.build("model", "lraspp_mobilenet_v3_large", {}, task=SEG).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 48, 48))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 2, 48, 48)
    assert "OutputOf" in type(model).__name__


def test_coco_detection_dataset_and_collate(coins_coco, registry):
    ds = registry.build("dataset", "coco_detection", {
        "images": str(coins_coco / "images"), "annotations": str(coins_coco / "annotations.json"),
        "mode": "L"})
    assert ds.task.class_names == ["coin"] and len(ds) == 2
    coco = json.loads((coins_coco / "annotations.json").read_text())
    first = coco["annotations"][0]["bbox"]
    sample = ds[0]
    assert sample["input"]["boxes"][0].tolist() == pytest.approx(
        [first[0], first[1], first[0] + first[2], first[1] + first[3]])
    batch = ds.task.collate_fn()([ds[0], ds[1]])
    assert isinstance(batch["input"], list) and batch["input"][0].dtype == torch.float32
    assert batch["target"][0]["labels"].dtype == torch.int64
    assert set(batch["target"][0]) == {"boxes", "labels"}
    assert batch["image_id"] == [1, 2]


def test_detection_collate_drops_degenerate_boxes():
    collate = DetectionCollate("input", "target", min_box_size=2.0)
    sample = {"input": {"image": torch.zeros(3, 10, 10, dtype=torch.uint8),
                        "boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 3.0, 9.0]]),
                        "labels": torch.tensor([0, 0])}}
    batch = collate([sample])
    assert batch["target"][0]["boxes"].tolist() == [[1.0, 1.0, 5.0, 5.0]]


def test_detection_step_train_and_eval(coins_coco, registry):
    ds = registry.build("dataset", "coco_detection", {
        "images": str(coins_coco / "images"), "annotations": str(coins_coco / "annotations.json"),
        "mode": "L"})
    task = ds.task
    model = registry.build("model", "small_fasterrcnn", {
        "in_channels": 1, "channels": [4, 8, 8], "min_size": 96, "max_size": 128}, task=task)
    loss_fn = registry.build("loss", *task.default_loss())
    batch = task.to_device(task.collate_fn()([ds[0], ds[1]]), torch.device("cpu"))
    model.train()
    outputs, targets, loss = task.step(model, loss_fn, batch, torch.device("cpu"))
    assert outputs is None and loss.ndim == 0 and loss.requires_grad
    task.check_outputs(outputs, "small_fasterrcnn")
    model.eval()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    with torch.no_grad():
        outputs, targets, loss = task.step(model, loss_fn, batch, torch.device("cpu"))
    assert not model.training and torch.isfinite(loss) and float(loss) > 0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert len(outputs) == 2 and all((o["labels"] >= 0).all() for o in outputs)
    assert targets[0]["image"].shape[0] == 1
    task.check_outputs(outputs, "small_fasterrcnn")
    with pytest.raises(ConfigError, match="compute their own losses"):
        task.step(model, torch.nn.MSELoss(), batch, torch.device("cpu"))


def test_detection_without_eval_loss_reports_zero(coins_coco, registry):
    task = Detection(["coin"], eval_loss=False)
    ds = registry.build("dataset", "coco_detection", {
        "images": str(coins_coco / "images"), "annotations": str(coins_coco / "annotations.json"),
        "mode": "L"})
    model = registry.build("model", "small_fasterrcnn", {
        "in_channels": 1, "channels": [4, 8], "min_size": 96, "max_size": 128}, task=task).eval()
    batch = task.collate_fn()([ds[0]])
    with torch.no_grad():
        _, _, loss = task.step(model, registry.build("loss", "detection_loss"), batch, "cpu")
    assert float(loss) == 0.0


def test_super_resolution_dataset_pairs(grey_photos, registry):
    ds = registry.build("dataset", "super_resolution_folder", {
        "root": str(grey_photos), "scale": 3, "patch_size": 30, "stride": 30})
    assert len(ds) == 8  # two 64x64 images, 2x2 tiles each
    pair = ds[0]["input"]
    assert pair["image"].shape == pair["target"].shape == (1, 30, 30)
    assert pair["image"].dtype == torch.uint8
    batch = ds.task.collate_fn()([ds[0], ds[1]])
    assert batch["input"].dtype == batch["target"].dtype == torch.float32
    assert batch["origin"].tolist() == [[0, 0], [0, 30]]
    small = registry.build("dataset", "super_resolution_folder", {
        "root": str(grey_photos), "scale": 2, "upsample": False})
    assert small[0]["input"]["image"].shape == (1, 32, 32)
    with pytest.raises(DataError, match="smaller than patch_size"):
        registry.build("dataset", "super_resolution_folder",
                       {"root": str(grey_photos), "patch_size": 100})


def test_image_to_image_steps_clamp_at_evaluation():
    model = torch.nn.Conv2d(1, 1, 1)
    torch.nn.init.constant_(model.weight, 3.0)
    torch.nn.init.zeros_(model.bias)
    batch = {"input": torch.full((1, 1, 4, 4), 0.5), "target": torch.full((1, 1, 4, 4), 0.5)}
    sr = SuperResolution()
    model.train()
    out, _, _ = sr.step(model, torch.nn.MSELoss(), batch, "cpu")
    assert float(out.detach().max()) == pytest.approx(1.5)
    model.eval()
    out, _, _ = sr.step(model, torch.nn.MSELoss(), batch, "cpu")
    assert float(out.detach().max()) == 1.0
    ae = Autoencoding(target_min=0.0, target_max=1.0)
    out, targets, loss = ae.step(model, torch.nn.MSELoss(), {"input": batch["input"]}, "cpu")
    assert targets is batch["input"] and float(out.detach().max()) == 1.0
    assert float(loss.detach()) > 0
    assert ae.params()["input_key"] == "input" and "label_key" not in ae.params()


def test_tasks_round_trip_through_the_registry(registry):
    from thelper.tasks import task_from_dict

    for task in (SEG, Detection(["coin"], color_map={"coin": [1, 2, 3]}), SuperResolution(),
                 Autoencoding()):
        again = task_from_dict(task.to_dict())
        assert again == task and type(again) is type(task)
