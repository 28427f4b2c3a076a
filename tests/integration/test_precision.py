"""Mixed precision, gradient accumulation and per-step schedulers in one process: they
train, they resume exactly, and what cannot work is refused before anything runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from thelper.config import document_from_dict, validate_document
from thelper.exceptions import ConfigError
from thelper.plugins import get_plugin_manager
from thelper.runner import resume_session, run_session
from thelper.train import trainer as trainer_mod

ROOT = Path(__file__).resolve().parents[2]


def _weights(session_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert ckpt["in_epoch"] is None
    return ckpt["model"]


def _stop_at(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ask the trainer to stop (as SIGTERM does) once ``step`` optimizer steps are done."""
    original = trainer_mod.Trainer.optimizer_step

    def optimizer_step(self):
        original(self)
        if self.step + 1 == step:  # the loop counts the step after this seam returns
            self.session.stop_requested = 15

    monkeypatch.setattr(trainer_mod.Trainer, "optimizer_step", optimizer_step)


@pytest.mark.slow
def test_digits_example_trains_in_bf16_mixed(tmp_path):
    cfg = yaml.safe_load((ROOT / "examples" / "digits-classification" / "config.yaml")
                         .read_text())
    cfg["trainer"].update({"epochs": 8, "progress": False, "precision": "bf16-mixed"})
    session = run_session(document_from_dict(cfg), tmp_path)
    assert session.test_metrics["accuracy"] >= 0.9
    record = json.loads((session.session_dir / "run.json").read_text())
    assert record["config"]["trainer"]["precision"] == "bf16-mixed"


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_stop_mid_epoch_then_resume_is_exact_with_accumulation(tmp_path, mlp_config,
                                                               monkeypatch, precision):
    mlp_config["trainer"].update({
        "epochs": 2, "precision": precision, "accumulate_grad_batches": 3,
        "checkpoint_every_n_steps": 4})
    mlp_config["loaders"]["batch_size"] = 16
    reference = run_session(document_from_dict(copy.deepcopy(mlp_config)), tmp_path / "ref")
    _stop_at(monkeypatch, 37)  # inside epoch 2 (30 steps per epoch), off the checkpoints
    with pytest.raises(KeyboardInterrupt):
        run_session(document_from_dict(copy.deepcopy(mlp_config)), tmp_path / "cut")
    monkeypatch.undo()
    session_dir = tmp_path / "cut" / mlp_config["name"]
    ckpt = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert ckpt["step"] == 37 and ckpt["in_epoch"]["epoch"] == 2
    assert ckpt["in_epoch"]["batches"] % 3 == 0  # on an accumulation boundary
    resumed = resume_session(session_dir)
    ref, got = _weights(reference.session_dir), _weights(resumed.session_dir)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert resumed.test_metrics == reference.test_metrics


def test_per_step_scheduler_steps_after_every_optimizer_step(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 2
    mlp_config["trainer"]["optimization"]["scheduler"] = {
        "type": "step_lr", "interval": "step", "params": {"step_size": 10, "gamma": 0.5}}
    mlp_config["loaders"]["batch_size"] = 64  # 23 steps per epoch
    session = run_session(document_from_dict(mlp_config), tmp_path)
    lrs = [row["lr"] for row in session.history["train"]]
    assert lrs == pytest.approx([0.005 * 0.5 ** (23 // 10), 0.005 * 0.5 ** (46 // 10)])


def test_metric_driven_scheduler_cannot_step_per_step(tmp_path, mlp_config):
    mlp_config["trainer"]["optimization"]["scheduler"]["interval"] = "step"
    with pytest.raises(ConfigError, match=r"trainer\.optimization\.scheduler\.interval: "
                                          r"scheduler 'reduce_lr_on_plateau' steps on a metric"):
        validate_document(document_from_dict(mlp_config), get_plugin_manager().registry)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_float16_on_a_cpu_is_a_config_error_at_its_path(mlp_config):
    mlp_config["trainer"]["precision"] = "16-mixed"
    with pytest.raises(ConfigError, match=r"trainer\.precision: '16-mixed' needs a CUDA"):
        validate_document(document_from_dict(mlp_config), get_plugin_manager().registry)


def test_precision_spellings(mlp_config):
    registry = get_plugin_manager().registry
    for given, want in ((32, "32"), ("bf16", "bf16-mixed"), ("bf16-mixed", "bf16-mixed")):
        mlp_config["trainer"]["precision"] = given
        cfg = validate_document(document_from_dict(mlp_config), registry)
        assert cfg.trainer.precision == want
