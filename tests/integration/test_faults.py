"""Fault tests: kill a run anywhere, resume, get the same model; failures stop cleanly.

The kill tests run `thelper` in a subprocess that SIGKILLs itself at a seeded random point
of the run (an optimizer step, a validation or test batch, or halfway through writing a
checkpoint), `thelper resume` it after each kill, and compare the final weights with an
uninterrupted run, bit for bit. The points are events of the run, not times, so the
schedule does not depend on the machine's speed.
"""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from thelper.config import document_from_dict
from thelper.exceptions import CheckpointError, DataError, NonFiniteLossError
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.registry import ComponentInfo, Params
from thelper.runner import resume_session, run_session

THELPER = str(Path(sys.executable).parent / "thelper")

#: ``python KILLER POINT ARGS...`` runs ``thelper ARGS...`` and, at the event ``POINT`` of
#: the run (JSON), sends itself ``SIGKILL`` (``{"kill": point}``) or ``SIGTERM``
#: (``{"term": point}``); ``{"record": file}`` appends every event to ``file`` instead, one
#: JSON line each. The events, in the order of an uninterrupted run:
#: ``["step", S]`` after the optimizer step that makes S steps (before its checkpoint),
#: ``["valid", E, B]`` / ``["test", B]`` after the forward of batch B of epoch E's validation
#: / of the final test, ``["save", NAME, S]`` when checkpoint NAME (at step S) is written to
#: its temporary file, before the rename that publishes it.
KILLER = r"""
import json, os, signal, sys

import torch

from thelper.cli import main
from thelper.train import trainer as t

spec = json.loads(sys.argv[1])
record = open(spec["record"], "a") if "record" in spec else None
target = spec.get("kill") or spec.get("term")
signum = signal.SIGKILL if "kill" in spec else signal.SIGTERM
state = {"fit": False, "split": None, "epoch": None, "batch": 0, "saving": None}


def point(*key):
    if record is not None:
        record.write(json.dumps(key) + "\n")
        record.flush()
    elif list(key) == target:
        os.kill(os.getpid(), signum)


def wrap(owner, name, make):
    setattr(owner, name, make(getattr(owner, name)))


def optimizer_step(original):
    def step(self):
        original(self)
        point("step", self.step + 1)
    return step


def fit(original):
    def run(self):
        state["fit"] = True
        try:
            return original(self)
        finally:
            state["fit"] = False
    return run


def evaluate(original):
    def run(self, split, epoch, *args, **kwargs):
        state.update(split=split, epoch=epoch, batch=0)
        try:
            return original(self, split, epoch, *args, **kwargs)
        finally:
            state["split"] = None
    return run


def forward(original):
    def run(self, batch, model=None):
        out = original(self, batch, model)
        if state["split"] is not None:
            state["batch"] += 1
            if state["fit"]:
                point("valid", state["epoch"], state["batch"])
            else:
                point("test", state["batch"])
        return out
    return run


def save_checkpoint(original):
    def run(data, path):
        state["saving"] = os.path.basename(path)
        try:
            return original(data, path)
        finally:
            state["saving"] = None
    return run


def torch_save(original):
    def run(obj, f, *args, **kwargs):
        original(obj, f, *args, **kwargs)
        if state["saving"] is not None:
            point("save", state["saving"], obj.get("step"))
    return run


wrap(t.Trainer, "optimizer_step", optimizer_step)
wrap(t.Trainer, "fit", fit)
wrap(t.Trainer, "evaluate", evaluate)
wrap(t.Trainer, "_forward", forward)
wrap(t, "save_checkpoint", save_checkpoint)
wrap(torch, "save", torch_save)
sys.exit(main(sys.argv[2:]))
"""

#: ``resuming from <path> (epoch E, step S)``: a resume from a mid-epoch step checkpoint.
MID_EPOCH = re.compile(r"resuming from \S+ \(epoch (\d+), step (\d+)\)")


def cnn_config(workers: int, epochs: int = 2) -> dict:
    """Digits CNN with dropout and random augmentations: every RNG matters."""
    return {
        "name": "kill-me",
        "seeds": {"split": 1, "torch": 2, "numpy": 3, "random": 4, "worker": 5},
        "datasets": {"digits": {"type": "sklearn", "params": {"name": "digits"}}},
        "loaders": {
            "batch_size": 64, "workers": workers,
            "train_split": {"digits": 0.8}, "valid_split": {"digits": 0.2},
            "train_augments": [{"type": "random_affine",
                                "params": {"degrees": 10, "translate": [0.1, 0.1]}}],
        },
        "model": {"type": "simple_cnn",
                  "params": {"in_channels": 1, "channels": [8, 16], "hidden": 32,
                             "dropout": 0.3}},
        "trainer": {
            "epochs": epochs, "device": "cpu", "progress": False, "monitor": "accuracy",
            "checkpoint_every_n_steps": 3, "keep_step_checkpoints": 2,
            "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.003}},
                             "scheduler": {"type": "step_lr", "params": {"step_size": 1,
                                                                         "gamma": 0.5}}},
            "metrics": {"accuracy": {"type": "accuracy"}},
        },
    }


def _weights(session_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert ckpt["in_epoch"] is None  # an end-of-training checkpoint
    return ckpt["model"]


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _status(session_dir: Path) -> str | None:
    try:
        return json.loads((session_dir / "run.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _killer(tmp_path: Path) -> Path:
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    return script


def _thelper(tmp_path: Path, spec: dict, *args: str) -> subprocess.CompletedProcess:
    """``thelper ARGS`` under :data:`KILLER` with ``spec``."""
    return subprocess.run([sys.executable, str(_killer(tmp_path)), json.dumps(spec), *args],
                          capture_output=True, text=True, timeout=600)


def _mid_epoch(point: list, steps_per_epoch: int, every: int) -> bool:
    """A training step after a step checkpoint of its own epoch (resumed mid-epoch)."""
    return point[0] == "step" and (point[1] - 1) % steps_per_epoch >= every


def _kill_and_resume(tmp_path: Path, cfg: dict, points: list[list], kills: int,
                     seed: int) -> Path:
    """Run ``cfg``, SIGKILL it at ``kills`` seeded random points of ``points`` (the events
    of an uninterrupted run, in order; at least one a mid-epoch training step), resuming it
    after each, then let it finish."""
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    save = tmp_path / "killed"
    session_dir = save / cfg["name"]
    rng = random.Random(seed)
    every = cfg["trainer"]["checkpoint_every_n_steps"]
    steps_per_epoch = -(-int(1797 * 0.8) // 64)  # digits train split, batch 64
    mid = [i for i, p in enumerate(points) if _mid_epoch(p, steps_per_epoch, every)]
    # non-decreasing: a resume replays every event after its checkpoint, so each kill point
    # comes again after the previous kill
    chosen = sorted([rng.choice(mid)] + [rng.randrange(len(points)) for _ in range(kills - 1)])
    command = ["run", str(config), "--save-dir", str(save)]
    for index in chosen:
        res = _thelper(tmp_path, {"kill": points[index]}, *command)
        assert res.returncode == -signal.SIGKILL, (points[index], res.stderr[-3000:])
        command = ["resume", str(session_dir)]
    res = subprocess.run([THELPER, *command], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _status(session_dir) == "completed"
    log = (session_dir / "logs" / "trainer.log").read_text()
    assert MID_EPOCH.search(log), "no resume from a step checkpoint"
    assert re.search(r"resuming epoch \d+ after \d+ batches \(step \d+\)", log)
    return session_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs (workers 0 and 2) in subprocesses, like the killed ones, and the
    events of the run (``points``, the same for both)."""
    out = {}
    for workers in (0, 2):
        tmp = tmp_path_factory.mktemp(f"ref{workers}")
        config = tmp / "cfg.yaml"
        config.write_text(yaml.safe_dump(cnn_config(workers)))
        events = tmp / "events.jsonl"
        res = _thelper(tmp, {"record": str(events)}, "run", str(config), "--save-dir",
                       str(tmp))
        assert res.returncode == 0, res.stderr
        out[workers] = _weights(tmp / "kill-me")
        points = [json.loads(line) for line in events.read_text().splitlines()]
        assert out.setdefault("points", points) == points
    kinds = {p[0] for p in out["points"]}
    assert kinds == {"step", "valid", "test", "save"}, kinds
    return out


def test_workers_do_not_change_the_result(reference):
    """Per-sample augmentation seeds: 0 or 2 workers train exactly the same model."""
    _assert_identical(reference[0], reference[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path, reference, workers):
    session_dir = _kill_and_resume(tmp_path, cnn_config(workers), reference["points"],
                                   kills=5, seed=workers)
    _assert_identical(reference[workers], _weights(session_dir))


@pytest.mark.slow
def test_twenty_kills_then_resume_is_bit_identical(tmp_path, reference):
    session_dir = _kill_and_resume(tmp_path, cnn_config(0), reference["points"], kills=20,
                                   seed=42)
    _assert_identical(reference[0], _weights(session_dir))


# validation and test: also in-process in test_signals.py
@pytest.mark.parametrize("point", [
    pytest.param(["step", 10], id="train"),
    pytest.param(["valid", 2, 3], id="valid", marks=pytest.mark.slow),
    pytest.param(["test", 2], id="test", marks=pytest.mark.slow)])
def test_sigterm_writes_a_final_checkpoint_and_resumes_exactly(tmp_path, reference, point):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cnn_config(0)))
    session_dir = tmp_path / "kill-me"
    res = _thelper(tmp_path, {"term": point}, "run", str(config), "--save-dir", str(tmp_path))
    assert res.returncode == 130, res.stderr[-3000:]
    assert "received signal 15" in res.stderr
    assert _status(session_dir) == "interrupted"
    latest = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    if point[0] == "step":  # a step checkpoint at the step of the signal
        assert latest["step"] == 10 and latest["in_epoch"]["batches"] == 10
    elif point[0] == "valid":  # the trained epoch 2, to validate again
        assert latest["step"] == 46 and latest["in_epoch"]["trained"]
    else:  # the end of training, to test again
        assert latest["epoch"] == 2 and latest["in_epoch"] is None
    res = subprocess.run([THELPER, "resume", str(session_dir)], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr
    assert _status(session_dir) == "completed"
    _assert_identical(reference[0], _weights(session_dir))


def test_truncated_latest_falls_back_to_newest_intact(tmp_path, mlp_config, capfd):
    mlp_config["trainer"]["epochs"] = 2
    s = run_session(document_from_dict(mlp_config), tmp_path)
    latest = s.checkpoints_dir / "ckpt.latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="ckpt.latest.pt"):
        torch_load_thelper(latest)
    resumed = resume_session(s.session_dir, ["trainer.epochs=3"])
    err = capfd.readouterr().err
    assert "falling back to the newest intact checkpoint" in err
    assert "ckpt.0002.pt" in err
    ckpt = torch.load(resumed.checkpoints_dir / "ckpt.latest.pt", weights_only=True)
    assert ckpt["epoch"] == 3


def torch_load_thelper(path: Path) -> dict:
    from thelper.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_disk_full_during_save_stops_and_keeps_previous(tmp_path, mlp_config, monkeypatch):
    import thelper.checkpoint as ckpt_mod

    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 3:  # epoch 1 writes 3 files (0001, best, latest); then the disk fills
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt_mod.torch, "save", flaky_save)
    with pytest.raises(CheckpointError, match="No space left on device"):
        run_session(document_from_dict(mlp_config), tmp_path)
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)
    session_dir = tmp_path / "digits-mlp"
    assert torch.load(session_dir / "checkpoints" / "ckpt.latest.pt",
                      weights_only=True)["epoch"] == 1
    assert not list((session_dir / "checkpoints").glob(".*.tmp"))
    run = json.loads((session_dir / "run.json").read_text())
    assert run["status"] == "failed" and "No space left" in run["error"]


class _NaNDigits(torch.utils.data.Dataset):
    """scikit-learn digits (flat) where every 50th sample is NaN."""

    def __init__(self) -> None:
        from sklearn.datasets import load_digits

        from thelper.tasks import Classification

        d = load_digits()
        x = d.data.astype(np.float32) / 16
        x[::50] = np.nan
        self.x, self.targets = torch.from_numpy(x), [int(t) for t in d.target]
        self.task = Classification([str(i) for i in range(10)])

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> dict:
        return {"input": self.x[i], "label": self.targets[i]}


class _NaNPlugin:
    @hookimpl
    def thelper_register_components(self):
        return [ComponentInfo("dataset", "nan_digits", f"{__name__}:_NaNDigits", Params,
                              description="digits with NaN samples",
                              metadata={"provides_task": True})]


def _nan_config(mlp_config: dict, policy: str) -> dict:
    mlp_config["datasets"] = {"digits": {"type": "nan_digits"}}
    mlp_config["trainer"]["on_nonfinite_loss"] = policy
    mlp_config["trainer"]["checkpoint_every_n_steps"] = 2
    return mlp_config


def test_nan_loss_stops_naming_epoch_and_step(tmp_path, mlp_config):
    pm = ThelperPluginManager()
    pm.register(_NaNPlugin(), name="nan")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step \d+"):
        run_session(document_from_dict(_nan_config(mlp_config, "stop")), tmp_path, pm)
    session_dir = tmp_path / "digits-mlp"
    for path in (session_dir / "checkpoints").glob("*.pt"):  # every kept checkpoint is sane
        model = torch.load(path, weights_only=True)["model"]
        assert all(torch.isfinite(v).all() for v in model.values()), path
    assert json.loads((session_dir / "run.json").read_text())["status"] == "failed"


def test_nan_loss_skip_policy_trains_on(tmp_path, mlp_config, capfd):
    pm = ThelperPluginManager()
    pm.register(_NaNPlugin(), name="nan")
    s = run_session(document_from_dict(_nan_config(mlp_config, "skip")), tmp_path, pm)
    err = capfd.readouterr().err
    assert "skipping batch" in err and "non-finite loss" in err
    model = torch.load(s.checkpoints_dir / "ckpt.latest.pt", weights_only=True)["model"]
    assert all(torch.isfinite(v).all() for v in model.values())


@pytest.fixture
def digit_images(tmp_path):
    """scikit-learn digits written as PNG class folders, with one corrupt file."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    root = tmp_path / "digits-png"
    for i in range(300):
        folder = root / str(d.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)).save(
            folder / f"{i:04d}.png")
    bad = root / "3" / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return root, bad


def _image_config(root: Path, skip: bool) -> dict:
    return {
        "name": "pngs",
        "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
        "datasets": {"pngs": {"type": "image_folder", "params": {"root": str(root),
                                                                  "mode": "L"}}},
        "loaders": {"batch_size": 32, "skip_bad_samples": skip,
                    "train_split": {"pngs": 0.8}, "test_split": {"pngs": 0.2},
                    "base_transforms": [{"type": "to_float"}]},
        "model": {"type": "simple_cnn", "params": {"in_channels": 1, "channels": [8]}},
        "trainer": {"epochs": 1, "device": "cpu", "progress": False,
                    "optimization": {"optimizer": {"type": "adam"}}},
    }


def test_corrupt_image_is_a_data_error_naming_the_file(tmp_path, digit_images):
    root, bad = digit_images
    with pytest.raises(DataError, match="corrupt.png") as info:
        run_session(document_from_dict(_image_config(root, False)), tmp_path / "s")
    assert "skip_bad_samples" in str(info.value)


def test_skip_bad_samples_counts_them(tmp_path, digit_images, capfd):
    root, _ = digit_images
    s = run_session(document_from_dict(_image_config(root, True)), tmp_path / "s")
    err = capfd.readouterr().err
    assert "corrupt.png" in err
    ckpt = torch.load(s.checkpoints_dir / "ckpt.latest.pt", weights_only=True)
    # the corrupt file lands in the train or the test split; training counts its skips
    assert ckpt["skipped_samples"] >= 1 or "skipping dataset 'pngs'" in err
