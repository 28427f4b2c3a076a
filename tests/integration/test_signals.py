"""SIGINT/SIGTERM in every phase, and `resume --eval-only` leaving the training record alone.

The signals are real (``os.kill`` of this process, caught by the handlers that a session
installs) and scheduled by progress: a wrapper of the trainer's forward seam sends one when
a given batch of a given phase (train, valid or test) has been computed, then counts the
batches computed after it.
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
from thelper.config import document_from_dict
from thelper.runner import resume_session, run_session
from thelper.train import trainer as trainer_mod


class _SignalAt:
    """Send ``signum`` to this process once the ``at``-th batch of ``phase`` is computed.

    ``after`` counts the batches (of any phase) computed after the signal was sent.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, phase: str, at: int | None = 1,
                 signum: int = signal.SIGTERM) -> None:
        self.phase, self.at, self.signum = phase, at, signum  # at=None: count only
        self.seen, self.sent, self.after = 0, False, 0
        self.counts: Counter[str] = Counter()  # batches computed per phase
        self.split: str | None = None  # the split being evaluated; None while training
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
            spy._batch(spy.split or "train")
            return out

        monkeypatch.setattr(trainer_mod.Trainer, "evaluate", evaluate_)
        monkeypatch.setattr(trainer_mod.Trainer, "_forward", forward_)

    def _batch(self, phase: str) -> None:
        self.counts[phase] += 1
        if self.sent:
            self.after += 1
        elif phase == self.phase:
            self.seen += 1
            if self.seen == self.at:
                self.sent = True
                os.kill(os.getpid(), self.signum)


def _config(mlp_config: dict, tmp_path: Path, epochs: int = 2) -> Path:
    mlp_config["trainer"]["epochs"] = epochs
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(mlp_config))
    return path


def _record(session_dir: Path) -> dict:
    return json.loads((session_dir / "run.json").read_text())


def _latest(session_dir: Path) -> dict:
    return torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _latest(a), _latest(b)
    assert wa["in_epoch"] is None and wb["in_epoch"] is None  # end-of-training checkpoints
    assert wa["model"].keys() == wb["model"].keys()
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted 2-epoch run of the MLP config."""
    from tests.conftest import MLP_CONFIG

    cfg = copy.deepcopy(MLP_CONFIG)
    cfg["trainer"]["epochs"] = 2
    return run_session(document_from_dict(cfg), tmp_path_factory.mktemp("ref")).session_dir


# (phase, batch of that phase that gets the signal, signal): training in epoch 2 (23 steps
# per epoch), the first validation batch of epoch 1, the first batch of the final test
@pytest.mark.parametrize(("phase", "at", "signum"), [
    ("train", 30, signal.SIGTERM), ("valid", 1, signal.SIGTERM), ("valid", 2, signal.SIGINT),
    ("test", 1, signal.SIGTERM)])
def test_signal_stops_within_one_batch_then_resume_is_exact(
        tmp_path, mlp_config, monkeypatch, capsys, reference, phase, at, signum):
    cfg = _config(mlp_config, tmp_path)
    spy = _SignalAt(monkeypatch, phase, at, signum)
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 130
    assert spy.sent and spy.after <= 1, spy.after  # stopped within one batch
    assert "interrupted" in capsys.readouterr().err
    session_dir = tmp_path / mlp_config["name"]
    run = _record(session_dir)
    assert run["status"] == "interrupted"
    assert "stop requested" in run["error"]
    latest = _latest(session_dir)
    if phase == "train":
        assert latest["in_epoch"]["epoch"] == 2 and latest["step"] == 30
    elif phase == "valid":  # the trained epoch is kept; its validation is redone
        assert latest["in_epoch"]["epoch"] == 1 and "trained" in latest["in_epoch"]
        assert latest["step"] == 23 and "valid" not in run["metrics"]
    else:  # training is complete; the test is redone
        assert latest["in_epoch"] is None and latest["epoch"] == 2
        assert run["test"] is None
    monkeypatch.undo()  # no more signals
    assert main(["resume", str(session_dir)]) == 0
    run = _record(session_dir)
    assert run["status"] == "completed"
    assert [e["epoch"] for e in run["metrics"]["train"]] == [1, 2]
    assert [e["epoch"] for e in run["metrics"]["valid"]] == [1, 2]
    _assert_same_weights(reference, session_dir)
    ref = _record(reference)
    assert run["metrics"] == ref["metrics"]  # train and validation values, exactly
    assert run["test"] == ref["test"]
    log = (session_dir / "logs" / "trainer.log").read_text()
    if phase == "valid":
        assert "resuming epoch 1 after its training (step 23): validating it" in log
    if phase == "test":
        assert "all 2 epochs are done; evaluating the best model" in log
    # the checkpoint of the trained epoch was superseded by the epoch's own
    assert not list((session_dir / "checkpoints").glob("ckpt.step.*.pt"))


def test_signal_during_the_validation_of_the_last_epoch_with_step_checkpoints(
        tmp_path, mlp_config, monkeypatch, reference):
    """A stop right after a cadence step checkpoint (23 = the epoch's last step) rewrites
    that file as the checkpoint of the trained epoch, and the rotation keeps it."""
    mlp_config["trainer"]["checkpoint_every_n_steps"] = 23
    mlp_config["trainer"]["keep_step_checkpoints"] = 1
    cfg = _config(mlp_config, tmp_path)
    spy = _SignalAt(monkeypatch, "valid", at=4)  # the first batch of epoch 2's validation
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 130
    assert spy.after <= 1
    session_dir = tmp_path / mlp_config["name"]
    latest = _latest(session_dir)
    assert latest["step"] == 46 and latest["in_epoch"]["trained"]["loss"] > 0
    assert [p.name for p in (session_dir / "checkpoints").glob("ckpt.step.*.pt")] == \
        ["ckpt.step.00000046.pt"]
    monkeypatch.undo()
    assert main(["resume", str(session_dir)]) == 0
    assert _record(session_dir)["status"] == "completed"
    _assert_same_weights(reference, session_dir)
    assert _record(session_dir)["metrics"] == _record(reference)["metrics"]


# ----------------------------------------------------------------- resume --eval-only
def _without_evaluations(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "evaluations"}


def test_eval_only_without_best_checkpoint_fails_and_keeps_run_json(
        tmp_path, mlp_config, monkeypatch, capsys):
    cfg = _config(mlp_config, tmp_path)
    _SignalAt(monkeypatch, "train", at=5)  # interrupted in epoch 1: no best model yet
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 130
    monkeypatch.undo()
    session_dir = tmp_path / mlp_config["name"]
    before = _record(session_dir)
    assert before["status"] == "interrupted"
    capsys.readouterr()
    assert main(["resume", str(session_dir), "--eval-only"]) == 1
    err = capsys.readouterr().err
    assert f"no ckpt.best.pt in '{session_dir / 'checkpoints'}': the session has no best " \
        "checkpoint (monitor 'accuracy' on the valid split: no epoch has finished yet)" in err
    assert "Traceback" not in err
    after = _record(session_dir)
    assert _without_evaluations(after) == before  # status, error, test: untouched
    [entry] = after["evaluations"]
    assert entry["status"] == "failed" and "no ckpt.best.pt" in entry["error"]
    assert entry["metrics"] is None
    assert not (session_dir / "checkpoints" / "ckpt.best.pt").exists()
    # the way out that the message names: evaluate the latest checkpoint file
    latest = session_dir / "checkpoints" / "ckpt.latest.pt"
    assert f"'thelper resume {latest} --eval-only'" in err
    assert main(["resume", str(latest), "--eval-only"]) == 0
    after = _record(session_dir)
    assert _without_evaluations(after) == before
    assert after["evaluations"][-1]["status"] == "completed"
    assert after["evaluations"][-1]["checkpoint"] == "checkpoints/ckpt.latest.pt"
    # and the training still resumes (and finishes) from where it was interrupted
    assert main(["resume", str(session_dir)]) == 0
    final = _record(session_dir)
    assert final["status"] == "completed" and len(final["evaluations"]) == 2


def test_eval_only_keeps_the_training_record(tmp_path, mlp_config, monkeypatch, capsys):
    cfg = _config(mlp_config, tmp_path, epochs=1)
    assert main(["run", str(cfg), "--save-dir", str(tmp_path)]) == 0
    session_dir = tmp_path / mlp_config["name"]
    before = _record(session_dir)
    config_before = (session_dir / "config.latest.yaml").read_text()
    capsys.readouterr()
    assert main(["resume", str(session_dir), "--eval-only", "--map-location", "cpu"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[: out.rindex("}") + 1])
    after = _record(session_dir)
    assert _without_evaluations(after) == before
    assert (session_dir / "config.latest.yaml").read_text() == config_before
    [entry] = after["evaluations"]
    assert entry["status"] == "completed" and entry["error"] is None
    assert entry["checkpoint"] == "checkpoints/ckpt.best.pt"
    assert entry["split"] == "test" and entry["epoch"] == 1
    assert entry["metrics"] == pytest.approx(metrics)
    assert entry["metrics"]["accuracy"] == pytest.approx(before["test"]["accuracy"])

    # a SIGTERM during the evaluation: exit 130, recorded as an interrupted evaluation
    spy = _SignalAt(monkeypatch, "test", at=1)
    assert main(["resume", str(session_dir), "--eval-only"]) == 130
    assert spy.after <= 1
    monkeypatch.undo()
    after = _record(session_dir)
    assert _without_evaluations(after) == before
    assert [e["status"] for e in after["evaluations"]] == ["completed", "interrupted"]


# ----------------------------------------------------------------------- several ranks
def _ddp_rank(rank: int, world: int, init: str, config: dict, save_dir: str, resume: bool,
              signal_rank: int | None, out: str) -> None:
    """One rank of a gloo job; rank ``signal_rank`` gets SIGTERM at its first validation
    batch. Writes ``rank<N>.json``: the outcome and the batches computed per phase."""
    import torch.distributed as dist

    from thelper.runtime import Runtime

    torch.set_num_threads(1)
    # a hang guard: ranks that disagree on a collective fail within 2 minutes
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    result: dict = {}
    try:
        with pytest.MonkeyPatch.context() as mp:
            spy = _SignalAt(mp, "valid", at=1 if rank == signal_rank else None)
            runtime = Runtime(rank=rank, local_rank=rank, world_size=world)
            try:
                if resume:
                    resume_session(save_dir, runtime=runtime)
                else:
                    run_session(document_from_dict(config), save_dir, runtime=runtime)
                result["outcome"] = "completed"
            except KeyboardInterrupt as exc:
                result["outcome"] = f"interrupted: {exc}"
            result.update(counts=dict(spy.counts), after=spy.after, sent=spy.sent)
    finally:
        dist.destroy_process_group()
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(result))


def _spawn(tmp_path: Path, name: str, config: dict, save_dir: Path, *, resume: bool = False,
           signal_rank: int | None = None) -> list[dict]:
    out = tmp_path / name
    out.mkdir()
    init = f"file://{out / 'pg_init'}"
    torch.multiprocessing.spawn(
        _ddp_rank, args=(2, init, config, str(save_dir), resume, signal_rank, str(out)),
        nprocs=2, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.slow
def test_signal_on_one_rank_stops_every_rank_within_log_every_n_steps(tmp_path, mlp_config):
    """Under two ranks, a SIGTERM that only rank 1 gets during validation stops both ranks at
    the next agreed batch (every log_every_n_steps batches); the resume is exact."""
    every = 3
    mlp_config["trainer"]["epochs"] = 2
    mlp_config["trainer"]["params"] = {"log_every_n_steps": every}
    mlp_config["loaders"]["batch_size"] = 16  # 180 validation samples: 6 batches per rank
    ref = _spawn(tmp_path, "ref", mlp_config, tmp_path / "ref")
    assert [r["outcome"] for r in ref] == ["completed", "completed"]
    cut = _spawn(tmp_path, "cut", mlp_config, tmp_path / "cut", signal_rank=1)
    for r in cut:
        assert r["outcome"].startswith("interrupted: stop requested during the valid pass of "
                                       f"epoch 1, after {every} of 6 batches"), r
        assert r["counts"]["valid"] == every, r  # both ranks stopped at the agreed batch
    assert cut[1]["sent"] and cut[1]["after"] == every - 1
    session_dir = tmp_path / "cut" / mlp_config["name"]
    assert _record(session_dir)["status"] == "interrupted"
    latest = _latest(session_dir)
    assert latest["in_epoch"]["trained"] and latest["world_size"] == 2
    resumed = _spawn(tmp_path, "resumed", mlp_config, session_dir, resume=True)
    assert [r["outcome"] for r in resumed] == ["completed", "completed"]
    reference = tmp_path / "ref" / mlp_config["name"]
    _assert_same_weights(reference, session_dir)
    assert _record(session_dir)["metrics"] == _record(reference)["metrics"]
    assert _record(session_dir)["status"] == "completed"
