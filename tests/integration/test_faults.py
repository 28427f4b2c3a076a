"""Fault tests: kill a run anywhere, resume, get the same model; failures stop cleanly.

The kill tests run `thelper run` in a subprocess, SIGKILL it at seeded random times,
`thelper resume` it after each kill, and compare the final weights with an uninterrupted
run, bit for bit.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
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


def _progress(session_dir: Path, steps_per_epoch: int) -> int:
    """Optimizer steps a run has checkpointed (step and epoch checkpoint names)."""
    folder = session_dir / "checkpoints"
    best = -1
    try:
        names = [p.name for p in folder.iterdir()]
    except OSError:
        return best
    for name in names:
        parts = name.split(".")
        if name.startswith("ckpt.step.") and parts[2].isdigit():
            best = max(best, int(parts[2]))
        elif len(parts) == 3 and parts[1].isdigit():
            best = max(best, int(parts[1]) * steps_per_epoch)
    return best


def _kill_and_resume(tmp_path: Path, cfg: dict, kills: int, seed: int) -> Path:
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    save = tmp_path / "killed"
    session_dir = save / cfg["name"]
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    killed = 0
    steps_per_epoch = -(-int(1797 * 0.8) // 64)  # digits train split, batch 64
    total_steps = steps_per_epoch * cfg["trainer"]["epochs"]
    cmd = [THELPER, "run", str(config), "--save-dir", str(save)]
    for _ in range(kills + 20):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env=env)
        if killed < kills:
            # kill at a random point of training, measured in optimizer steps (robust to
            # the machine's speed): wait until the run has checkpointed past a random step,
            # then a little longer (so kills also land between checkpoints)
            target = rng.randint(0, total_steps - 4)
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline and \
                    _progress(session_dir, steps_per_epoch) < target:
                time.sleep(0.01)
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.4))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                killed += 1
        else:
            proc.wait(timeout=300)
        err = proc.stderr.read().decode() if proc.stderr else ""
        if proc.returncode == 0 and _status(session_dir) == "completed":
            break
        assert proc.returncode in (0, -signal.SIGKILL), err
        cmd = [THELPER, "resume", str(session_dir)]
    assert _status(session_dir) == "completed"
    assert killed >= kills - 1, killed  # a kill drawn after the run's end cannot happen
    return session_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs (workers 0 and 2) in subprocesses, like the killed ones."""
    out = {}
    for workers in (0, 2):
        tmp = tmp_path_factory.mktemp(f"ref{workers}")
        config = tmp / "cfg.yaml"
        config.write_text(yaml.safe_dump(cnn_config(workers)))
        res = subprocess.run([THELPER, "run", str(config), "--save-dir", str(tmp)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        out[workers] = _weights(tmp / "kill-me")
    return out


def test_workers_do_not_change_the_result(reference):
    """Per-sample augmentation seeds: 0 or 2 workers train exactly the same model."""
    _assert_identical(reference[0], reference[2])


@pytest.mark.parametrize("workers", [0, 2])
def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path, reference, workers):
    session_dir = _kill_and_resume(tmp_path, cnn_config(workers), kills=5, seed=workers)
    _assert_identical(reference[workers], _weights(session_dir))
    log = (session_dir / "logs" / "trainer.log").read_text()
    assert "resuming" in log


@pytest.mark.slow
def test_twenty_kills_then_resume_is_bit_identical(tmp_path, reference):
    session_dir = _kill_and_resume(tmp_path, cnn_config(0), kills=20, seed=42)
    _assert_identical(reference[0], _weights(session_dir))


def test_sigterm_writes_a_final_checkpoint_and_resumes_exactly(tmp_path, reference):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cnn_config(0)))
    session_dir = tmp_path / "kill-me"
    proc = subprocess.Popen([THELPER, "run", str(config), "--save-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((session_dir / "checkpoints").glob("ckpt.step.*")
                                              if session_dir.exists() else []):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert _status(session_dir) == "interrupted"
    latest = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert latest["in_epoch"] is not None or latest["epoch"] >= 1
    res = subprocess.run([THELPER, "resume", str(session_dir)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
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
