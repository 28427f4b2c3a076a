"""Benchmark 4: peak resident memory of a thelper run vs the hand-written loop.

Every measurement runs in a fresh Python process (this script re-invoked with ``--child``),
which reports its peak resident set size (``VmHWM`` of ``/proc/self/status``, or
``ru_maxrss`` where there is no ``/proc``) when it is done:

* ``import torch``: the floor every PyTorch process pays;
* raw: the plain loop of ``bench_trainer`` (tuple ``Dataset``, ``DataLoader``, model,
  optimizer), training epochs only;
* thelper train: a session built as ``thelper.runner`` builds it, then
  ``Trainer.train_epoch`` for the same epochs (what ``bench_trainer`` times);
* thelper run: the whole ``thelper.runner.run_session`` (validation every epoch, checkpoints,
  TensorBoard and ``run.json`` trackers, the final test with its reports and figures).

Cases and data are those of ``bench_trainer`` (``benchlib``). Ratios are thelper/raw.

Run: ``uv run python benchmarks/bench_memory.py [--quick] [--epochs E] [--repeats R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
MODES = ("baseline", "raw", "thelper-train", "thelper-run")


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


# ------------------------------------------------------------------------------- child
def child(mode: str, case: str, epochs: int, n: int | None, quick: bool,
          indices_file: str | None, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    if mode == "baseline":
        return {"peak_kib": peak_rss_kib()}
    import benchlib as bl

    cfg = bl.case_config(case, epochs, n, quick=quick)
    if mode == "raw":
        indices = json.loads(Path(indices_file).read_text()) if indices_file else None
        run = bl.RawRun(case, indices, n=n)
        losses = [run.train_epoch(e)[2] for e in range(1, epochs + 1)]
    elif mode == "thelper-train":
        run, tmp = bl.thelper_session(cfg)
        if indices_file and not Path(indices_file).exists():  # for the raw children
            (_, indices), = run.train_indices().items()
            Path(indices_file).write_text(json.dumps(indices))
        losses = [run.train_epoch(e)[2] for e in range(1, epochs + 1)]
        tmp.cleanup()
    elif mode == "thelper-run":
        from thelper.config import document_from_dict
        from thelper.runner import run_session

        with tempfile.TemporaryDirectory(prefix="thelper-bench-") as tmp_dir:
            session = run_session(document_from_dict(cfg), tmp_dir)
            losses = [e["loss"] for e in session.history["train"]]
    else:
        raise ValueError(mode)
    return {"peak_kib": peak_rss_kib(), "losses": losses, "torch": torch.__version__}


# ------------------------------------------------------------------------------ parent
def _run_child(mode: str, case: str, args: argparse.Namespace, n: int | None,
               indices_file: str) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE), "--child", mode, "--case", case,
           "--epochs", str(args.epochs), "--threads", str(args.threads),
           "--indices-file", indices_file]
    if n is not None:
        cmd += ["--n", str(n)]
    if args.quick:
        cmd.append("--quick")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(HERE.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parents[1])
    if out.returncode != 0:
        sys.stderr.write(out.stdout + out.stderr)
        raise RuntimeError(f"child {mode} {case} failed with exit code {out.returncode}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="digits only, 1 epoch, less data")
    p.add_argument("--epochs", type=int, default=None, help="epochs per child (3)")
    p.add_argument("--repeats", type=int, default=None, help="children per mode (2)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--case", default="digits", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--indices-file", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.epochs = args.epochs or (1 if args.quick else 3)
    if args.child:
        res = child(args.child, args.case, args.epochs, args.n, args.quick,
                    args.indices_file, args.threads)
        print(json.dumps(res))
        return 0

    import benchreport as br

    repeats = args.repeats or (1 if args.quick else 2)
    cases = [("digits simple_cnn (example)", "digits", None)]
    if not args.quick:
        cases.append(("resnet18 64x64, 480 crops", "resnet18", 480))
    # --quick: the two children that bench_trainer compares (CI proves the script works)
    modes = ("thelper-train", "raw") if args.quick else ("thelper-train", "raw", "thelper-run")
    print(f"bench_memory: {br.machine_line(f'(children use {args.threads} thread(s))')}")
    print(f"{args.epochs} epoch(s) per child, {repeats} child(ren) per mode, peak RSS (VmHWM)")
    rows, results, torch_version = [], {}, None
    floor = float("nan")
    with tempfile.TemporaryDirectory(prefix="thelper-bench-") as tmp:
        if not args.quick:
            base = [_run_child("baseline", "digits", args, None, "")["peak_kib"]
                    for _ in range(repeats)]
            floor = br.median(base) / 1024
        for label, case, n in cases:
            # the first thelper-train child writes thelper's train indices for the raw ones
            indices_file = str(Path(tmp) / f"{case}.json")
            peaks: dict[str, list[int]] = {m: [] for m in modes}
            for r in range(repeats):
                order = modes if r % 2 == 0 else (modes[0], *modes[:0:-1])
                for mode in order:
                    res = _run_child(mode, case, args, n, indices_file)
                    peaks[mode].append(int(res["peak_kib"]))
                    torch_version = res.get("torch", torch_version)
            mib = {m: br.median(v) / 1024 for m, v in peaks.items()}
            results[label] = {"mib": mib, "peaks_kib": peaks, "import_torch_mib": floor}
            run = mib.get("thelper-run")
            rows.append([label, f"{mib['raw']:.0f}", f"{mib['thelper-train']:.0f}",
                         f"**{mib['thelper-train'] / mib['raw']:.3f}**",
                         f"{run:.0f}" if run else "-",
                         f"{run / mib['raw']:.3f}" if run else "-",
                         f"{mib['thelper-train'] - mib['raw']:+.0f}"])
    br.print_table(
        "Memory: peak RSS in MiB, each in a fresh process",
        ["case", "raw", "thelper train", "thelper train/raw", "thelper run_session",
         "run_session/raw", "thelper train - raw (MiB)"], rows)
    floor_text = "not measured with --quick" if args.quick else f"{floor:.0f} MiB"
    print(f"\ntorch {torch_version}; `import torch` alone: {floor_text}. thelper run_session "
          "adds validation,\ncheckpoints, TensorBoard and run.json trackers and the final "
          "test with reports (matplotlib).")
    print(f"\nload average at the end: {br.loadavg()}")
    br.dump_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
