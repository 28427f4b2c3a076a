"""The vision plugin: registration is torch-free, complete and well described, and every
registered component builds through the core registry."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from thelper.tasks import Classification
from thelper_vision.plugin import thelper_register_components

ALL = thelper_register_components()
#: What a config names (the predictors' file decoders and output writers are tested in
#: tests/integration/test_predict.py).
VISION = [c for c in ALL if c.kind not in ("writer", "decoder")]

#: Sensible params for each registered component (every component must appear here).
PARAMS = {
    ("dataset", "image_folder"): None,  # filled with the digits folder in the test
    ("model", "simple_cnn"): {"in_channels": 1, "channels": [8, 16], "hidden": 16},
    ("transform", "resize"): {"size": [40, 30]},
    ("transform", "center_crop"): {"size": 24},
    ("transform", "random_crop"): {"size": [24, 20], "padding": 2},
    ("transform", "random_resized_crop"): {"size": 16},
    ("transform", "random_horizontal_flip"): {"p": 1.0},
    ("transform", "random_vertical_flip"): {},
    ("transform", "random_rotation"): {"degrees": 15},
    ("transform", "random_affine"): {"degrees": 10, "translate": [0.1, 0.1],
                                     "scale": [0.9, 1.1], "shear": 5},
    ("transform", "color_jitter"): {"brightness": 0.3, "contrast": 0.3},
    ("transform", "gaussian_blur"): {"kernel_size": 3},
    ("transform", "normalize"): {"mean": [0.5], "std": [0.25]},
    ("transform", "to_float"): {},
    ("transform", "grayscale"): {"num_output_channels": 1},
    ("transform", "random_grayscale"): {"p": 1.0},
    ("transform", "pad"): {"padding": [1, 2]},
    ("transform", "random_erasing"): {"p": 1.0},
    ("transform", "sanitize_boxes"): {"min_size": 2},
    ("transform", "minmax_normalize"): {"per_channel": True},
    # dense tasks (segmentation, detection, super-resolution, autoencoding)
    ("task", "segmentation"): {"class_names": ["background", "coin"]},
    ("task", "detection"): {"class_names": ["coin"]},
    ("task", "super_resolution"): {},
    ("task", "autoencoding"): {},
    ("dataset", "segmentation_folder"): None,  # filled in the test
    ("dataset", "coco_detection"): None,
    ("dataset", "super_resolution_folder"): None,
    ("loss", "detection_loss"): {"weights": {"loss_box_reg": 2.0}},
    ("metric", "pixel_accuracy"): {},
    ("metric", "miou"): {},
    ("metric", "psnr"): {"border": 1},
    ("metric", "ssim"): {"window": 3},
    ("metric", "mean_average_precision"): {"iou": 0.5},
    ("metric", "segmentation_masks"): {"max_images": 2},
    ("metric", "image_panels"): {"max_images": 2},
    ("metric", "detection_logger"): {},
    ("metric", "detection_overlays"): {},
}
#: Dense-task models built and run in the tests: name -> (params, task kind, input shape).
DENSE_MODELS = {
    "unet": ({"in_channels": 1, "base_channels": 4, "depth": 2}, "segmentation",
             (2, 1, 30, 26)),
    "lraspp_mobilenet_v3_large": ({"in_channels": 1}, "segmentation", (2, 1, 64, 64)),
    "small_fasterrcnn": ({"in_channels": 1, "channels": [4, 8], "min_size": 64,
                          "max_size": 64}, "detection", (2, 1, 64, 64)),
    "fasterrcnn_mobilenet_v3_large_320_fpn": ({"min_size": 64, "max_size": 64}, "detection",
                                              (1, 3, 64, 64)),
    "srcnn": ({"channels": [4, 4]}, "image", (2, 1, 20, 20)),
    "conv_autoencoder": ({"channels": [4, 8], "latent_dim": 3, "input_size": [8, 8]},
                         "image", (2, 1, 8, 8)),
}
DENSE_PARAMS_MODELS = {"TorchvisionSegmentationParams", "TorchvisionDetectionParams"}
#: torchvision models built and run in the tests (the others are only checked by name).
BUILT_MODELS = ("resnet18", "mobilenet_v3_small")


def _is_classifier(info) -> bool:
    return info.factory.startswith("thelper_vision.models:")


#: Components of the classification family (image folders, transforms, classifiers).
CLASSIFICATION_ERA = [c for c in VISION if c.kind == "transform" or c.name == "image_folder"
                      or (c.kind == "model" and _is_classifier(c))]


def _ids(info) -> str:
    return f"{info.kind}:{info.name}"


def test_plugin_import_is_torch_free():
    code = (
        "import sys, json\n"
        "import thelper_vision, thelper_vision.plugin\n"
        "infos = thelper_vision.plugin.thelper_register_components()\n"
        "schemas = [json.dumps(i.params_model.model_json_schema()) for i in infos]\n"
        "heavy = [m for m in ('torch', 'torchvision', 'PIL', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"registration imported {out.stdout.strip()}"


def test_every_component_has_test_params():
    assert {(c.kind, c.name) for c in VISION if c.kind != "model" or c.name == "simple_cnn"} \
        == set(PARAMS)
    dense = {c.name for c in VISION if c.kind == "model" and not _is_classifier(c)}
    assert set(DENSE_MODELS) <= dense
    for name in dense - set(DENSE_MODELS):  # the others share a tested params model
        info = next(c for c in VISION if c.name == name)
        assert info.params_model.__name__ in DENSE_PARAMS_MODELS, name


def test_registry_holds_the_vision_components(registry):
    mine = {(c.kind, c.name): c for c in registry.components()
            if c.distribution == "thelper-vision"}
    assert set(mine) == {(c.kind, c.name) for c in ALL}
    for info in ALL:
        assert mine[(info.kind, info.name)].plugin == "vision"
        for alias in info.aliases:
            assert registry.canonical(info.kind, alias) == info.name


@pytest.mark.parametrize("info", VISION, ids=_ids)
def test_params_are_documented(info):
    schema = info.params_model.model_json_schema()
    assert info.description
    for field, prop in schema.get("properties", {}).items():
        assert prop.get("description"), f"{info.name}.{field} has no docstring"
    with pytest.raises(Exception, match="xtra"):
        info.params_model.model_validate({"no_such_param": 1})


@pytest.mark.parametrize("info", CLASSIFICATION_ERA, ids=_ids)
def test_component_builds(info, registry, digits_folder):
    import torch
    from torchvision.models import list_models

    task = Classification([str(i) for i in range(10)])
    if info.name == "sanitize_boxes":
        built = registry.build(info.kind, info.name, PARAMS[(info.kind, info.name)])
        assert callable(built)
        return
    if info.kind == "model" and info.name != "simple_cnn":
        assert info.name in list_models()
        if info.name not in BUILT_MODELS:
            factory = info.load()  # lazy reference resolves, and asks for the task
            assert "task" in inspect.signature(factory).parameters
            return
        params = {"in_channels": 1}
    elif info.kind == "dataset":
        params = {"root": str(digits_folder)}
    else:
        params = PARAMS[(info.kind, info.name)]
    built = registry.build(info.kind, info.name, params, task=task)

    if info.kind == "model":
        built.eval()
        with torch.no_grad():
            logits = built(torch.rand(2, 1, 64, 64))
        assert logits.shape == (2, 10) and logits.dtype == torch.float32
    elif info.kind == "dataset":
        assert len(built) == 40 and built.task.class_names == task.class_names
        assert info.metadata["provides_task"] is True
    else:
        image = torch.randint(0, 256, (3, 32, 28), dtype=torch.uint8)
        out = built(image.float() / 255 if info.name == "normalize" else image)
        assert isinstance(out, torch.Tensor) and out.ndim == 3


def test_model_aliases_name_real_torchvision_functions():
    for info in VISION:
        for alias in info.aliases:
            if alias.startswith("torchvision.models."):
                module, _, attr = alias.rpartition(".")
                assert attr == info.name
                assert callable(getattr(importlib.import_module(module), attr)), alias


def test_transform_aliases_name_real_torchvision_classes():
    for info in VISION:
        for alias in info.aliases:
            if alias.startswith("torchvision.transforms."):
                module, _, attr = alias.rpartition(".")
                assert hasattr(importlib.import_module(module), attr), alias


# ------------------------------------------------------------------------------ dense tasks
DENSE = [c for c in VISION if c not in CLASSIFICATION_ERA]


def _dense_task(kind: str):
    from thelper_vision.detection import Detection
    from thelper_vision.tasks import Segmentation, SuperResolution

    return {"segmentation": Segmentation(["background", "coin"]),
            "detection": Detection(["coin"]), "image": SuperResolution()}[kind]


def _metric_task(name: str) -> str:
    if name in ("pixel_accuracy", "miou", "segmentation_masks"):
        return "segmentation"
    return "detection" if "detection" in name or "average" in name else "image"


@pytest.mark.parametrize("info", [c for c in DENSE if c.kind != "model"], ids=_ids)
def test_dense_component_builds(info, registry, coins_segmentation, coins_coco, grey_photos,
                                tmp_path):
    import torch

    params = PARAMS[(info.kind, info.name)]
    if info.kind == "dataset":
        params = {"segmentation_folder": {"images": str(coins_segmentation / "images"),
                                          "masks": str(coins_segmentation / "masks"),
                                          "class_names": ["background", "coin"]},
                  "coco_detection": {"images": str(coins_coco / "images"),
                                     "annotations": str(coins_coco / "annotations.json")},
                  "super_resolution_folder": {"root": str(grey_photos)}}[info.name]
    task = _dense_task(_metric_task(info.name)) if info.kind == "metric" else None
    built = registry.build(info.kind, info.name, params, task=task)
    if info.kind == "task":
        assert built.type_name == info.name
        assert callable(built.collate_fn())
    elif info.kind == "dataset":
        assert len(built) >= 2 and info.metadata["provides_task"] is True
        sample = built[0]
        assert isinstance(sample["input"], dict) and "image" in sample["input"]
        batch = built.task.collate_fn()([built[0], built[1]])
        assert len(batch["input"]) == 2
    elif info.kind == "loss":
        loss = built({"loss_box_reg": torch.tensor(1.0), "loss_classifier": torch.tensor(0.5)})
        assert float(loss) == pytest.approx(2.5)
    elif info.kind == "metric":
        kind = _metric_task(info.name)
        if kind == "segmentation":
            outputs, targets = torch.randn(2, 2, 8, 8), torch.randint(0, 2, (2, 8, 8))
        elif kind == "detection":
            box = torch.tensor([[2.0, 2.0, 10.0, 12.0]])
            outputs = [{"boxes": box, "scores": torch.tensor([0.9]),
                        "labels": torch.tensor([0])}]
            targets = [{"boxes": box, "labels": torch.tensor([0]),
                        "image": torch.rand(3, 16, 16)}]
            built.update(None, targets)  # training steps give no detections
        else:
            outputs, targets = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        if getattr(built, "needs_inputs", False):
            built.observe_inputs(torch.rand(2, 1, 8, 8) if kind == "image"
                                 else torch.rand(2, 3, 8, 8))
        built.update(outputs, targets)
        value = built.compute()
        assert (value is None) == (info.metadata.get("goal") is None)
        if info.metadata.get("goal") is None:
            report = built.report(tmp_path, info.name)
            assert report is not None and all(p.is_file() for p in report.files)


@pytest.mark.parametrize("name", sorted(DENSE_MODELS))
def test_dense_model_builds_and_runs(name, registry):
    import torch

    params, kind, shape = DENSE_MODELS[name]
    task = _dense_task(kind)
    model = registry.build("model", name, params, task=task).eval()
    x = torch.rand(shape)
    with torch.no_grad():
        out = model(list(x) if kind == "detection" else x)
    if kind == "detection":
        assert len(out) == shape[0] and {"boxes", "scores", "labels"} <= set(out[0])
        model.train()
        losses = model(list(x), [{"boxes": torch.tensor([[4.0, 4.0, 30.0, 30.0]]),
                                  "labels": torch.tensor([1])}] * shape[0])
        assert all(torch.isfinite(v) for v in losses.values())
    elif kind == "segmentation":
        assert out.shape == (shape[0], 2, *shape[2:])
        task.check_outputs(out, name)
    else:
        assert out.shape == shape
