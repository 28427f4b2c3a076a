"""Benchmark: reading training tiles, thelper-geo's ``geotiff_tiles`` vs torchgeo.

Both sides read the same generated GeoTIFF (3-band uint8, deflate, 512-pixel internal tiles,
EPSG:32613 at 10 m, no nodata) as float32 tiles of ``TILE``² pixels on a regular grid with
stride ``STRIDE`` (overlapping windows), batched by a plain ``torch.utils.data.DataLoader``
(``BATCH`` tiles, ``num_workers=0``, in the sampler's order):

* thelper: :class:`thelper_geo.datasets.GeoTiffTiles` with ``sampling: {mode: grid}``
  (windowed reads under its default 64 MB GDAL block cache), ``default_collate``;
* torchgeo: ``RasterDataset(paths=raster)`` + ``GridGeoSampler(size, stride)`` (pixel units)
  + ``stack_samples``, torchgeo's own defaults (file handle cache, GDAL's default cache).

The raster's height and width minus ``TILE`` are multiples of ``STRIDE``, so both grids hold
the same windows (torchgeo walks rows from the south edge, thelper from the north: the order
differs, the set does not); the script checks it by comparing the sum of every pixel read by
each side (float64), and prints tiles/s per side (median of ``--repeats`` interleaved epochs,
after building each dataset: building is timed apart) and the ratio thelper/torchgeo.

torchgeo is not a dependency of the workspace: it is installed on first use with ``uv pip
install --target benchmarks/.cache/torchgeo-<python>`` ``--no-deps`` together with its
pure-Python dependencies that the workspace lacks (``geopandas``, ``einops``), reusing the
workspace's torch, rasterio, shapely, pyproj, pyogrio and pandas. If that fails (no network, no
uv), the script says why and prints thelper's figure alone.

Run: ``uv run python benchmarks/bench_geo_tiles.py [--quick] [--repeats N] [--json FILE]``
(``--quick``: a 4096² raster, 961 tiles; full: 8192², 3969 tiles). Figures on a shared
machine move with its load: the load average is printed with them.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
BENCH_DIR = HERE.parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))

from benchreport import dump_json, machine_line, median, print_table  # noqa: E402

TILE, STRIDE, BATCH = 256, 128, 16
TORCHGEO_PINS = ("torchgeo==0.8.1", "geopandas==1.2.0", "einops==0.8.2")


def write_raster(path: Path, size: int, seed: int = 0) -> None:
    """A ``size × size`` tiled 3-band uint8 GeoTIFF, written block by block (smooth random
    values: 32-pixel cells plus noise)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 200, (3, size // 32 + 1, size // 32 + 1), dtype=np.uint8)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3,
               "dtype": "uint8", "crs": "EPSG:32613", "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate",
               "transform": from_origin(400_000.0, 4_500_000.0, 10.0, 10.0)}
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            for col in range(0, size, 512):
                h, w = min(512, size - row), min(512, size - col)
                r = np.arange(row, row + h) // 32
                c = np.arange(col, col + w) // 32
                block = cells[:, r[:, None], c[None, :]]
                noise = rng.integers(0, 50, (3, h, w), dtype=np.uint8)
                dst.write(block + noise, window=Window(col, row, w, h))


def torchgeo_site() -> tuple[Path | None, str]:
    """The folder holding torchgeo and its missing dependencies, installed on first use;
    ``(None, why)`` when it cannot be installed or imported."""
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}"
    versions = "-".join(p.split("==")[1] for p in TORCHGEO_PINS)
    site = BENCH_DIR / ".cache" / f"torchgeo-{tag}-{versions}"
    marker = site / ".complete"
    if not marker.exists():
        uv = shutil.which("uv")
        if uv is None:
            return None, "uv is not installed (needed to install torchgeo into " \
                         "benchmarks/.cache/)"
        shutil.rmtree(site, ignore_errors=True)
        cmd = [uv, "pip", "install", "--python", sys.executable, "--target", str(site),
               "--no-deps", *TORCHGEO_PINS]
        print(f"installing {', '.join(TORCHGEO_PINS)} into {site.relative_to(ROOT)}",
              flush=True)
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            return None, f"{' '.join(cmd)} did not finish in 600 s"
        if res.returncode != 0:
            return None, f"{' '.join(cmd)} failed: {res.stderr.strip()[-500:]}"
        if (site / "torch").exists() or (site / "rasterio").exists():
            return None, f"a second torch/rasterio was installed into {site}; remove it"
        marker.write_text("\n".join(TORCHGEO_PINS) + "\n")
    sys.path.insert(0, str(site))
    try:
        importlib.import_module("torchgeo.datasets")
        importlib.import_module("torchgeo.samplers")
    except Exception as exc:  # an incompatible dependency: report it, keep thelper's figure
        return None, f"torchgeo cannot be imported from {site}: {type(exc).__name__}: {exc}"
    return site, ""


# ----------------------------------------------------------------------------- the sides
def thelper_loader(raster: Path) -> Any:
    from torch.utils.data import DataLoader

    from thelper_geo.datasets import GeoTiffTiles

    ds = GeoTiffTiles(rasters=[str(raster)], target="classification", class_names=["tile"],
                      sampling={"mode": "grid", "size": TILE, "stride": STRIDE},
                      min_valid_fraction=0.0)
    return DataLoader(ds, batch_size=BATCH, shuffle=False, num_workers=0), "input"


def torchgeo_loader(raster: Path) -> Any:
    from torch.utils.data import DataLoader
    from torchgeo.datasets import RasterDataset, stack_samples
    from torchgeo.samplers import GridGeoSampler

    ds = RasterDataset(paths=str(raster))
    sampler = GridGeoSampler(ds, size=TILE, stride=STRIDE)
    return DataLoader(ds, batch_size=BATCH, sampler=sampler, num_workers=0,
                      collate_fn=stack_samples), "image"


def epoch(loader: Any, key: str) -> tuple[int, float, float]:
    """``(tiles, seconds, sum of every pixel)`` of one pass over ``loader``."""
    import torch

    tiles, total = 0, 0.0
    t0 = time.perf_counter()
    for batch in loader:
        x = batch[key]
        assert x.shape[1:] == (3, TILE, TILE) and x.dtype == torch.float32, x.shape
        tiles += x.shape[0]
        total += float(x.sum(dtype=torch.float64))
    return tiles, time.perf_counter() - t0, total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="4096² raster instead of 8192²")
    ap.add_argument("--repeats", type=int, default=3, help="epochs per side (3)")
    ap.add_argument("--json", help="write the figures to this JSON file")
    args = ap.parse_args(argv)
    size = 4096 if args.quick else 8192
    import torch

    torch.set_num_threads(1)
    site, why = torchgeo_site()
    sides = {"thelper": thelper_loader}
    if site is not None:
        sides["torchgeo"] = torchgeo_loader
    else:
        print(f"torchgeo left out: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-geo-tiles-") as tmp:
        raster = Path(tmp) / "bench.tif"
        t0 = time.perf_counter()
        write_raster(raster, size)
        print(f"raster {size}x{size}x3 uint8 written in {time.perf_counter() - t0:.1f} s; "
              f"tiles {TILE}px, stride {STRIDE}, batch {BATCH}")
        loaders, build = {}, {}
        for name, make in sides.items():
            t0 = time.perf_counter()
            loaders[name] = make(raster)
            build[name] = time.perf_counter() - t0
        results: dict[str, dict[str, Any]] = {n: {"rates": [], "tiles": 0, "sum": 0.0}
                                              for n in sides}
        for _ in range(args.repeats):  # interleaved: both sides see the same machine load
            for name, (loader, key) in loaders.items():
                tiles, secs, total = epoch(loader, key)
                r = results[name]
                r["rates"].append(tiles / secs)
                r["tiles"], r["sum"] = tiles, total
    rows = []
    for name, r in results.items():
        r["tiles_per_s"] = median(r["rates"])
        r["build_s"] = build[name]
        rows.append([name, r["tiles"], f"{r['build_s']:.2f}", f"{r['tiles_per_s']:.1f}",
                     " ".join(f"{v:.1f}" for v in r["rates"])])
    print_table(f"training-tile reading, {size}² raster ({machine_line()})",
                ["side", "tiles", "build s", "tiles/s (median)", "tiles/s per epoch"], rows)
    out: dict[str, Any] = {"size": size, "tile": TILE, "stride": STRIDE, "batch": BATCH,
                           "machine": machine_line(), "sides": results}
    if "torchgeo" in results:
        a, b = results["thelper"], results["torchgeo"]
        same = a["tiles"] == b["tiles"] and abs(a["sum"] - b["sum"]) <= 1e-9 * abs(b["sum"])
        ratio = a["tiles_per_s"] / b["tiles_per_s"]
        out.update(same_pixels=same, ratio=ratio)
        print(f"\nsame windows and pixels on both sides: {same} (sums {a['sum']:.6g} vs "
              f"{b['sum']:.6g})")
        print(f"thelper/torchgeo tiles/s: {ratio:.2f}x (target >= 1.0)")
        if not same:
            print("error: the two sides did not read the same pixels")
            dump_json(args.json, out)
            return 1
    dump_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
