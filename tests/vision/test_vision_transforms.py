"""Vision transforms on a real photo (scikit-image's astronaut, uint8 ``(3, 512, 512)``)."""

from __future__ import annotations

import pytest
import torch

from thelper.exceptions import ComponentBuildError

#: name -> (params, expected output shape for a (3, 512, 512) input, output dtype or None
#: when the input dtype is kept).
CASES = {
    "resize": ({"size": [128, 96]}, (3, 128, 96), None),
    "center_crop": ({"size": 100}, (3, 100, 100), None),
    "random_crop": ({"size": [64, 80], "padding": 4, "padding_mode": "reflect"},
                    (3, 64, 80), None),
    "random_resized_crop": ({"size": [48, 64], "scale": [0.2, 1.0]}, (3, 48, 64), None),
    "random_horizontal_flip": ({"p": 0.5}, (3, 512, 512), None),
    "random_vertical_flip": ({"p": 0.5}, (3, 512, 512), None),
    "random_rotation": ({"degrees": 30, "fill": [0, 0, 0]}, (3, 512, 512), None),
    "random_affine": ({"degrees": [-10, 10], "translate": [0.1, 0.2], "scale": [0.8, 1.2],
                       "shear": [-5, 5, -5, 5], "interpolation": "bilinear"},
                      (3, 512, 512), None),
    "color_jitter": ({"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1},
                     (3, 512, 512), None),
    "gaussian_blur": ({"kernel_size": [5, 9], "sigma": [0.5, 3.0]}, (3, 512, 512), None),
    "normalize": ({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
                  (3, 512, 512), torch.float32),
    "to_float": ({}, (3, 512, 512), torch.float32),
    "grayscale": ({}, (1, 512, 512), None),
    "random_grayscale": ({"p": 0.5}, (3, 512, 512), None),
    "pad": ({"padding": [1, 2, 3, 4], "padding_mode": "edge"}, (3, 518, 516), None),
    "random_erasing": ({"p": 0.9, "value": 0}, (3, 512, 512), None),
    "minmax_normalize": ({"low": -1, "high": 1}, (3, 512, 512), torch.float32),
}
RANDOM = {"random_crop", "random_resized_crop", "random_horizontal_flip",
          "random_vertical_flip", "random_rotation", "random_affine", "color_jitter",
          "gaussian_blur", "random_grayscale", "random_erasing"}


#: Transforms that only make sense on joint samples (tested in test_vision_dense.py).
JOINT_ONLY = {"sanitize_boxes"}


def test_cases_cover_every_transform(registry):
    mine = {c.name for c in registry.components("transform") if c.distribution == "thelper-vision"}
    assert mine == set(CASES) | JOINT_ONLY


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_shape_dtype_and_reproducibility(registry, astronaut, name, dtype):
    params, shape, out_dtype = CASES[name]
    image = astronaut if dtype == torch.uint8 else astronaut.float() / 255
    transform = registry.build("transform", name, params)
    torch.manual_seed(1)
    first = transform(image)
    assert first.shape == shape
    assert first.dtype == (out_dtype or dtype)
    torch.manual_seed(1)
    assert torch.equal(transform(image), first)
    if name in RANDOM:  # another seed, another draw (for at least one of a few seeds)
        draws = []
        for seed in range(2, 6):
            torch.manual_seed(seed)
            draws.append(transform(image))
        assert any(not torch.equal(d, first) for d in draws)
    assert torch.equal(image, astronaut if dtype == torch.uint8 else astronaut.float() / 255)


def test_to_float_and_normalize_values(registry, astronaut):
    as_float = registry.build("transform", "torchvision.transforms.ToTensor", {})(astronaut)
    assert torch.allclose(as_float, astronaut.float() / 255)
    assert as_float.min() >= 0 and as_float.max() <= 1
    norm = registry.build("transform", "torchvision.transforms.Normalize",
                          {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    expected = as_float * 2 - 1
    assert torch.allclose(norm(astronaut), expected, atol=1e-6)
    assert torch.allclose(norm(as_float), expected, atol=1e-6)
    half = registry.build("transform", "to_float", {"dtype": "float16"})(astronaut)
    assert half.dtype == torch.float16


def test_normalize_rejects_channel_mismatch(registry, astronaut):
    norm = registry.build("transform", "normalize", {"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1]})
    grey = astronaut[:1]
    with pytest.raises(ValueError, match="3 mean/std values but the image has 1 channels"):
        norm(grey)


def test_batches_and_flips(registry, astronaut):
    batch = torch.stack([astronaut, astronaut.flip(-1)])
    flip = registry.build("transform", "torchvision.transforms.RandomHorizontalFlip", {"p": 1})
    assert torch.equal(flip(batch), batch.flip(-1))
    vflip = registry.build("transform", "random_vertical_flip", {"p": 1.0})
    assert torch.equal(vflip(astronaut), astronaut.flip(-2))


def test_resize_accepts_thelper_06_dsize(registry, astronaut):
    resize = registry.build("transform", "thelper.transforms.Resize", {"dsize": [64, 32]})
    assert resize(astronaut).shape == (3, 32, 64)  # dsize is [width, height]
    shorter = registry.build("transform", "resize", {"size": 64})
    assert shorter(astronaut[:, :256]).shape == (3, 64, 128)


@pytest.mark.parametrize(("name", "params", "message"), [
    ("resize", {"size": [1, 2, 3]}, "at most 2"),
    ("resize", {"size": 10, "dsize": [5, 5]}, "not both"),
    ("random_crop", {"size": 10, "padding": [1, 2, 3]}, "1, 2 or 4"),
    ("random_resized_crop", {"size": 10, "scale": [1.0, 0.5]}, "low <= high"),
    ("gaussian_blur", {"kernel_size": 4}, "odd"),
    ("normalize", {"mean": [0.5, 0.5], "std": [0.2]}, "one value per channel"),
    ("normalize", {"mean": [0.5], "std": [0.0]}, "greater than 0"),
    ("random_horizontal_flip", {"p": 1.5}, "less than or equal to 1"),
    ("color_jitter", {"hue": 0.8}, "less than or equal to 0.5"),
    ("grayscale", {"num_output_channels": 2}, "1 or 3"),
])
def test_invalid_params_are_reported(registry, name, params, message):
    with pytest.raises(ComponentBuildError, match=message):
        registry.build("transform", name, params)


def test_minmax_normalize_stretches_each_image(registry, astronaut):
    stretch = registry.build("transform", "minmax_normalize", {"low": -1.0, "high": 1.0})
    dim = astronaut[:, :64, :64] // 4 + 10  # values 10..73
    out = stretch(dim)
    assert float(out.min()) == -1.0 and float(out.max()) == 1.0
    per = registry.build("transform", "minmax_normalize", {"per_channel": True})(dim)
    assert per.amin(dim=(1, 2)).tolist() == [0.0] * 3 and per.amax(dim=(1, 2)).tolist() == [1.0] * 3
    assert float(stretch(torch.full((1, 4, 4), 7.0)).max()) == -1.0  # constant image
    with pytest.raises(ComponentBuildError, match="greater than low"):
        registry.build("transform", "minmax_normalize", {"low": 1.0, "high": 0.0})
