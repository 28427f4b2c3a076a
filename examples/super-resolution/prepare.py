"""Write the super-resolution images: grey photographs shipped inside scikit-image and
scikit-learn, split by image.

* training (``data/train``): scikit-image's ``astronaut``, ``coffee``, ``chelsea``,
  ``rocket`` and scikit-learn's ``china.jpg`` and ``flower.jpg`` (``load_sample_images``);
* test (``data/test``): scikit-image's ``camera`` (the "cameraman") and ``brick`` (a brick
  wall texture), both 512x512, never seen in training; evaluated as whole images.

Colour images are converted to luminance (ITU-R 601-2, Pillow's ``L``), as SRCNN is
evaluated on the Y channel. The low-resolution inputs are made later, by the
``super_resolution_folder`` dataset (downscaling by the config's ``scale``).

Usage (from the repository root)::

    uv run python examples/super-resolution/prepare.py [OUT_DIR]

prints the bicubic baseline (PSNR and SSIM of the bicubic-upsampled inputs against the
targets) of the test images for the config's settings (scale 3, 3-pixel border shaved).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN = ("astronaut", "coffee", "chelsea", "rocket")
TEST = ("camera", "brick")
SCALE = 3


def _grey(array: np.ndarray) -> Image.Image:
    image = Image.fromarray(array)
    return image.convert("L") if image.mode != "L" else image


def prepare(out: Path) -> None:
    """Write ``out/train/*.png`` and ``out/test/*.png``."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "test").mkdir(parents=True, exist_ok=True)
    for name in TRAIN:
        _grey(getattr(data, name)()).save(out / "train" / f"{name}.png")
    sample = load_sample_images()
    for filename, array in zip(sample.filenames, sample.images, strict=True):
        _grey(array).save(out / "train" / f"{Path(filename).stem}.png")
    for name in TEST:
        _grey(getattr(data, name)()).save(out / "test" / f"{name}.png")


def bicubic_baseline(folder: Path, scale: int = SCALE) -> dict[str, float]:
    """PSNR (dB) and SSIM of the dataset's bicubic-upsampled inputs on ``folder``."""
    import torch

    from thelper_vision.dense_datasets import SuperResolutionFolder
    from thelper_vision.metrics import PSNR, SSIM

    ds = SuperResolutionFolder(str(folder), scale=scale)
    psnr, ssim = PSNR(border=scale), SSIM(border=scale)
    for i in range(len(ds)):
        pair = ds[i]["input"]
        x = pair["image"].as_subclass(torch.Tensor)[None].float() / 255
        y = pair["target"].as_subclass(torch.Tensor)[None].float() / 255
        psnr.update(x, y)
        ssim.update(x, y)
    return {"bicubic_psnr": psnr.compute(), "bicubic_ssim": ssim.compute(), "images": len(ds)}


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "data"
    prepare(target)
    figures = bicubic_baseline(target / "test")
    print(f"wrote {target}; test baseline: " + ", ".join(
        f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items()))
