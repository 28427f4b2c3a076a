"""Benchmark 2: thelper's training loader vs a plain ``DataLoader``.

thelper's side is the training ``DataLoader`` that ``thelper.build.build_data`` makes for a
session (``SplitDataset`` over the split's indices, dict samples, the config's augmentations
and base transforms, ``EpochSampler``), seeded before each pass as ``Trainer._seed_epoch``
does. The raw side is a plain ``DataLoader`` over a tuple ``Dataset`` holding the same samples
with the same transforms (torchvision ``v2``), augmentations drawing from the global RNG. The
*exact* side is the raw one with thelper's per-batch augmentation seeding replicated by hand:
its batches must equal thelper's (checked on the first pass; the script exits 1 otherwise).

Timed: full passes over the training split (no model), sides rotating every pass. Reported:
samples/s (median of the passes) and the thelper/raw and thelper/exact throughput ratios
(medians of the per-pass ratios). Target: thelper/raw >= 0.98.

Run: ``uv run python benchmarks/bench_data.py [--quick] [--passes P]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import benchlib as bl
import torch

SIDES = ("thelper", "raw", "exact")


def _cases(quick: bool) -> list[tuple[str, str, int, int | None]]:
    """``(label, case, workers, n)``."""
    rows = [("digits, random_affine, workers 0", "digits", 0, None)]
    if not quick:
        rows += [("digits, random_affine, workers 2", "digits", 2, None),
                 ("crops 64x64, flip + normalize, workers 0", "resnet18", 0, 480)]
    return rows


def _timed_pass(loader: Any) -> tuple[float, int, list[Any]]:
    batches = []
    n = 0
    t0 = time.perf_counter()
    for batch in loader:
        x = batch[0] if isinstance(batch, list | tuple) else batch[next(iter(batch))]
        n += len(x)
        batches.append(batch)
    return time.perf_counter() - t0, n, batches


def _as_pairs(batches: list[Any], input_key: str, label_key: str) -> list[tuple[Any, Any]]:
    return [(b[input_key], b[label_key]) if isinstance(b, dict) else (b[0], b[1])
            for b in batches]


def bench_case(case: str, workers: int, n: int | None, passes: int, quick: bool
               ) -> dict[str, Any]:
    cfg = bl.case_config(case, 1, n, quick=quick)
    cfg["loaders"]["workers"] = workers
    bl.ThelperRun.check_replica()
    th, tmp = bl.thelper_session(cfg)
    trainer = th.trainer
    task = trainer.task
    (_, indices), = th.train_indices().items()
    raw = bl.RawRun(case, indices, n=n, workers=workers)
    exact = bl.RawRun(case, indices, n=n, workers=workers, exact=True)
    loaders = {"thelper": trainer.data.loaders["train"], "raw": raw.loader,
               "exact": exact.loader}
    seeders = {"thelper": trainer._seed_epoch, "raw": raw.seed_epoch,
               "exact": exact.seed_epoch}
    rates: dict[str, list[float]] = {s: [] for s in SIDES}
    ratios: dict[str, list[float]] = {"raw": [], "exact": []}
    mismatch = 0.0
    load = [bl.loadavg().split()[0]]
    for p in range(passes + 1):  # pass 0 is a warm-up
        res = {}
        for side in SIDES[p % 3:] + SIDES[:p % 3]:
            seeders[side](p + 1)
            res[side] = _timed_pass(loaders[side])
        if p == 0:
            a = _as_pairs(res["thelper"][2], task.input_key, task.label_key)
            b = _as_pairs(res["exact"][2], "0", "1")
            assert len(a) == len(b), (len(a), len(b))
            for (xa, ya), (xb, yb) in zip(a, b, strict=True):
                mismatch = max(mismatch, float((xa.float() - xb.float()).abs().max()),
                               float((ya - yb).abs().max()))
            continue
        for side in SIDES:
            rates[side].append(res[side][1] / res[side][0])
        ratios["raw"].append(rates["thelper"][-1] / rates["raw"][-1])
        ratios["exact"].append(rates["thelper"][-1] / rates["exact"][-1])
        load.append(bl.loadavg().split()[0])
    del th
    tmp.cleanup()
    return {"samples": len(indices), **{f"{s}_sps": bl.median(rates[s]) for s in SIDES},
            "ratio_raw": bl.median(ratios["raw"]), "ratio_exact": bl.median(ratios["exact"]),
            "mismatch": mismatch, "load1": load, "rates": rates}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 timed pass, digits only, less data")
    p.add_argument("--passes", type=int, default=None, help="timed passes per case (9)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    passes = args.passes or (1 if args.quick else 9)
    print(f"bench_data: {bl.machine_line()}")
    print(f"{passes} timed passes per case after a warm-up pass; training split, no model")
    rows, results, ok = [], {}, True
    for label, case, workers, n in _cases(args.quick):
        res = bench_case(case, workers, n, passes, args.quick)
        results[label] = res
        print(f"  done: {label}: thelper/raw {res['ratio_raw']:.3f} (load {bl.loadavg()})",
              file=sys.stderr, flush=True)
        good = res["mismatch"] == 0.0
        ok &= good
        rows.append([label, res["samples"], f"{res['thelper_sps']:.0f}",
                     f"{res['raw_sps']:.0f}", f"{res['exact_sps']:.0f}",
                     f"**{res['ratio_raw']:.3f}**", f"{res['ratio_exact']:.3f}",
                     "identical" if good else f"DIFFER ({res['mismatch']:.1e})",
                     "/".join(res["load1"][:1] + res["load1"][-1:])])
    bl.print_table(
        "Data path: thelper train loader vs plain DataLoader, samples/s "
        "(target: thelper/raw >= 0.98)",
        ["case", "samples/pass", "thelper samples/s", "raw samples/s", "exact samples/s",
         "thelper/raw", "thelper/exact", "batches vs exact", "load1 start/end"], rows)
    print("\nraw: plain DataLoader, augmentations from the global RNG. exact: the same with "
          "thelper's per-batch\naugmentation seeding replicated by hand. Ratios are medians "
          "of per-pass throughput ratios.")
    print(f"\nload average at the end: {bl.loadavg()}")
    bl.dump_json(args.json, results)
    if not ok:
        print("error: thelper's batches differ from the exact replica's", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
