"""Benchmark: the MLflow tracker's overhead on training time.

The digits example (``examples/digits-classification``, simple_cnn, 45 steps an epoch) is
trained in one process, alternately with ``trackers: [{type: mlflow}]`` and
``trainer.params.log_every_n_steps: 1`` (every optimizer step sends ``step/loss`` and
``step/lr``: the most the tracker is asked to do) and without the tracker (same
``log_every_n_steps``, so the run record's own per-step writes are on both sides). Sessions
alternate ``tracked, plain, plain, tracked, ...`` so that both sides share the machine's
load. An epoch's time is ``run.json``'s ``epochs[].duration_s`` (from one ``epoch_end`` to the
next: training, validation, checkpoints, hooks); the first epoch of each session is a
warm-up (imports, the local store's tables) and is not counted. Reported: the median epoch
time of each side and their ratio (target: at most 1.05), the median of the ratios of
adjacent sessions (less sensitive to a machine whose speed drifts), and the CPU time of the
tracker's sender process (a child process: it is not in the training process's time).

The tracker logs to ``--tracking-uri`` (default: the tracker's own default, a local SQLite
store in the save directory, no server).

Run: ``uv run python benchmarks/bench_tracking.py [--repeats R] [--epochs E]
[--tracking-uri URI]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "digits-classification" / "config.yaml"


def _config(epochs: int, tracked: bool, uri: str | None, index: int) -> dict[str, Any]:
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg = copy.deepcopy(cfg)
    cfg["name"] = f"{'tracked' if tracked else 'plain'}-{index}"
    cfg["trainer"]["epochs"] = epochs
    cfg["trainer"]["device"] = "cpu"
    cfg["trainer"]["progress"] = False
    cfg["trainer"]["early_stopping"] = None
    cfg["trainer"].setdefault("params", {})["log_every_n_steps"] = 1
    if tracked:
        params: dict[str, Any] = {"experiment": "bench-tracking"}
        if uri:
            params["tracking_uri"] = uri
        cfg["trackers"] = [{"type": "mlflow", "params": params}]
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2, help="sessions per side")
    ap.add_argument("--epochs", type=int, default=4, help="epochs per session")
    ap.add_argument("--tracking-uri", default=None, help="MLflow tracking URI")
    args = ap.parse_args()

    from thelper.config import document_from_dict
    from thelper.plugins import ThelperPluginManager
    from thelper.runner import run_session

    times: dict[bool, list[float]] = {True: [], False: []}
    sessions: list[tuple[bool, float]] = []  # (tracked, median epoch time) in run order
    sender_cpu: list[float] = []
    order = [True, False, False, True] * ((args.repeats + 1) // 2)
    counts = {True: 0, False: 0}
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        for tracked in order:
            if counts[tracked] >= args.repeats:
                continue
            counts[tracked] += 1
            pm = ThelperPluginManager(autoload=True, blocked=["tensorboard"])
            cfg = _config(args.epochs, tracked, args.tracking_uri, counts[tracked])
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            session = run_session(document_from_dict(cfg), Path(tmp), pm)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            rec = json.loads((session.session_dir / "run.json").read_text())
            durations = [e["duration_s"] for e in rec["epochs"]][1:]
            times[tracked].extend(durations)
            sessions.append((tracked, statistics.median(durations)))
            if tracked:
                entry = rec["mlflow"][-1]
                assert entry["pending"]["metrics"] == 0, entry
                sender_cpu.append(after.ru_utime + after.ru_stime
                                  - before.ru_utime - before.ru_stime)
            print(f"{cfg['name']}: epochs {', '.join(f'{d:.3f}' for d in durations)} s",
                  file=sys.stderr)
    tracked = statistics.median(times[True])
    plain = statistics.median(times[False])
    # sessions side by side in time (tracked, plain, plain, tracked, ...) share the
    # machine's state: the median of their ratios is less sensitive to its drift
    pairs = [a[1] / b[1] if a[0] else b[1] / a[1]
             for a, b in zip(sessions[0::2], sessions[1::2], strict=False)]
    load = os.getloadavg()[0]
    print(f"median epoch time: with MLflow tracker (log_every_n_steps: 1) {tracked:.3f} s, "
          f"without {plain:.3f} s; ratio {tracked / plain:.3f} "
          f"({len(times[True])} + {len(times[False])} epochs, load average {load:.1f})")
    print(f"adjacent sessions: ratios {', '.join(f'{r:.3f}' for r in pairs)}; median "
          f"{statistics.median(pairs):.3f}. Sender process: "
          f"{statistics.median(sender_cpu):.2f} s of CPU a session "
          f"({args.epochs} epochs, start-up included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
