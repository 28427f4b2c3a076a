"""Per-step scalars (``thelper_log_scalars``) and the training curves of a session."""

from __future__ import annotations

import csv
import math

from thelper.config import document_from_dict
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.runner import run_session


class _Scalars:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, dict[str, float]]] = []

    @hookimpl
    def thelper_log_scalars(self, session, split, step, values):
        self.calls.append((split, step, dict(values)))


def test_log_scalars_every_n_steps_and_curves(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 2
    mlp_config["trainer"]["params"] = {"log_every_n_steps": 5}
    pm = ThelperPluginManager()
    spy = _Scalars()
    pm.register(spy, name="spy")
    session = run_session(document_from_dict(mlp_config), tmp_path, pm)
    # 1437 training samples (0.8 of 1797) in batches of 64: 23 steps per epoch, 46 in all
    steps = [step for _, step, _ in spy.calls]
    assert steps == list(range(5, 47, 5))
    assert {split for split, _, _ in spy.calls} == {"train"}
    for _, step, values in spy.calls:
        assert set(values) == {"loss", "lr", "epoch"}
        assert math.isfinite(values["loss"]) and values["loss"] > 0
        assert values["epoch"] == (1.0 if step <= 23 else 2.0)

    # training curves: one CSV row per epoch and split, and the PNG
    out = session.output_dir
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert [(r["epoch"], r["split"]) for r in rows] == [
        ("1", "train"), ("1", "valid"), ("2", "train"), ("2", "valid")]
    assert rows[0]["lr"] and rows[0]["loss"] and rows[1]["accuracy"]
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the per-step scalars reach TensorBoard
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(session.split_dir("train")))
    acc.Reload()
    assert [e.step for e in acc.Scalars("step/loss")] == steps


def test_step_scalars_reach_the_hook_during_the_epoch(tmp_path, mlp_config, monkeypatch):
    """Logged steps are handed over every _STEP_FLUSH logged steps, not only at the end of
    the epoch: when the hook sees step s, the model has run exactly the forwards of the
    steps up to the chunk's last one (progress counted by the model's forward calls)."""
    import thelper.nn
    import thelper.train.trainer as trainer_module

    forwards = [0]
    forward = thelper.nn.MLP.forward

    def counting(self, x):
        if self.training:
            forwards[0] += 1
        return forward(self, x)

    monkeypatch.setattr(thelper.nn.MLP, "forward", counting)
    monkeypatch.setattr(trainer_module, "_STEP_FLUSH", 5)
    mlp_config["trainer"]["epochs"] = 1
    mlp_config["trainer"]["params"] = {"log_every_n_steps": 1}
    seen: list[tuple[int, int]] = []

    class Spy:
        @hookimpl
        def thelper_log_scalars(self, session, split, step, values):
            seen.append((step, forwards[0]))

    pm = ThelperPluginManager()
    pm.register(Spy(), name="spy")
    run_session(document_from_dict(mlp_config), tmp_path, pm)
    assert [s for s, _ in seen] == list(range(1, 24))  # 23 steps
    for step, at in seen:
        chunk_end = -(-step // 5) * 5
        assert at == (chunk_end if chunk_end <= 20 else 23), (step, at)
