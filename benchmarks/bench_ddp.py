"""DDP row: 2 gloo ranks (``thelper run --nproc-per-node 2``) vs 1 process.

Every side trains the digits example config (``examples/digits-classification/config.yaml``:
``simple_cnn``, ``random_affine``, Adam) on the CPU with the same global batch: 32 per step in
one process, 16 per rank on two. Reported per side, from the runs' own logs: the training
samples per second (training seconds of each epoch, from ``logs/trainer.log``), the wall time
of the whole command (process start-up, data, every epoch, test), the validation accuracy per
epoch, and the time to reach the target accuracy.

On a 2-core machine two ranks share the two cores that one process uses alone: this measures
the overhead of DDP (gradient all-reduce, metric reduction, launcher), not a speed-up.

    uv run python benchmarks/bench_ddp.py              # ~3 min; --epochs E --target A
    uv run python benchmarks/bench_ddp.py --quick      # 2 epochs, no timing claims
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
THELPER = str(Path(sys.executable).parent / "thelper")
EPOCH_LINE = re.compile(r"epoch (\d+)/\d+ .*valid loss \S+ accuracy (\S+).*\((\d+\.\d+)s\)")


def _config(epochs: int, batch: int) -> dict:
    cfg = yaml.safe_load((ROOT / "examples" / "digits-classification" / "config.yaml")
                         .read_text())
    cfg["name"] = "bench-ddp"
    cfg["trainer"].update({"epochs": epochs, "progress": False, "device": "cpu"})
    cfg["trainer"]["early_stopping"] = None
    cfg["loaders"]["batch_size"] = batch
    cfg["seeds"] = {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0}
    return cfg


def run_side(nproc: int, epochs: int, tmp: Path) -> dict:
    """Train with ``nproc`` ranks; returns wall seconds, per-epoch seconds and accuracy."""
    cfg = _config(epochs, 32 // nproc)
    path = tmp / f"cfg{nproc}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    save = tmp / f"run{nproc}"
    cmd = [THELPER, "run", str(path), "--save-dir", str(save)]
    if nproc > 1:
        cmd += ["--nproc-per-node", str(nproc)]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    log = (save / "bench-ddp" / "logs" / "trainer.log").read_text()
    epochs_seen = [(int(m[1]), float(m[2]), float(m[3])) for m in EPOCH_LINE.finditer(log)]
    record = json.loads((save / "bench-ddp" / "run.json").read_text())
    train_n = json.loads((save / "bench-ddp" / "logs" / "splits.json").read_text()
                         )["sizes"]["train"]
    return {"nproc": nproc, "wall_s": wall, "epochs": epochs_seen, "train_samples": train_n,
            "test_accuracy": record["test"]["accuracy"]}


def _time_to(side: dict, target: float) -> float | None:
    elapsed = 0.0
    for _, acc, secs in side["epochs"]:
        elapsed += secs
        if acc >= target:
            return elapsed
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--target", type=float, default=0.95,
                        help="validation accuracy for the time-to-accuracy column")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    epochs = 2 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as tmp:
        sides = [run_side(1, epochs, Path(tmp)), run_side(2, epochs, Path(tmp))]
    base = sides[0]
    print(f"DDP overhead: digits example, {epochs} epochs, global batch 32, CPU (gloo)")
    print(f"{'side':<28}{'samples/s':>10}{'ratio':>8}{'wall s':>9}{'to ' + str(args.target):>10}"
          f"{'test acc':>10}")
    rates = []
    for side in sides:
        train_s = sum(secs for _, _, secs in side["epochs"])
        rate = side["train_samples"] * len(side["epochs"]) / train_s
        rates.append(rate)
        reach = _time_to(side, args.target)
        name = "1 process" if side["nproc"] == 1 else f"{side['nproc']} ranks (--nproc-per-node)"
        print(f"{name:<28}{rate:>10.0f}{rate / rates[0]:>8.3f}{side['wall_s']:>9.1f}"
              f"{(f'{reach:.1f} s' if reach is not None else 'never'):>10}"
              f"{side['test_accuracy']:>10.4f}")
    print("ratio: samples/s relative to one process (epoch seconds include validation)")
    if args.json:
        args.json.write_text(json.dumps({"sides": sides, "base": base["nproc"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
