"""Reading an epoch from a `thelper split` HDF5 archive vs decoding the same PNG files.

Data: random 128x128 RGB crops of scikit-learn's two sample photographs (china.jpg,
flower.jpg), written as a class-folder PNG tree (two classes, one per photo). The same
session config is split into an archive (raw uint8 arrays, LZ4) and read back with the
`hdf5` dataset type. Both sides are timed in the same run, alternating, over full epochs of
the training split in the main process (no workers), reading every sample once.

Usage:
    uv run python benchmarks/bench_hdf5.py [--quick] [--samples N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def make_pngs(root: Path, n: int, size: int = 128) -> None:
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = i % len(photos)
        img = photos[cls]
        y = rng.integers(0, img.shape[0] - size)
        x = rng.integers(0, img.shape[1] - size)
        folder = root / f"photo{cls}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[y:y + size, x:x + size]).save(folder / f"{i:05d}.png")


def folder_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def epoch_time(dataset) -> float:
    t0 = time.perf_counter()
    for i in range(len(dataset)):
        dataset[i]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run to prove it works")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compression", default="lz4", choices=["none", "gzip", "lz4"])
    args = parser.parse_args()
    if args.quick:
        args.samples, args.repeats = 40, 1

    from thelper.tools.archive import Hdf5Dataset, write_archive
    from thelper.tools.loading import session_data
    from thelper_vision.datasets import ImageFolder

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pngs"
        make_pngs(root, args.samples)
        cfg = {
            "name": "bench-hdf5",
            "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
            "datasets": {"photos": {"type": "image_folder", "params": {"root": str(root)}}},
            "loaders": {"train_split": {"photos": 1.0}},
            "model": {"type": "simple_cnn", "params": {"in_channels": 3}},
            "trainer": {"epochs": 1, "optimization": {"optimizer": {"type": "adam"}}},
        }
        data = session_data({"config": cfg, "seeds": cfg["seeds"]})
        archive = Path(tmp) / "photos.h5"
        t0 = time.perf_counter()
        write_archive(data, archive, compression=args.compression)
        write_s = time.perf_counter() - t0
        pngs = ImageFolder(str(root))
        h5 = Hdf5Dataset(str(archive), "train")
        assert len(pngs) == len(h5)
        epoch_time(h5)  # open the file handle once, like a loader's first batch does
        png_t, h5_t = [], []
        for _ in range(args.repeats):  # alternate to share any drift in machine load
            png_t.append(epoch_time(pngs))
            h5_t.append(epoch_time(h5))
        png_med, h5_med = statistics.median(png_t), statistics.median(h5_t)
        png_mb, h5_mb = folder_size(root) / 1e6, archive.stat().st_size / 1e6
        rows = [
            ("PNG folder (decode)", png_med, len(pngs) / png_med, png_mb),
            (f"HDF5 archive ({args.compression})", h5_med, len(h5) / h5_med, h5_mb),
        ]
        print(f"{len(pngs)} samples of 3x128x128 uint8, {args.repeats} epoch(s) each, median")
        print(f"{'source':28} {'epoch s':>9} {'samples/s':>11} {'size MB':>9}")
        for name, t, sps, mb in rows:
            print(f"{name:28} {t:9.3f} {sps:11.0f} {mb:9.2f}")
        print(f"speed-up archive vs PNG: {png_med / h5_med:.2f}x (target >= 3x); "
              f"size archive/PNG: {h5_mb / png_mb:.2f}; archive written in {write_s:.1f} s")


if __name__ == "__main__":
    main()
