"""Benchmark: thelper-geo's sliding-window inference vs the bare model forward.

A generated tiled 3-band uint8 GeoTIFF (smooth random values; deflate, 512-px internal
tiles, EPSG:32613, no nodata) is predicted whole by :class:`thelper_geo.inference.SlidingWindow`
(class map only: no probabilities, no polygons), as ``thelper infer SESSION raster.tif
--no-polygons`` does: windowed reads under a capped GDAL block cache, the session's
preprocessing (``geotiff_tiles`` normalisation, the task's collation), the model, cosine
blending and block-by-block writing. The *bare* side is the same model's forward alone over
the same number of windows, in the same batches, on inputs already in memory: no reading,
no blending, no writing. Throughput ratio = thelper windows/s / bare windows/s, by wall time
and by process CPU time; on a loaded machine the third figure is the robust one: the share of
the thelper run's own wall time spent in the model's forward (timed inside the same process).

The model is fixed so that the ratio means the same thing in every run: thelper-vision's
``unet`` (Ronneberger et al. 2015: ``base_channels=8``, ``depth=3``, 2 classes), 256-pixel
windows overlapping by 64 (stride 192), batches of 16, random initial weights (seed 0).

Every measurement runs in a fresh process (this script re-invoked with ``--child``) that
reports its peak resident set size (``VmHWM``): memory must stay flat in the raster size,
so thelper is run on two sizes (``--quick``: 2048² and 4096²; full: 5000² and 20000²).
The bare forward runs in two halves of the large raster's windows, one before and one
after thelper's run on it: a shared VM's speed drifts by up to 20 % within minutes
(measured: the same bare run took 102 s and 123 s back to back), and the halves put that
drift on both sides of the ratio alike.

Run: ``uv run python benchmarks/bench_geo_infer.py [--quick] [--threads N] [--device D]
[--json FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
TILE, OVERLAP, BATCH = 256, 64, 16
MODEL = {"base_channels": 8, "depth": 3}
CLASSES = ["background", "foreground"]
CACHE_MB = 64


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB (``VmHWM``)."""
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def write_raster(path: Path, size: int, seed: int = 0) -> None:
    """A ``size × size`` tiled 3-band uint8 GeoTIFF, written in 512-pixel blocks (smooth
    random values: 32-pixel cells plus noise)."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32613", "transform": from_origin(400000, 4500000, 1.0, 1.0),
               "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate",
               "BIGTIFF": "IF_SAFER"}
    with rasterio.Env(GDAL_CACHEMAX=CACHE_MB * 2**20), rasterio.open(path, "w", **profile) as dst:
        for y in range(0, size, 512):
            for x in range(0, size, 512):
                h, w = min(512, size - y), min(512, size - x)
                cells = rng.integers(0, 240, (3, h // 32 + 1, w // 32 + 1), dtype=np.uint8)
                block = np.repeat(np.repeat(cells, 32, axis=1), 32, axis=2)[:, :h, :w]
                noise = rng.integers(0, 16, (3, h, w), dtype=np.uint8)
                dst.write(block + noise, window=Window(x, y, w, h))


def _model(device: str) -> Any:
    import torch

    from thelper_vision.seg_models import UNet

    torch.manual_seed(0)
    return UNet(len(CLASSES), 3, **MODEL).to(device).eval()


def _windows(size: int) -> int:
    from thelper_geo.inference import window_origins

    return len(window_origins(size, TILE, TILE - OVERLAP)) ** 2


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ------------------------------------------------------------------------------- child
def child(mode: str, raster: Path, size: int, device: str, threads: int,
          windows: int = 0) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    model = _model(device)
    n = windows or _windows(size)
    if mode == "bare":
        x = torch.rand(BATCH, 3, TILE, TILE, device=device)
        with torch.inference_mode():
            model(x[:2])  # warm-up (allocator, kernels)
            _sync(device)
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, n, BATCH):
                out = model(x[:min(BATCH, n - i)])
            _sync(device)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        del out
    else:
        from thelper.plugins import get_plugin_manager
        from thelper.predict import Predictor
        from thelper_geo.inference import SlidingWindow
        from thelper_geo.outputs import components
        from thelper_vision.tasks import Segmentation

        registry = get_plugin_manager().registry
        for info in components():
            if registry.canonical(info.kind, info.name) is None:
                registry.add(info)
        spec = {"type": "geotiff_tiles", "params": {"bands": [1, 2, 3], "scale": 255.0,
                                                    "gdal_cache_mb": CACHE_MB,
                                                    "target": "segmentation"}}
        predictor = Predictor(Segmentation(CLASSES), model, decoder_spec=spec,
                              input_shape=[3, TILE, TILE], device=device, batch_size=BATCH,
                              registry=registry)
        runner = SlidingWindow(predictor, tile_size=TILE, overlap=OVERLAP, polygons=False)
        forward_seconds = [0.0]
        model_forward = predictor._forward

        def timed(x: Any) -> Any:  # the model's own share of the run, same process and time
            t = time.perf_counter()
            y = model_forward(x)
            _sync(device)
            forward_seconds[0] += time.perf_counter() - t
            return y

        predictor._forward = timed
        with torch.inference_mode():
            model(torch.rand(2, 3, TILE, TILE, device=device))  # same warm-up
        with tempfile.TemporaryDirectory(prefix="thelper-bench-geo-") as out:
            start, cpu = time.perf_counter(), time.process_time()
            files = runner.run(raster, Path(out))
            _sync(device)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            written = sum(f.stat().st_size for f in files)
    result = {"mode": mode, "size": size, "windows": n, "seconds": seconds, "cpu_seconds": cpu,
              "peak_kib": peak_rss_kib(), "torch": torch.__version__}
    if mode == "thelper":
        result["written_bytes"] = written
        result["forward_seconds"] = forward_seconds[0]
    return result


def _run_child(mode: str, raster: Path, size: int, args: argparse.Namespace,
               windows: int = 0) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--child", mode, "--raster", str(raster), "--size",
           str(size), "--device", args.device, "--threads", str(args.threads),
           "--windows", str(windows)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parents[1])
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise RuntimeError(f"child {mode} {size} failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="2048² and 4096² instead of 5000² "
                   "and 20000²")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", choices=("bare", "thelper"), help=argparse.SUPPRESS)
    p.add_argument("--raster", default=None, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--windows", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, Path(args.raster), args.size, args.device,
                               args.threads, args.windows)))
        return 0

    import benchreport as br

    small, large = (2048, 4096) if args.quick else (5000, 20000)
    print(f"bench_geo_infer: {br.machine_line(f'(children use {args.threads} thread(s))')}")
    print(f"model unet(base_channels={MODEL['base_channels']}, depth={MODEL['depth']}), "
          f"{len(CLASSES)} classes; windows {TILE} px, overlap {OVERLAP}, batch {BATCH}, "
          f"device {args.device}; GDAL_CACHEMAX {CACHE_MB} MiB")
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="thelper-bench-geo-") as tmp:
        rasters = {}
        for size in (small, large):
            rasters[size] = Path(tmp) / f"raster-{size}.tif"
            start = time.perf_counter()
            write_raster(rasters[size], size)
            print(f"wrote {size}x{size} test raster in {time.perf_counter() - start:.1f} s")
        # the bare forward runs in two halves, before and after the thelper run, so that a
        # machine whose speed drifts (a shared VM: +-20 % within minutes, measured) weighs
        # on both sides alike
        total = _windows(large)
        runs = {"bare (first half)": _run_child("bare", rasters[large], large, args,
                                                total // 2)}
        runs[f"thelper {large}"] = _run_child("thelper", rasters[large], large, args)
        runs["bare (second half)"] = _run_child("bare", rasters[large], large, args,
                                                total - total // 2)
        runs[f"thelper {small}"] = _run_child("thelper", rasters[small], small, args)
    halves = [runs["bare (first half)"], runs["bare (second half)"]]
    bare = {"mode": "bare", "size": large, "windows": total,
            "seconds": sum(h["seconds"] for h in halves),
            "cpu_seconds": sum(h["cpu_seconds"] for h in halves),
            "peak_kib": max(h["peak_kib"] for h in halves)}
    runs["bare (both halves)"] = bare
    big, little = runs[f"thelper {large}"], runs[f"thelper {small}"]
    ratio = (big["windows"] / big["seconds"]) / (bare["windows"] / bare["seconds"])
    cpu_ratio = bare["cpu_seconds"] / big["cpu_seconds"]
    rows = []
    for label, r in runs.items():
        mpx = r["size"] ** 2 / 1e6 if r["mode"] == "thelper" else r["windows"] * TILE ** 2 / 1e6
        rows.append([label, f"{r['size']}²", r["windows"], f"{r['seconds']:.1f}",
                     f"{r['cpu_seconds']:.1f}",
                     f"{r['windows'] / r['seconds']:.1f}", f"{mpx / r['seconds']:.2f}",
                     f"{r['peak_kib'] / 1024:.0f}"])
    br.print_table("Sliding-window inference: thelper vs the bare model forward",
                   ["run", "raster", "windows", "seconds", "CPU s", "windows/s", "Mpx/s",
                    "peak RSS MiB"], rows)
    flat = big["peak_kib"] / little["peak_kib"]
    share = big["forward_seconds"] / big["seconds"]
    print(f"\nthroughput thelper/bare ({large}²): **{ratio:.3f}** wall, {cpu_ratio:.3f} process "
          "CPU time (target >= 0.9)")
    print(f"model forward inside the thelper run ({large}²): **{share:.3f}** of its wall time "
          "(the ratio measured within one process: robust to a shared machine's load)")
    print(f"peak RSS {large}² / {small}²: **{flat:.3f}** (target <= 1.1); "
          f"{large}²: {big['peak_kib'] / 1024:.0f} MiB (target <= 1536)")
    print(f"\nload average at the end: {br.loadavg()}")
    results = {"runs": runs, "throughput_ratio": ratio, "cpu_ratio": cpu_ratio,
               "forward_share": share, "rss_ratio": flat,
               "tile": TILE, "overlap": OVERLAP, "batch": BATCH, "model": MODEL}
    br.dump_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
