"""`thelper run` / `thelper resume` end to end on scikit-learn's digits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from thelper.cli import main
from thelper.config import document_from_dict
from thelper.exceptions import ConfigError, SessionError
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.runner import resume_session, run_session

ROOT = Path(__file__).resolve().parents[2]
CKPT_KEYS = {"format", "version", "name", "epoch", "step", "model", "model_type",
             "model_params", "optimizer", "scheduler", "monitor", "early_stopping", "history",
             "rng", "config", "task", "seeds", "source", "torch"}


@pytest.fixture(scope="module")
def session_dir(tmp_path_factory):
    from tests.conftest import MLP_CONFIG

    save = tmp_path_factory.mktemp("runs")
    cfg = json.loads(json.dumps(MLP_CONFIG))
    cfg["trainer"]["epochs"] = 4
    cfg["trainer"]["save_freq"] = 2
    path = save / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--save-dir", str(save)]) == 0
    return save / "digits-mlp"


def test_session_directory_layout(session_dir):
    names = {p.relative_to(session_dir).as_posix() for p in session_dir.rglob("*")}
    for expected in ["checkpoints/ckpt.0002.pt", "checkpoints/ckpt.0004.pt",
                     "checkpoints/ckpt.best.pt", "checkpoints/ckpt.latest.pt",
                     "logs/packages.txt", "logs/model.txt", "logs/task.json",
                     "logs/splits.json", "logs/trainer.log", "logs/datasets.txt",
                     "config.latest.yaml", "run.json",
                     "output/digits-mlp/test/confmat.csv", "output/digits-mlp/test/confmat.png",
                     "output/digits-mlp/test/report.txt", "output/digits-mlp/valid/confmat.png"]:
        assert expected in names, expected
    assert "checkpoints/ckpt.0001.pt" not in names  # save_freq: 2
    assert any(n.startswith("logs/config.") and n.endswith(".yaml") for n in names)
    for split in ("train", "valid", "test"):
        assert list((session_dir / "output" / "digits-mlp" / split).glob("events.out.tfevents.*"))
    log = (session_dir / "logs" / "trainer.log").read_text()
    assert "epoch 4/4" in log and "test of the best model" in log
    assert "torch==" in (session_dir / "logs" / "packages.txt").read_text()


def test_checkpoints_open_with_weights_only(session_dir):
    for path in (session_dir / "checkpoints").glob("*.pt"):
        ckpt = torch.load(path, weights_only=True)
        assert CKPT_KEYS <= set(ckpt), path
    latest = torch.load(session_dir / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert latest["epoch"] == 4 and latest["step"] == 4 * 23  # 1437 train samples / 64
    assert latest["task"]["params"]["class_names"] == [str(i) for i in range(10)]
    best = torch.load(session_dir / "checkpoints" / "ckpt.best.pt", weights_only=True)
    assert best["epoch"] == latest["monitor"]["best_epoch"]


def test_run_json_contents(session_dir):
    run = json.loads((session_dir / "run.json").read_text())
    assert run["name"] == "digits-mlp" and run["status"] == "completed"
    for key in ("config", "hparams", "metrics", "test", "seeds", "platform", "git",
                "started_at", "ended_at"):
        assert key in run, key
    assert [e["epoch"] for e in run["metrics"]["train"]] == [1, 2, 3, 4]
    assert len(run["metrics"]["valid"]) == 4
    assert run["test"]["split"] == "test"
    assert run["test"]["accuracy"] >= 0.85  # an MLP after 4 epochs on digits
    assert run["seeds"] == {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0}
    assert run["hparams"]["trainer.optimization.optimizer.params.lr"] == 0.005
    assert run["platform"]["torch"] == torch.__version__
    splits = json.loads((session_dir / "logs" / "splits.json").read_text())
    idx = splits["datasets"]["digits"]["indices"]
    assert not set(idx["train"]) & set(idx["test"])
    assert len(idx["train"]) + len(idx["valid"]) + len(idx["test"]) == 1797


def test_tensorboard_scalars_read_back(session_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = json.loads((session_dir / "run.json").read_text())
    acc = EventAccumulator(str(session_dir / "output" / "digits-mlp" / "valid"))
    acc.Reload()
    assert {"loss", "accuracy"} <= set(acc.Tags()["scalars"])
    values = [e.value for e in acc.Scalars("accuracy")]
    assert [e.step for e in acc.Scalars("accuracy")] == [1, 2, 3, 4]
    expected = [e["accuracy"] for e in run["metrics"]["valid"]]
    assert values == pytest.approx(expected, rel=1e-6)
    assert "confmat" in acc.Tags()["images"]


def test_existing_session_dir_is_not_overwritten(session_dir, capsys):
    before = (session_dir / "run.json").read_text()
    cfg = session_dir / "config.latest.yaml"
    code = main(["run", str(cfg), "--save-dir", str(session_dir.parent)])
    err = capsys.readouterr().err
    assert code == 2
    assert "already exists" in err and "thelper resume" in err and "Traceback" not in err
    assert (session_dir / "run.json").read_text() == before


def test_eval_only_reproduces_test_metrics(session_dir, capsys):
    run = json.loads((session_dir / "run.json").read_text())
    assert main(["resume", str(session_dir), "--eval-only", "--map-location", "cpu"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads(out[: out.rindex("}") + 1])
    assert metrics["accuracy"] == pytest.approx(run["test"]["accuracy"])


class _StopAfter:
    """A plugin that interrupts the session after a given epoch (like Ctrl-C)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    @hookimpl
    def thelper_epoch_end(self, session, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


def test_sessions_leave_no_report_thread_behind(tmp_path, mlp_config):
    """The report worker's thread ends with its work: sessions run one after another in a
    process (a grid worker, a notebook) do not pile up threads (it used to keep one per
    session, waiting forever). Joined, not slept on; the bound only turns a hang into a
    failure."""
    import threading

    from thelper.train.reports import ReportWorker

    for save in ("a", "b"):
        run_session(document_from_dict(mlp_config), tmp_path / save)
    for t in threading.enumerate():
        if t.name == "thelper-reports":
            t.join(timeout=60)
            assert not t.is_alive(), "a report thread is still waiting after its session"
    worker, done = ReportWorker(), []
    for round_ in range(2):  # a thread per busy spell; the queue works again after one ends
        worker.submit("x", lambda r=round_: done.append(r))
        worker.close()
        assert done == list(range(round_ + 1)) and worker._thread is None

    def exits() -> None:  # a plugin's figure hook calling sys.exit in the worker
        raise SystemExit(3)

    worker.submit("a", exits)
    worker.submit("b", lambda: done.append("after"))
    closer = threading.Thread(target=worker.close, daemon=True)
    closer.start()
    closer.join(timeout=60)  # a bound that turns a hang into a failure
    assert not closer.is_alive(), "the worker stopped at a job's SystemExit"
    assert done[-1] == "after"  # it logged the exit and went on


def test_resume_gives_identical_weights(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 4
    full = run_session(document_from_dict(mlp_config), tmp_path / "full")
    pm = ThelperPluginManager()
    pm.register(_StopAfter(2), name="stopper")
    with pytest.raises(KeyboardInterrupt):
        run_session(document_from_dict(mlp_config), tmp_path / "cut", pm)
    cut = tmp_path / "cut" / "digits-mlp"
    run = json.loads((cut / "run.json").read_text())
    assert run["status"] == "interrupted"
    assert torch.load(cut / "checkpoints" / "ckpt.latest.pt", weights_only=True)["epoch"] == 2
    resumed = resume_session(cut)
    a = _weights(full.session_dir / "checkpoints" / "ckpt.latest.pt")
    b = _weights(resumed.session_dir / "checkpoints" / "ckpt.latest.pt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    run = json.loads((cut / "run.json").read_text())
    assert run["status"] == "completed" and len(run["metrics"]["train"]) == 4
    assert run["test"]["accuracy"] == pytest.approx(full.test_metrics["accuracy"])


def test_resume_with_more_epochs(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 1
    s = run_session(document_from_dict(mlp_config), tmp_path)
    resumed = resume_session(s.session_dir, ["trainer.epochs=2"])
    ckpt = torch.load(resumed.session_dir / "checkpoints" / "ckpt.latest.pt",
                      weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["config"]["trainer"]["epochs"] == 2


def test_resume_refuses_to_change_the_seeds(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 1
    s = run_session(document_from_dict(mlp_config), tmp_path)
    before = (s.session_dir / "checkpoints" / "ckpt.latest.pt").read_bytes()
    with pytest.raises(ConfigError, match=r"keeps its seeds \(seeds.torch: recorded 0, asked 7\)"
                       r".*config.latest.yaml"):
        resume_session(s.session_dir, ["trainer.epochs=2", "seeds.torch=7"])
    assert (s.session_dir / "checkpoints" / "ckpt.latest.pt").read_bytes() == before
    resume_session(s.session_dir, ["trainer.epochs=2", "seeds.torch=0"])  # unchanged: fine


def test_unwritable_save_dir_is_a_clear_error(tmp_path, mlp_config):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SessionError, match="not writable"):
        run_session(document_from_dict(mlp_config), blocker / "sub")


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "thelper"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_cli_user_errors_are_one_line_with_exit_codes(tmp_path, write_config, mlp_config):
    res = _cli("run", "missing.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: config file 'missing.yaml' does not exist")
    assert "Traceback" not in res.stderr
    mlp_config["model"]["type"] = "resnt"
    res = _cli("run", str(write_config(mlp_config)), cwd=tmp_path)
    assert res.returncode == 2 and "model.type: 'resnt' is not a registered model" in res.stderr
    assert "Traceback" not in res.stderr
    res = _cli("resume", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert res.returncode == 1 and "neither a session directory" in res.stderr
    res = _cli("run", "--bogus", cwd=tmp_path)
    assert res.returncode == 2
    res = _cli("--help", cwd=tmp_path)
    assert res.returncode == 0 and "thelper run" in res.stdout
