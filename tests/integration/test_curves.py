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
