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

VISION = thelper_register_components()

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
}
#: torchvision models built and run in the tests (the others are only checked by name).
BUILT_MODELS = ("resnet18", "mobilenet_v3_small")


def _ids(info) -> str:
    return f"{info.kind}:{info.name}"


def test_plugin_import_is_torch_free():
    code = (
        "import sys, json\n"
        "import thelper_vision, thelper_vision.plugin\n"
        "infos = thelper_vision.plugin.thelper_register_components()\n"
        "schemas = [json.dumps(i.params.model_json_schema()) for i in infos]\n"
        "heavy = [m for m in ('torch', 'torchvision', 'PIL', 'numpy') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "", f"registration imported {out.stdout.strip()}"


def test_every_component_has_test_params():
    assert {(c.kind, c.name) for c in VISION if c.kind != "model" or c.name == "simple_cnn"} \
        == set(PARAMS)


def test_registry_holds_the_vision_components(registry):
    mine = {(c.kind, c.name): c for c in registry.components()
            if c.distribution == "thelper-vision"}
    assert set(mine) == {(c.kind, c.name) for c in VISION}
    for info in VISION:
        assert mine[(info.kind, info.name)].plugin == "vision"
        for alias in info.aliases:
            assert registry.canonical(info.kind, alias) == info.name


@pytest.mark.parametrize("info", VISION, ids=_ids)
def test_params_are_documented(info):
    schema = info.params.model_json_schema()
    assert info.description
    for field, prop in schema.get("properties", {}).items():
        assert prop.get("description"), f"{info.name}.{field} has no docstring"
    with pytest.raises(Exception, match="xtra"):
        info.params.model_validate({"no_such_param": 1})


@pytest.mark.parametrize("info", VISION, ids=_ids)
def test_component_builds(info, registry, digits_folder):
    import torch
    from torchvision.models import list_models

    task = Classification([str(i) for i in range(10)])
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
