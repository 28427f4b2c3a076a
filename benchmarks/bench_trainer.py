"""Benchmark 1: thelper's training epoch vs a hand-written PyTorch loop.

Both sides train the same model from the same initial weights on the same samples, in the
same batch order, with the same augmentations and dropout masks (every epoch is seeded as
``Trainer._seed_epoch`` does). Their steps interleave: after each of thelper's steps, one step
of each raw loop runs (``benchlib.InterleavedLoader``; each side keeps its own RNG stream), and
each side's epoch time is the sum of its own spans. Both sides thus run in the same seconds: on
this shared 2-core machine an epoch's time varies by up to 15 % from one epoch to the next,
so alternating whole epochs could not resolve a 2 % difference. The timed region is one
training epoch:

* thelper: the real ``Trainer.train_epoch`` of a session built as ``thelper.runner`` builds
  it: loader iteration over ``SplitDataset`` (dict samples, transforms), ``task.to_device``,
  ``task.step``, ``zero_grad``/``backward``/``step``, the running loss and every configured
  training metric, and their end-of-epoch reduction.
* raw: ``for x, y in loader: opt.zero_grad(); loss = F.cross_entropy(model(x), y);
  loss.backward(); opt.step()`` over a tuple ``Dataset`` with the same transforms; in the
  rows with metrics it also computes the same metrics by hand (``RawRun._update_metrics``:
  argmax accuracy, top-3 accuracy, a ``bincount`` confusion matrix, read once per epoch), so
  that both sides do the same work.

Not timed on either side: building, per-epoch seeding, validation, checkpoints and the
epoch-end hooks. The first epoch of every repeat is a warm-up and is not counted.
A third side, *exact*, is the raw loop with thelper's per-batch augmentation seeding
replicated by hand (see ``benchlib``): its epoch losses and final weights must equal thelper's
within 1e-6 (the script exits 1 otherwise), which proves that both do the same work; the
plain raw loop draws its augmentations from the global RNG, as any script does.
Reported: median epoch times, the medians of the per-epoch thelper/raw and thelper/exact
ratios (wall clock; process CPU time too for raw), the overhead per step (median of the
per-epoch thelper - raw differences), the largest loss difference and the 1-minute load
average at the start of each repeat.

Run: ``uv run python benchmarks/bench_trainer.py [--quick] [--repeats R] [--epochs E]``.
"""

from __future__ import annotations

import argparse
import math
import sys

import benchlib as bl
import torch

TOLERANCE = 1e-6


def _case_list(quick: bool) -> list[tuple[str, str, bool, int | None]]:
    """``(label, case, metrics, n)`` per row."""
    n = 32 if quick else 480
    rows = [("digits simple_cnn (example: 3 metrics)", "digits", True, None)]
    if not quick:
        rows.append(("digits simple_cnn (no metrics)", "digits", False, None))
    rows.append((f"resnet18 64x64, {n} crops (accuracy)", "resnet18", True, n))
    return rows


SIDES = ("thelper", "raw", "exact")


def bench_case(case: str, metrics: bool, n: int | None, repeats: int, epochs: int,
               quick: bool) -> dict[str, object]:
    cfg = bl.case_config(case, epochs, n, metrics, quick)
    bl.ThelperRun.check_replica()
    # a probe session: warms up imports and kernels, and gives thelper's train indices
    probe, tmp = bl.thelper_session(cfg)
    (name, indices), = probe.train_indices().items()
    if not quick:
        probe.train_epoch(1)
    del probe
    tmp.cleanup()
    walls: dict[str, list[float]] = {s: [] for s in SIDES}
    ratios: dict[str, list[float]] = {"raw": [], "exact": [], "cpu_raw": [], "diff_raw": []}
    max_diff = 0.0
    steps = 0
    load = []
    for _ in range(repeats):
        load.append(bl.loadavg().split()[0])
        th, tmp = bl.thelper_session(cfg)
        runs = {"raw": bl.RawRun(case, indices, n=n, metrics=metrics),
                "exact": bl.RawRun(case, indices, n=n, exact=True, metrics=metrics)}
        steps = len(runs["raw"].loader)
        for epoch in range(1, epochs + 1):
            mine, theirs = th.train_epoch_interleaved(epoch, [runs["raw"], runs["exact"]])
            res = {"thelper": mine, "raw": theirs[0], "exact": theirs[1]}
            max_diff = max(max_diff, abs(res["thelper"][2] - res["exact"][2]))
            if epoch == 1:
                continue  # warm-up
            for side in SIDES:
                walls[side].append(res[side][0])
            ratios["raw"].append(res["thelper"][0] / res["raw"][0])
            ratios["exact"].append(res["thelper"][0] / res["exact"][0])
            ratios["cpu_raw"].append(res["thelper"][1] / max(res["raw"][1], 1e-9))
            ratios["diff_raw"].append(res["thelper"][0] - res["raw"][0])
        params_diff = max(float((a.detach() - b.detach()).abs().max()) for a, b in
                          zip(th.trainer.model.parameters(), runs["exact"].model.parameters(),
                              strict=True))
        max_diff = max(max_diff, params_diff)
        del th, runs
        tmp.cleanup()
    med = {s: bl.median(walls[s]) for s in SIDES}
    return {"dataset": name, "train_samples": len(indices), "steps": steps,
            **{f"{s}_s": med[s] for s in SIDES},
            "ratio_raw": bl.median(ratios["raw"]), "ratio_exact": bl.median(ratios["exact"]),
            "cpu_ratio_raw": bl.median(ratios["cpu_raw"]),
            "overhead_ms_per_step": bl.median(ratios["diff_raw"]) / max(steps, 1) * 1e3,
            "max_abs_diff": max_diff, "timed_epochs": len(ratios["raw"]), "load1": load,
            "walls": walls}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="1 repeat, 2 epochs, tiny resnet data")
    p.add_argument("--repeats", type=int, default=None, help="fresh builds per case (4)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per repeat, incl. warm-up")
    p.add_argument("--cases", default="", help="comma-separated row numbers to run (1-based)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (1: stable on a shared 2-core machine)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 4)
    epochs = args.epochs or (2 if args.quick else 4)
    rows_wanted = {int(c) for c in args.cases.split(",") if c.strip()}
    print(f"bench_trainer: {bl.machine_line()}")
    print(f"repeats {repeats}, epochs {epochs} per repeat (first one is a warm-up), "
          "train epoch only, CPU")
    rows, results, ok = [], {}, True
    for i, (label, case, metrics, n) in enumerate(_case_list(args.quick), start=1):
        if rows_wanted and i not in rows_wanted:
            continue
        res = bench_case(case, metrics, n, repeats, epochs, args.quick)
        results[label] = res
        print(f"  done: {label}: thelper/raw {res['ratio_raw']:.3f} (load {bl.loadavg()})",
              file=sys.stderr, flush=True)
        good = res["max_abs_diff"] <= TOLERANCE and math.isfinite(res["max_abs_diff"])
        ok &= good
        rows.append([label, res["steps"], f"{res['thelper_s'] * 1e3:.1f}",
                     f"{res['raw_s'] * 1e3:.1f}", f"{res['exact_s'] * 1e3:.1f}",
                     f"**{res['ratio_raw']:.3f}**", f"{res['cpu_ratio_raw']:.3f}",
                     f"{res['ratio_exact']:.3f}", f"{res['overhead_ms_per_step']:+.2f}",
                     f"{res['max_abs_diff']:.0e} {'ok' if good else 'MISMATCH'}",
                     "/".join(res["load1"])])
    bl.print_table(
        "Trainer overhead: thelper Trainer.train_epoch vs hand-written loops "
        "(target: thelper/raw <= 1.02)",
        ["case", "steps/epoch", "thelper ms/epoch", "raw ms/epoch", "exact ms/epoch",
         "thelper/raw (wall)", "thelper/raw (CPU)", "thelper/exact (wall)",
         "overhead ms/step vs raw", "max |loss diff| vs exact", "load1 per repeat"], rows)
    print("\nraw: plain loop, augmentations from the global RNG. exact: the same loop with "
          "thelper's per-batch\naugmentation seeding replicated by hand (its losses must "
          "equal thelper's). Medians of the\ntimed epochs; ratios are medians of the "
          "per-epoch ratios (the sides' steps interleave).")
    print(f"\nload average at the end: {bl.loadavg()}; torch {torch.__version__}")
    bl.dump_json(args.json, results)
    if not ok:
        print(f"error: losses differ by more than {TOLERANCE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
