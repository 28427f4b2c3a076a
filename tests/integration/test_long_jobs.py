"""Long jobs: top-k checkpoints, ``trainer.max_time``, the requeue signal (SIGUSR1), the EMA
of the weights and early stopping with ``min_delta``/``mode``.

Nothing here depends on wall-clock time: the time limit reads the trainer's clock
(``thelper.train.trainer.clock``), which these tests replace by a counter of the training
batches computed (one second per batch), and signals are sent by progress, when a given
batch of a given phase has been computed (as in ``test_signals.py``).
"""

from __future__ import annotations

import copy
import json
import os
import signal
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml

from thelper.cli import main
from thelper.config import document_from_dict, validate_document
from thelper.exceptions import ConfigError
from thelper.plugins import get_plugin_manager
from thelper.runner import run_session
from thelper.train import trainer as trainer_mod

#: Optimizer steps per epoch of the MLP config (1438 training samples, batches of 64).
STEPS = 23


class _Progress:
    """Count the batches computed per phase; optionally send ``signum`` to this process once
    the ``at``-th batch of ``phase`` is computed, and serve as the trainer's clock (one
    second per training batch).

    ``after`` counts the batches (of any phase) computed after the signal was sent.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, phase: str | None = None,
                 at: int = 1, signum: int = signal.SIGTERM) -> None:
        self.phase, self.at, self.signum = phase, at, signum
        self.sent, self.after = False, 0
        self.counts: Counter[str] = Counter()
        self.split: str | None = None  # the split being evaluated; None while training
        self.models: list[tuple[str, bool]] = []  # (phase, the EMA's module was called)
        forward, evaluate = trainer_mod.Trainer._forward, trainer_mod.Trainer.evaluate
        spy = self

        def evaluate_(self, split, *args, **kwargs):
            spy.split = split
            try:
                return evaluate(self, split, *args, **kwargs)
            finally:
                spy.split = None

        def forward_(self, batch, model=None):
            out = forward(self, batch, model)
            phase = spy.split or "train"
            spy.models.append((phase, self.ema is not None and model is self.ema.module))
            spy._batch(phase)
            return out

        monkeypatch.setattr(trainer_mod.Trainer, "evaluate", evaluate_)
        monkeypatch.setattr(trainer_mod.Trainer, "_forward", forward_)
        monkeypatch.setattr(trainer_mod, "clock", lambda: float(spy.counts["train"]))

    def _batch(self, phase: str) -> None:
        self.counts[phase] += 1
        if self.sent:
            self.after += 1
        elif phase == self.phase and self.counts[phase] == self.at:
            self.sent = True
            os.kill(os.getpid(), self.signum)


def _write(config: dict, tmp_path: Path, **trainer) -> Path:
    config["trainer"].update(trainer)
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _record(session_dir: Path) -> dict:
    return json.loads((session_dir / "run.json").read_text())


def _ckpt(session_dir: Path, name: str = "ckpt.latest.pt") -> dict:
    return torch.load(session_dir / "checkpoints" / name, weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    """The end-of-training checkpoints of two sessions hold identical weights (and EMA)."""
    wa, wb = _ckpt(a), _ckpt(b)
    assert wa["in_epoch"] is None and wb["in_epoch"] is None
    assert wa["model"].keys() == wb["model"].keys()
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key
    assert (wa.get("ema") is None) == (wb.get("ema") is None)
    if wa.get("ema") is not None:
        assert wa["ema"]["n_averaged"] == wb["ema"]["n_averaged"]
        for key, value in wa["ema"]["model"].items():
            assert torch.equal(value, wb["ema"]["model"][key]), f"ema {key}"


def _assert_same_run(reference: Path, session_dir: Path) -> None:
    _assert_same_weights(reference, session_dir)
    run, ref = _record(session_dir), _record(reference)
    assert run["status"] == "completed" and run["stopped_reason"] == "completed"
    assert run["metrics"] == ref["metrics"]  # train and validation values, exactly
    assert run["test"] == ref["test"]


def _reference(tmp_path_factory, name: str, **trainer) -> Path:
    from tests.conftest import MLP_CONFIG

    cfg = copy.deepcopy(MLP_CONFIG)
    cfg["trainer"].update(epochs=2, **trainer)
    return run_session(document_from_dict(cfg), tmp_path_factory.mktemp(name)).session_dir


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run of the MLP config."""
    return _reference(tmp_path_factory, "ref")


# ------------------------------------------------------------------------ config
def _validate(mlp_config: dict, **trainer) -> object:
    mlp_config["trainer"].update(trainer)
    return validate_document(document_from_dict(mlp_config), get_plugin_manager().registry)


@pytest.mark.parametrize(("value", "seconds"), [
    ("00:12:00:00", 43200.0), ("1:00:00:01", 86401.0), (90, 90.0), (0.5, 0.5)])
def test_max_time_formats(mlp_config, value, seconds):
    cfg = _validate(mlp_config, max_time=value)
    assert cfg.trainer.max_time_seconds() == seconds


@pytest.mark.parametrize(("trainer", "message"), [
    ({"max_time": "12:00:00"}, "is not a duration: write 'DD:HH:MM:SS'"),
    ({"max_time": "00:24:00:00"}, "hours below 24"),
    ({"max_time": 0}, "is not above 0 seconds"),
    ({"max_time": True}, "not a boolean"),
    ({"max_time": 1e12}, "above 10,000 days"),
    ({"save_top_k": 0}, "greater than or equal to 1"),
    ({"save_top_k": 2, "save_freq": 5}, "save_top_k (2) replaces the ckpt.<epoch>.pt files"),
    ({"ema": {"decay": 1.0}}, "less than 1"),
    ({"ema": {"decay": 0.99, "every_n_steps": 0}}, "greater than or equal to 1"),
    ({"early_stopping": {"patience": 2, "mode": "up"}}, "'min' or 'max'"),
])
def test_long_job_settings_are_validated(mlp_config, trainer, message):
    with pytest.raises(ConfigError) as info:
        _validate(mlp_config, **trainer)
    assert message in str(info.value)
    assert "trainer." in str(info.value)


def test_early_stopping_mode_must_agree_with_the_goal(tmp_path, mlp_config, capsys):
    cfg = _write(mlp_config, tmp_path, epochs=2,
                 early_stopping={"patience": 2, "mode": "min"})  # accuracy: max
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err  # at schema depth: before anything is built
    assert "trainer.early_stopping.mode: mode 'min' contradicts the goal of the monitored " \
        "metric 'accuracy' (max)" in err
    assert not list(tmp_path.glob("*/run.json"))


# ---------------------------------------------------------------- early stopping
def test_early_stopping_with_min_delta_records_its_reason(tmp_path, mlp_config):
    # epoch 1 is the first value (an improvement); epoch 2 gains less than 0.5 accuracy
    cfg = _write(mlp_config, tmp_path, epochs=5,
                 early_stopping={"patience": 1, "min_delta": 0.5, "mode": "max"})
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 0
    run = _record(tmp_path / mlp_config["name"])
    assert [e["epoch"] for e in run["metrics"]["valid"]] == [1, 2]
    assert run["metrics"]["valid"][1]["accuracy"] > run["metrics"]["valid"][0]["accuracy"]
    assert run["best"]["epoch"] == 1  # not better by more than min_delta
    assert run["status"] == "completed"
    assert (run["stopped_reason"], run["stopped_epoch"], run["stopped_step"]) == \
        ("early_stopping", 2, 2 * STEPS)


# ---------------------------------------------------------------------- max_time
@pytest.mark.slow
def test_max_time_stops_within_one_step_and_resumes_exactly(tmp_path, mlp_config,
                                                            monkeypatch, capsys, reference):
    cfg = _write(mlp_config, tmp_path, epochs=2, max_time="00:00:00:30")
    session_dir = tmp_path / mlp_config["name"]
    spy = _Progress(monkeypatch)
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 3
    assert "time limit reached (trainer.max_time); exit code 3" in capsys.readouterr().err
    assert spy.counts["train"] == 30 and spy.counts["test"] == 0  # stopped at once
    latest = _ckpt(session_dir)
    assert latest["step"] == 30 and latest["in_epoch"]["epoch"] == 2
    assert latest["elapsed_time"] == 30.0
    run = _record(session_dir)
    assert run["status"] == "interrupted"
    assert (run["stopped_reason"], run["stopped_epoch"], run["stopped_step"]) == \
        ("time_limit", 2, 30)
    assert "time limit '00:00:00:30' (trainer.max_time) reached at step 30" in run["error"]

    # the time is used up: a resume with the same limit stops before any step
    spy = _Progress(monkeypatch)
    assert main(["resume", str(session_dir)]) == 3
    assert spy.counts["train"] == 0
    assert _record(session_dir)["stopped_reason"] == "time_limit"
    assert "reached before this resume" in _record(session_dir)["error"]

    # the time accumulates over the resumes: 10 more seconds (steps) up to 40
    spy = _Progress(monkeypatch)
    assert main(["resume", str(session_dir), "--set", "trainer.max_time=40"]) == 3
    assert spy.counts["train"] == 10
    latest = _ckpt(session_dir)
    assert latest["step"] == 40 and latest["elapsed_time"] == 40.0

    monkeypatch.undo()
    assert main(["resume", str(session_dir), "--set", "trainer.max_time=null"]) == 0
    _assert_same_run(reference, session_dir)


def test_max_time_at_an_epoch_end_stops_before_the_next_epoch(tmp_path, mlp_config,
                                                               monkeypatch):
    """The limit passed during validation: the epoch's checkpoint is the resume point."""
    cfg = _write(mlp_config, tmp_path, epochs=2, max_time=STEPS + 0.5)
    spy = _Progress(monkeypatch)
    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_mod, "clock", lambda: clock["now"])
    original = trainer_mod.Trainer.evaluate

    def evaluate(self, split, *args, **kwargs):  # the validation takes 1 second
        clock["now"] = float(spy.counts["train"]) + 1.0
        return original(self, split, *args, **kwargs)

    def step_clock(self, batch, model=None, _forward=trainer_mod.Trainer._forward):
        out = _forward(self, batch, model)
        if spy.split is None:
            clock["now"] = float(spy.counts["train"])
        return out

    monkeypatch.setattr(trainer_mod.Trainer, "_forward", step_clock)
    monkeypatch.setattr(trainer_mod.Trainer, "evaluate", evaluate)
    session_dir = tmp_path / mlp_config["name"]
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 3
    assert spy.counts["train"] == STEPS  # epoch 2 never started
    latest = _ckpt(session_dir)
    assert latest["in_epoch"] is None and latest["epoch"] == 1
    run = _record(session_dir)
    assert (run["stopped_reason"], run["stopped_epoch"]) == ("time_limit", 1)
    assert [e["epoch"] for e in run["metrics"]["valid"]] == [1]


# ----------------------------------------------------------------------- requeue
@pytest.mark.slow
@pytest.mark.parametrize(("phase", "at"), [("train", 30), ("valid", 2), ("test", 1)])
def test_sigusr1_checkpoints_exits_75_and_the_requeued_job_resumes_exactly(
        tmp_path, mlp_config, monkeypatch, capsys, reference, phase, at):
    cfg = _write(mlp_config, tmp_path, epochs=2)
    session_dir = tmp_path / mlp_config["name"]
    spy = _Progress(monkeypatch, phase, at, signal.SIGUSR1)
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 75
    assert spy.sent and spy.after <= 1, spy.after  # stopped within one batch
    assert "stopped for a requeue (SIGUSR1); exit code 75" in capsys.readouterr().err
    run = _record(session_dir)
    assert run["status"] == "interrupted" and run["stopped_reason"] == "requeue"
    assert "requeue requested (SIGUSR1)" in run["error"]
    latest = _ckpt(session_dir)
    if phase == "train":
        assert latest["step"] == 30 and latest["in_epoch"]["epoch"] == 2
        assert (run["stopped_epoch"], run["stopped_step"]) == (2, 30)
    elif phase == "valid":
        assert latest["step"] == STEPS and "trained" in latest["in_epoch"]
    else:
        assert latest["in_epoch"] is None and run["test"] is None
    monkeypatch.undo()
    assert main(["resume", str(session_dir)]) == 0  # what the requeued job runs
    _assert_same_run(reference, session_dir)


def _ddp_rank(rank: int, world: int, init: str, config: dict, save_dir: str, out: str
              ) -> None:
    """One rank of a gloo job; rank 1 gets SIGUSR1 at its 2nd training batch."""
    import torch.distributed as dist

    from thelper.runtime import Runtime

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    result: dict = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            spy = _Progress(mp, "train" if rank == 1 else None, 2, signal.SIGUSR1)
            try:
                run_session(document_from_dict(config), save_dir,
                            runtime=Runtime(rank=rank, local_rank=rank, world_size=world))
                result["outcome"] = "completed"
            except trainer_mod.StopRequested as exc:
                result.update(outcome=exc.reason, code=exc.exit_code, step=exc.step)
            result["train"] = spy.counts["train"]
    finally:
        dist.destroy_process_group()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


@pytest.mark.slow
def test_sigusr1_on_one_rank_requeues_every_rank(tmp_path, mlp_config):
    """The ranks agree on the reason of a stop: all of them exit for a requeue."""
    every = 3
    mlp_config["trainer"].update(epochs=1, params={"log_every_n_steps": every})
    init = f"file://{tmp_path / 'pg_init'}"
    torch.multiprocessing.spawn(
        _ddp_rank, args=(2, init, mlp_config, str(tmp_path / "runs"), str(tmp_path)),
        nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks == [{"outcome": "requeue", "code": 75, "step": every, "train": every}] * 2
    session_dir = tmp_path / "runs" / mlp_config["name"]
    assert _record(session_dir)["stopped_reason"] == "requeue"
    assert _ckpt(session_dir)["step"] == every


# ------------------------------------------------------------------------- top-k
def _top_k_files(session_dir: Path) -> list[str]:
    return sorted(p.name for p in (session_dir / "checkpoints").glob("ckpt.epoch*.pt"))


def _expected_top_k(run: dict, k: int) -> list[tuple[int, float]]:
    values = [(e["epoch"], e["accuracy"]) for e in run["metrics"]["valid"]]
    return sorted(values, key=lambda ev: (-ev[1], ev[0]))[:k]


def _assert_top_k(session_dir: Path, k: int) -> None:
    run = _record(session_dir)
    expected = _expected_top_k(run, k)
    listed = run["checkpoints"]["top_k"]
    assert [(e["epoch"], e["value"]) for e in listed] == expected
    assert {e["metric"] for e in listed} == {"accuracy"}
    names = [trainer_mod.top_k_name(epoch, "accuracy", value) for epoch, value in expected]
    assert [e["path"] for e in listed] == [f"checkpoints/{n}" for n in names]
    assert _top_k_files(session_dir) == sorted(names)  # exactly k files
    latest = _ckpt(session_dir)
    assert [e["file"] for e in latest["top_k"]] == names
    for name, (epoch, _) in zip(names, expected, strict=True):  # each holds its epoch
        assert _ckpt(session_dir, name)["epoch"] == epoch
    assert not list((session_dir / "checkpoints").glob("ckpt.0*.pt"))  # no save_freq files


def test_top_k_file_names():
    assert trainer_mod.top_k_name(7, "accuracy", 0.98125) == "ckpt.epoch0007-accuracy0.9812.pt"
    assert trainer_mod.top_k_name(12, "val/loss", 1.5e-05) == "ckpt.epoch0012-val_loss1.5e-05.pt"


@pytest.mark.slow
def test_top_k_keeps_exactly_k_files_across_an_interrupt_and_a_resume(
        tmp_path, mlp_config, monkeypatch):
    cfg = _write(mlp_config, tmp_path, epochs=4, save_top_k=2)
    session_dir = tmp_path / mlp_config["name"]
    _Progress(monkeypatch, "train", 2 * STEPS + 5)  # SIGTERM in epoch 3
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 130
    monkeypatch.undo()
    assert len(_top_k_files(session_dir)) == 2
    assert [e["epoch"] for e in _ckpt(session_dir)["top_k"]] == [2, 1]
    ckpts = session_dir / "checkpoints"
    # what a run killed while saving leaves: an epoch-3 top-k file written before
    # ckpt.latest.pt, and (a link inside the session) a name that no list holds
    (ckpts / "ckpt.epoch0003-accuracy0.5.pt").write_bytes(b"partial")
    (ckpts / "ckpt.epoch0009-accuracy1.pt").symlink_to("ckpt.best.pt")
    assert main(["resume", str(session_dir)]) == 0
    assert (ckpts / "ckpt.best.pt").is_file()  # the link was removed, not its target
    _assert_top_k(session_dir, 2)
    assert "removed 2 checkpoint(s) that are not among the top 2" in \
        (session_dir / "logs" / "trainer.log").read_text()


@pytest.mark.slow
def test_top_k_after_a_kill_before_the_old_file_was_deleted(tmp_path, mlp_config,
                                                            monkeypatch):
    """Killed between ckpt.latest.pt and the deletion of the file that left the list: the
    resume deletes it, and a lower save_top_k drops the worst entries."""
    cfg = _write(mlp_config, tmp_path, epochs=4, save_top_k=2)
    session_dir = tmp_path / mlp_config["name"]

    def killed(self, name):
        raise RuntimeError("killed while deleting " + name)

    monkeypatch.setattr(trainer_mod.Trainer, "_remove_checkpoint", killed)
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 1
    monkeypatch.undo()
    # epoch 3 (accuracy 0.93) pushed epoch 1 (0.82) out of the top 2: killed there
    assert _ckpt(session_dir)["epoch"] == 3 and _record(session_dir)["status"] == "failed"
    assert len(_top_k_files(session_dir)) == 3 and len(_ckpt(session_dir)["top_k"]) == 2
    assert main(["resume", str(session_dir)]) == 0
    _assert_top_k(session_dir, 2)
    assert main(["resume", str(session_dir), "--set", "trainer.save_top_k=1",
                 "--set", "trainer.epochs=5"]) == 0
    _assert_top_k(session_dir, 1)


# --------------------------------------------------------------------------- EMA
@pytest.fixture(scope="module")
def ema_reference(tmp_path_factory):
    """An uninterrupted 2-epoch run with an EMA updated every 5 steps."""
    return _reference(tmp_path_factory, "ema-ref", ema={"decay": 0.9, "every_n_steps": 5})


@pytest.mark.slow
def test_ema_is_evaluated_checkpointed_and_resumes_exactly(tmp_path, mlp_config,
                                                           monkeypatch, ema_reference):
    ref = _ckpt(ema_reference)
    assert ref["ema"]["n_averaged"] == 2 * STEPS // 5
    assert (ref["ema"]["decay"], ref["ema"]["every_n_steps"]) == (0.9, 5)
    assert ref["ema"]["model"].keys() == ref["model"].keys()
    assert any(not torch.equal(ref["ema"]["model"][k], ref["model"][k]) for k in ref["model"])
    cfg = _write(mlp_config, tmp_path, epochs=2, ema={"decay": 0.9, "every_n_steps": 5})
    session_dir = tmp_path / mlp_config["name"]
    spy = _Progress(monkeypatch, "train", STEPS + 9)  # SIGTERM between two EMA updates
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 130
    # training runs the raw model; validation the EMA
    assert {used for phase, used in spy.models if phase == "train"} == {False}
    assert {used for phase, used in spy.models if phase == "valid"} == {True}
    stopped = _ckpt(session_dir)
    assert stopped["step"] == STEPS + 9 and stopped["ema"]["n_averaged"] == (STEPS + 9) // 5
    monkeypatch.undo()
    spy = _Progress(monkeypatch)
    assert main(["resume", str(session_dir)]) == 0
    assert {used for phase, used in spy.models if phase in ("valid", "test")} == {True}
    _assert_same_run(ema_reference, session_dir)
    # the best checkpoint's EMA is what the final test evaluated
    best = _ckpt(session_dir, "ckpt.best.pt")
    assert best["ema"] is not None and _record(session_dir)["test"]["epoch"] == best["epoch"]


def test_ema_checkpoint_round_trip_is_exact(tmp_path, mlp_config):
    from thelper.build import assemble
    from thelper.runtime import Runtime
    from thelper.session import Session

    mlp_config["trainer"]["ema"] = {"decay": 0.5}
    cfg = validate_document(document_from_dict(mlp_config), get_plugin_manager().registry)
    seeds = dict(mlp_config["seeds"])
    runtime = Runtime(rank=0, local_rank=0, world_size=1)
    (tmp_path / "checkpoints").mkdir()

    def trainer() -> trainer_mod.Trainer:
        session = Session(name="x", session_dir=tmp_path, config={}, cfg=cfg, seeds=seeds,
                          runtime=runtime, plugins=get_plugin_manager())
        return assemble(cfg, seeds, get_plugin_manager().registry, runtime,
                        session=session).trainer

    a = trainer()
    with torch.no_grad():
        for p in a.model.parameters():
            p.add_(1.0)
    a.ema.update_parameters(a.model)  # first update: a copy
    with torch.no_grad():
        for p in a.model.parameters():
            p.mul_(3.0)
    a.ema.update_parameters(a.model)
    state = a._ema_state()
    assert state["n_averaged"] == 2
    path = tmp_path / "ema.pt"
    torch.save({"model": a.model.state_dict(), "ema": state}, path)
    b = trainer()
    b.load_state_dict(torch.load(path, weights_only=True))
    for key, value in a.ema.module.state_dict().items():
        assert torch.equal(value, b.ema.module.state_dict()[key]), key
    assert int(b.ema.n_averaged) == 2
    assert any(not torch.equal(a.ema.module.state_dict()[k], v)
               for k, v in a.model.state_dict().items())


def test_infer_export_and_init_from_load_the_evaluated_ema(ema_reference, tmp_path):
    from thelper.finetune import read_state_dict
    from thelper.tools.loading import load_trained

    best = _ckpt(ema_reference, "ckpt.best.pt")
    trained = load_trained(ema_reference)  # what infer and export load
    for key, value in trained.model.state_dict().items():
        assert torch.equal(value, best["ema"]["model"][key]), key
    weights, source = read_state_dict(ema_reference / "checkpoints" / "ckpt.best.pt")
    assert source["kind"] == "thelper-checkpoint (EMA of the weights)"
    assert all(torch.equal(weights[k], best["ema"]["model"][k]) for k in weights)
