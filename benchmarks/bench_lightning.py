"""The digits example end to end: ``thelper run`` vs the same job as a PyTorch Lightning script.

Three sides, each run as a user runs it, in a fresh process, timed from the command's start to
its exit (interpreter start-up, imports, data, every epoch with its validation, checkpoints,
logs, the final test):

* ``thelper``: ``thelper run examples/digits-classification/config.yaml --set
  trainer.epochs=E --set trainer.progress=false``: the example as shipped, with its three
  metrics (accuracy, top-3, confusion matrix, whose figures are rendered every epoch), the
  test's classification report, checkpoints (best, latest, every ``save_freq``), TensorBoard,
  ``run.json``, the training curves (CSV and PNG).
* ``thelper accuracy-only``: the same command with ``--set 'trainer.metrics={accuracy: {type:
  accuracy}}'`` (no top-3, no confusion matrix, so no figure but the training curves; the test's
  classification report is kept): the difference from ``thelper`` is the cost of the figures.
* ``Lightning``: the same job written as a plain PyTorch Lightning script
  (:func:`lightning_main`): the example's ``simple_cnn`` written out (same layers, same
  parameter count, checked), scikit-learn's digits scaled to ``[0, 1]``, the same split sizes
  (80/10/10, stratified), batch size 32, torchvision ``v2.RandomAffine(8, translate=(0.08,
  0.08))`` on training samples, Adam (lr 0.002) with ``ReduceLROnPlateau`` on the validation
  loss (factor 0.5, patience 3), early stopping on the validation accuracy (patience 10),
  torchmetrics' accuracy on every split, ``ModelCheckpoint`` of the best validation accuracy
  (and the last), the default TensorBoard logger, then ``trainer.test(ckpt_path="best")``.

Lightning is not a dependency of the project: this script installs pinned versions of
``pytorch-lightning``, ``lightning-utilities``, ``torchmetrics`` and ``tqdm`` with ``uv pip
install --target benchmarks/.cache/lightning-... --no-deps`` (git-ignored; the workspace's
torch, NumPy, PyYAML, fsspec and packaging serve both sides: no second torch) and runs the
Lightning side with that folder on ``PYTHONPATH``. The first run needs PyPI (or uv's cache).

Every child runs with ``OMP_NUM_THREADS`` set to ``--threads`` (1 by default, as the other
benchmarks), byte-code caches warmed in a temporary ``PYTHONPYCACHEPREFIX`` (one untimed
warm-up round by default), and the sides rotate within each repeat. Reported: medians of
wall-clock and CPU (user + system) seconds per side and the ratios thelper/Lightning (target
for the full example: wall ≤ 1.0).

    uv run python benchmarks/bench_lightning.py               # 10 epochs x 3 repeats, 5-12 min
    uv run python benchmarks/bench_lightning.py --repeats 5
    uv run python benchmarks/bench_lightning.py --quick       # 2 epochs, 1 repeat, no warm-up
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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
EXAMPLE = Path("examples") / "digits-classification" / "config.yaml"
THELPER = str(Path(sys.executable).parent / "thelper")
#: What the Lightning side installs (``--no-deps``): everything else it imports (torch, NumPy,
#: PyYAML, fsspec, packaging, typing-extensions) comes from the workspace.
LIGHTNING_PINS = ("pytorch-lightning==2.6.6", "lightning-utilities==0.15.3",
                  "torchmetrics==1.9.0", "tqdm==4.70.1")
SIDES = ("thelper", "thelper-acc", "lightning")
LABELS = {"thelper": "thelper (example as shipped)",
          "thelper-acc": "thelper accuracy-only",
          "lightning": "Lightning script"}
PARAMS_LINE = re.compile(r"model simple_cnn: ([\d,]+) parameters")


# --------------------------------------------------------------------- the Lightning side
def lightning_main(epochs: int, out_dir: Path) -> dict[str, Any]:
    """The digits example as a plain PyTorch Lightning script; returns its test results.

    Args:
        epochs: Maximum number of epochs.
        out_dir: Lightning's ``default_root_dir`` (logs and checkpoints go there).

    Returns:
        ``test_accuracy``, ``params`` (the model's parameter count), ``threads`` (torch's
        intra-op threads), ``best_epoch`` and the versions of Lightning and torch.
    """
    import numpy as np
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch import nn
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, Dataset
    from torchmetrics.classification import MulticlassAccuracy
    from torchvision.transforms import v2

    class SimpleCNN(nn.Module):
        """thelper-vision's ``simple_cnn`` with the example's params, written out."""

        def __init__(self, num_classes: int = 10, in_channels: int = 1,
                     channels: tuple[int, ...] = (32, 64), hidden: int = 128,
                     dropout: float = 0.25) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            prev = in_channels
            for width in channels:
                layers += [nn.Conv2d(prev, width, 3, padding=1, bias=False),
                           nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                           nn.MaxPool2d(2, ceil_mode=True)]
                prev = width
            self.features = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(prev, hidden),
                                            nn.ReLU(inplace=True), nn.Dropout(dropout),
                                            nn.Linear(hidden, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.pool(self.features(x)))

    class Digits(Dataset):
        """``(image (1, 8, 8) float32 in [0, 1], label int64)`` pairs, optionally augmented."""

        def __init__(self, x: np.ndarray, y: np.ndarray, transform=None) -> None:
            self.x = torch.from_numpy(x)
            self.y = torch.from_numpy(y)
            self.transform = transform

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, i: int):
            x = self.x[i]
            return (self.transform(x) if self.transform else x), self.y[i]

    class LitDigits(pl.LightningModule):
        def __init__(self, lr: float = 0.002) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.model = SimpleCNN()
            self.train_acc = MulticlassAccuracy(num_classes=10, average="micro")
            self.val_acc = MulticlassAccuracy(num_classes=10, average="micro")
            self.test_acc = MulticlassAccuracy(num_classes=10, average="micro")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            self.train_acc(logits, y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            self.log("train_acc", self.train_acc, on_step=False, on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.val_acc(logits, y)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", self.val_acc)

        def test_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.test_acc(logits, y)
            self.log("test_loss", F.cross_entropy(logits, y))
            self.log("test_acc", self.test_acc)

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=3)
            return {"optimizer": opt,
                    "lr_scheduler": {"scheduler": sched, "monitor": "val_loss"}}

    pl.seed_everything(0)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # (1797, 1, 8, 8)
    y = digits.target.astype(np.int64)
    # thelper's split sizes for 1,797 samples at 80/10/10: 1438 / 180 / 179, stratified
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=179, stratify=y,
                                                      random_state=0)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=180,
                                                      stratify=y_rest, random_state=0)
    augment = v2.RandomAffine(degrees=8, translate=(0.08, 0.08))
    train = DataLoader(Digits(x_train, y_train, augment), batch_size=32, shuffle=True)
    val = DataLoader(Digits(x_val, y_val), batch_size=32)
    test = DataLoader(Digits(x_test, y_test), batch_size=32)

    model = LitDigits(lr=0.002)
    best = ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=1, save_last=True)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="auto", devices=1,
                         enable_progress_bar=False, log_every_n_steps=20,
                         default_root_dir=str(out_dir),
                         callbacks=[best, EarlyStopping(monitor="val_acc", mode="max",
                                                        patience=10)])
    trainer.fit(model, train, val)
    (result,) = trainer.test(model, test, ckpt_path="best")
    best_epoch = torch.load(best.best_model_path, map_location="cpu",
                            weights_only=False)["epoch"] + 1
    return {"test_accuracy": float(result["test_acc"]), "best_epoch": int(best_epoch),
            "params": sum(p.numel() for p in model.model.parameters()),
            "threads": torch.get_num_threads(), "lightning": pl.__version__,
            "torch": torch.__version__, "sizes": [len(y_train), len(y_val), len(y_test)]}


# ----------------------------------------------------------------------------- the parent
def lightning_site() -> Path:
    """The folder holding :data:`LIGHTNING_PINS` (installed there on first use).

    Raises:
        SystemExit: uv is missing or the installation failed.
    """
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-" + "-".join(
        p.split("==")[1] for p in LIGHTNING_PINS)
    site = BENCH_DIR / ".cache" / f"lightning-{tag}"
    marker = site / ".complete"
    if marker.exists():
        return site
    uv = shutil.which("uv")
    if uv is None:
        raise SystemExit("error: uv is needed to install Lightning into benchmarks/.cache/ "
                         "(https://docs.astral.sh/uv/); install it and run again")
    shutil.rmtree(site, ignore_errors=True)
    cmd = [uv, "pip", "install", "--python", sys.executable, "--target", str(site),
           "--no-deps", *LIGHTNING_PINS]
    print(f"installing {', '.join(LIGHTNING_PINS)} into {site.relative_to(ROOT)}", flush=True)
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    if (site / "torch").exists():  # --no-deps: the workspace's torch must be the only one
        raise SystemExit(f"error: a second torch was installed into {site}")
    marker.write_text("\n".join(LIGHTNING_PINS) + "\n")
    return site


def side_command(side: str, epochs: int, save_dir: Path) -> list[str]:
    """The command line of one side (run from the repository root)."""
    if side == "lightning":
        return [sys.executable, str(HERE), "--lightning-child", "--epochs", str(epochs),
                "--out", str(save_dir)]
    cmd = [THELPER, "run", str(EXAMPLE), "--set", f"trainer.epochs={epochs}",
           "--set", "trainer.progress=false", "--save-dir", str(save_dir)]
    if side == "thelper-acc":
        cmd += ["--set", "trainer.metrics={accuracy: {type: accuracy}}"]
    return cmd


def run_side(side: str, epochs: int, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one side in a fresh process; returns its wall and CPU seconds and test results.

    Raises:
        SystemExit: The command failed or did not write what it should.
    """
    save_dir = Path(tempfile.mkdtemp(prefix=f"{side}-", dir=tmp))
    cmd = side_command(side, epochs, save_dir)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if res.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} exited {res.returncode}:\n"
                         f"{(res.stdout + res.stderr)[-3000:]}")
    out: dict[str, Any] = {"side": side, "wall_s": wall, "cpu_s": cpu}
    if side == "lightning":
        out.update(json.loads(res.stdout.strip().splitlines()[-1]))
        out["files"] = sum(1 for p in save_dir.rglob("*") if p.is_file())
    else:
        session = save_dir / "digits-classification"
        record = json.loads((session / "run.json").read_text())
        if record.get("status") != "completed":
            raise SystemExit(f"error: {session} ended {record.get('status')!r}")
        out["test_accuracy"] = record["test"]["accuracy"]
        out["best_epoch"] = record["test"].get("epoch")
        found = PARAMS_LINE.search(res.stdout + res.stderr)
        out["params"] = int(found[1].replace(",", "")) if found else None
        out["files"] = sum(1 for p in session.rglob("*") if p.is_file())
        out["figures"] = sorted(str(p.relative_to(session)) for p in session.rglob("*.png"))
    shutil.rmtree(save_dir, ignore_errors=True)
    return out


def child_env(threads: int, pycache: Path, site: Path) -> dict[str, str]:
    """The children's environment: ``threads`` OpenMP threads, warm byte-code caches, and
    the Lightning folder on ``PYTHONPATH`` (only the Lightning side imports from it)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               PYTHONPYCACHEPREFIX=str(pycache), COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join([str(site), *filter(None, [env.get("PYTHONPATH")])])
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="2 epochs, 1 repeat, no warm-up")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (10)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per side (3)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed rounds first, to warm byte-code and disk caches (1)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads per child")
    p.add_argument("--json", default=None, help="also write the raw results to this file")
    p.add_argument("--lightning-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    epochs = args.epochs or (2 if args.quick else 10)
    if args.lightning_child:
        print(json.dumps(lightning_main(epochs, args.out)))
        return 0

    sys.path.insert(0, str(BENCH_DIR))
    import benchreport as br

    repeats = args.repeats or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    site = lightning_site()
    print(f"bench_lightning: {br.machine_line(f'(children: OMP_NUM_THREADS={args.threads})')}")
    print(f"digits example end to end, {epochs} epoch(s), {repeats} timed run(s) per side "
          f"(+{warmup} warm-up), sides rotating; Lightning from {site.relative_to(ROOT)}",
          flush=True)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory(prefix="thelper-bench-lightning-") as tmp_dir:
        tmp = Path(tmp_dir)
        env = child_env(args.threads, tmp / "pycache", site)
        for r in range(-warmup, repeats):
            order = SIDES[r % 3:] + SIDES[:r % 3]
            for side in order:
                res = run_side(side, epochs, tmp, env)
                tag = "warm-up" if r < 0 else f"repeat {r + 1}/{repeats}"
                print(f"  {tag}: {side:<12} wall {res['wall_s']:6.2f} s  cpu "
                      f"{res['cpu_s']:6.2f} s  test acc {res['test_accuracy']:.4f}", flush=True)
                if r >= 0:
                    runs[side].append(res)

    lit = runs["lightning"][0]
    mismatch = [s for s in ("thelper", "thelper-acc")
                if runs[s][0]["params"] != lit["params"]]
    if mismatch:
        print(f"error: the Lightning model has {lit['params']} parameters, thelper's "
              f"simple_cnn {runs[mismatch[0]][0]['params']}: not the same architecture")
        return 1
    if lit["threads"] != args.threads:
        print(f"error: the Lightning child ran {lit['threads']} torch threads, "
              f"not {args.threads}")
        return 1

    med = {s: {k: br.median([x[k] for x in v]) for k in ("wall_s", "cpu_s")}
           for s, v in runs.items()}
    paired = {s: br.median([a["wall_s"] / b["wall_s"]
                            for a, b in zip(runs[s], runs["lightning"], strict=True)])
              for s in SIDES}
    rows = []
    for s in SIDES:
        figures = runs[s][0].get("figures")
        rows.append([LABELS[s], f"{med[s]['wall_s']:.2f}",
                     f"{min(x['wall_s'] for x in runs[s]):.2f}", f"{med[s]['cpu_s']:.2f}",
                     f"**{med[s]['wall_s'] / med['lightning']['wall_s']:.3f}**",
                     f"{paired[s]:.3f}", f"{med[s]['cpu_s'] / med['lightning']['cpu_s']:.3f}",
                     f"{br.median([x['test_accuracy'] for x in runs[s]]):.4f}",
                     runs[s][0]["files"], "-" if figures is None else len(figures)])
    br.print_table(
        f"digits example end to end, {epochs} epochs: medians of {repeats} run(s) per side",
        ["side", "wall s", "min wall s", "CPU s", "/Lightning (wall)",
         "/Lightning (paired wall)", "/Lightning (CPU)", "test acc", "files", "PNG figures"],
        rows)
    full = med["thelper"]["wall_s"] / med["lightning"]["wall_s"]
    figs = med["thelper"]["wall_s"] - med["thelper-acc"]["wall_s"]
    print(f"\nthelper/Lightning (wall, medians): {full:.3f} (target <= 1.0: "
          f"{'met' if full <= 1.0 else 'NOT met'}); figures and the top-3 metric cost "
          f"{figs:+.2f} s wall, {med['thelper']['cpu_s'] - med['thelper-acc']['cpu_s']:+.2f} s "
          f"CPU over accuracy-only")
    print(f"Lightning {lit['lightning']}, torch {lit['torch']}; figures of the thelper run: "
          f"{', '.join(runs['thelper'][0]['figures'])}")
    print(f"load average at the end: {br.loadavg()}")
    br.dump_json(args.json, {"epochs": epochs, "repeats": repeats, "threads": args.threads,
                             "pins": LIGHTNING_PINS, "medians": med, "paired_ratio": paired,
                             "runs": runs})
    return 0


if __name__ == "__main__":
    sys.exit(main())
