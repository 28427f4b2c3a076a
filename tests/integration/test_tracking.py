"""MLflow tracking against a real ``mlflow server``: live logging read back with MlflowClient,
``thelper runs upload`` with each conflict strategy, and a server killed mid-run."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from thelper.cli import main
from thelper.config import document_from_dict
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.records import load_record, metric_points, read_steps
from thelper.runner import run_session
from thelper.trackers.mlflow import params_of

from ..conftest import MLP_CONFIG
from . import mlflow_server as _server
from .mlflow_server import MlflowServer, start_server

mlflow_server = _server.mlflow_server  # the test session's shared server (a fixture)

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What the tracker sets in the environment is undone after each test."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("THELPER_MLFLOW_PARENT_RUN_ID", raising=False)


def _pm() -> ThelperPluginManager:
    return ThelperPluginManager(autoload=False, blocked=["tensorboard"])


def _config(epochs: int = 2, **extra: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(MLP_CONFIG)
    cfg["trainer"]["epochs"] = epochs
    cfg["trainer"]["params"] = {"log_every_n_steps": 1}
    cfg.update(extra)
    return cfg


def _check_run_matches_record(client: MlflowClient, run_id: str, session_dir: Path) -> None:
    """Params, every metric value (per epoch, per step, test) and artifact bytes."""
    rec = load_record(session_dir)
    run = client.get_run(run_id)
    assert run.data.params == params_of(rec["hparams"])
    assert run.data.tags["thelper.config_hash"] == rec["config_hash"]
    expected: dict[str, dict[int, float]] = {}
    for key, value, step, _ in metric_points(rec, read_steps(session_dir)):
        expected.setdefault(key, {})[step] = value
    epochs = len(rec["metrics"]["train"])
    assert set(expected["valid/accuracy"]) == set(range(1, epochs + 1))
    assert len(expected["step/loss"]) == rec["steps"]["count"] == rec["stopped_step"]
    for key, by_step in expected.items():
        history = client.get_metric_history(run_id, key)
        got = {m.step: m.value for m in history}
        assert got == pytest.approx(by_step), key
        assert len(history) == len(by_step), f"{key}: a value was sent twice"
    arts = {a["path"]: a for a in rec["artifacts"]}
    dest = session_dir.parent / f"download-{run_id}"
    for rel in ("config.latest.yaml", "checkpoints/ckpt.best.pt"):
        local = client.download_artifacts(run_id, rel, str(dest.mkdir(exist_ok=True) or dest))
        data = Path(local).read_bytes()
        assert data == (session_dir / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == arts[rel]["sha256"]
    reports = [p for p, a in arts.items() if a["kind"] in ("report", "figure")]
    assert reports
    listed = {f.path for f in client.list_artifacts(run_id, str(Path(reports[0]).parent))}
    assert reports[0] in listed


def test_live_run_is_read_back_with_mlflow_client(mlflow_server: MlflowServer,
                                                  tmp_path: Path) -> None:
    cfg = _config(labels=["baseline"], trackers=[{"type": "mlflow", "params": {
        "tracking_uri": mlflow_server.uri, "experiment": "live", "tags": {"team": "vision"}}}])
    session = run_session(document_from_dict(cfg), tmp_path, _pm())
    rec = load_record(session.session_dir)
    assert rec["status"] == "completed"
    (entry,) = rec["mlflow"]
    assert entry["tracking_uri"] == mlflow_server.uri
    assert entry["pending"] == {"metrics": 0, "params": 0, "tags": 0, "artifacts": [],
                                "status": False}
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(entry["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "digits-mlp"
    assert run.data.tags["team"] == "vision"
    assert run.data.tags["label.baseline"] == "true"
    assert run.data.tags["thelper.status"] == "completed"
    _check_run_matches_record(client, entry["run_id"], session.session_dir)
    # a second upload to the same server finds the run in run.json: nothing is missing
    assert main(["runs", "upload", str(session.session_dir), "--to", mlflow_server.uri,
                 "--json"]) == 0


def test_default_store_is_local_sqlite_and_parent_from_env(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No server: the default tracking URI is sqlite:///<save_dir>/mlflow.db; the parent run
    comes from THELPER_MLFLOW_PARENT_RUN_ID (how a grid nests its runs)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("grid", artifact_location=(tmp_path / "art").as_uri())
    parent = client.create_run(exp, run_name="grid-parent").info.run_id
    monkeypatch.setenv("THELPER_MLFLOW_PARENT_RUN_ID", parent)
    cfg = _config(epochs=1, trackers=[{"type": "mlflow", "params": {"experiment": "grid"}}])
    session = run_session(document_from_dict(cfg), tmp_path, _pm())
    (entry,) = load_record(session.session_dir)["mlflow"]
    assert entry["tracking_uri"] == uri
    run = client.get_run(entry["run_id"])
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid/accuracy")] == [1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished session trained without any tracker (an offline cluster job)."""
    save = tmp_path_factory.mktemp("offline")
    return run_session(document_from_dict(_config()), save, _pm()).session_dir


def _copy(session_dir: Path, where: Path) -> Path:
    """The same session on another machine: same config_hash, no MLflow record."""
    dest = where / session_dir.name
    shutil.copytree(session_dir, dest)
    rec = load_record(dest)
    rec.pop("mlflow", None)
    (dest / "run.json").write_text(json.dumps(rec))
    return dest


def _active(client: MlflowClient, experiment: str) -> list[Any]:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id])


def test_upload_with_each_conflict_strategy(mlflow_server: MlflowServer, trained: Path,
                                            tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    uri, exp = mlflow_server.uri, "uploads"
    client = MlflowClient(uri)
    first = _copy(trained, tmp_path / "one")
    up = ["runs", "upload", "--to", uri, "--experiment", exp, "--json"]
    assert main([*up, str(first)]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["action"] == "created"
    run_id = result["run_id"]
    assert load_record(first)["mlflow"][0]["run_id"] == run_id
    _check_run_matches_record(client, run_id, first)
    assert client.get_run(run_id).info.status == "FINISHED"
    # again: the record names the run, nothing is missing: not a conflict
    assert main([*up, str(first), "--on-conflict", "error"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert (result["action"], result["run_id"], result["metrics"]) == ("up to date", run_id, 0)

    other = _copy(trained, tmp_path / "two")  # same config_hash, unknown to the server
    assert main([*up, str(other), "--on-conflict", "error"]) == 1
    assert f"already has run {run_id}" in capsys.readouterr().err
    assert main([*up, str(other), "--on-conflict", "skip"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["action"] == "skipped"
    assert [r.info.run_id for r in _active(client, exp)] == [run_id]
    assert main([*up, str(other), "--on-conflict", "new"]) == 0
    new = json.loads(capsys.readouterr().out)["results"][0]
    assert new["action"] == "new"
    runs = {r.info.run_id: r.info.run_name for r in _active(client, exp)}
    assert runs == {run_id: "digits-mlp", new["run_id"]: "digits-mlp-2"}
    _check_run_matches_record(client, new["run_id"], other)

    third = _copy(trained, tmp_path / "three")
    assert main([*up, str(third), "--on-conflict", "replace"]) == 0
    replaced = json.loads(capsys.readouterr().out)["results"][0]
    assert replaced["action"] == "replaced"
    assert [r.info.run_id for r in _active(client, exp)] == [replaced["run_id"]]
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    _check_run_matches_record(client, replaced["run_id"], third)


def _wait_for_run(tracker: Any) -> None:
    """Until the tracker's sender has created the run and sent its params (an event, polled;
    the bound only turns a hang into a failure)."""
    deadline = time.monotonic() + 120
    while tracker.record()[-1]["delivered"]["params"] == 0:
        assert time.monotonic() < deadline, "the tracker never reached the tracking store"
        time.sleep(0.05)


class _KillServer:
    """Kills the MLflow server when the first checkpoint is written, once the tracker has
    created its run (so that the rest must be appended to that run later)."""

    def __init__(self, server: MlflowServer) -> None:
        self.server = server
        self.killed_at: int | None = None

    @hookimpl
    def thelper_checkpoint_saved(self, session: Any, path: Path, epoch: int,
                                 is_best: bool) -> None:
        if self.killed_at is not None:
            return
        _wait_for_run(session.extras["trackers"][0])
        self.server.kill()
        self.killed_at = epoch


@pytest.mark.slow
def test_server_killed_mid_run_then_upload_completes_the_run(tmp_path: Path) -> None:
    server = start_server(tmp_path / "server")
    try:
        killer = _KillServer(server)
        pm = _pm()
        pm.register(killer, name="kill-mlflow-server")
        cfg = _config(epochs=3, trackers=[{"type": "mlflow", "params": {
            "tracking_uri": server.uri, "experiment": "crash", "flush_timeout": 2}}])
        session = run_session(document_from_dict(cfg), tmp_path / "save", pm)
        assert killer.killed_at == 1
        rec = load_record(session.session_dir)
        assert rec["status"] == "completed"  # the training did not notice
        (entry,) = rec["mlflow"]
        assert entry["run_id"] and entry["last_error"]
        pending = entry["pending"]
        assert pending["metrics"] > 0 and pending["status"] is True
        assert "checkpoints/ckpt.best.pt" in pending["artifacts"]
        server = start_server(tmp_path / "server", port=server.port)  # same store, same URI
        assert main(["runs", "upload", str(session.session_dir), "--to", server.uri]) == 0
        client = MlflowClient(server.uri)
        _check_run_matches_record(client, entry["run_id"], session.session_dir)
        run = client.get_run(entry["run_id"])
        assert run.info.status == "FINISHED"
        (after,) = load_record(session.session_dir)["mlflow"]
        assert after["run_id"] == entry["run_id"]
        assert after["pending"]["metrics"] == 0 and after["pending"]["artifacts"] == []
    finally:
        server.stop()


def test_resume_continues_the_same_run_and_checks_it(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """A resume logs into the run that run.json names (one run, epochs 1..2); once that run
    is deleted on the server, the resume warns and logs into a new run instead of into a
    run that is not this session's. The sender's MLflow INFO lines (it creates the SQLite
    store here) stay out of the console."""
    from thelper.runner import resume_session

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _config(epochs=1, trackers=[{"type": "mlflow", "params": {
        "tracking_uri": uri, "experiment": "resumed"}}])
    session = run_session(document_from_dict(cfg), tmp_path, _pm())
    assert "MLflow database tables" not in capfd.readouterr().err
    (first,) = load_record(session.session_dir)["mlflow"]
    resume_session(session.session_dir, ["trainer.epochs=2"], pm=_pm())
    (entry,) = load_record(session.session_dir)["mlflow"]
    assert entry["run_id"] == first["run_id"]
    client = MlflowClient(uri)
    history = client.get_metric_history(first["run_id"], "valid/accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    assert client.get_run(first["run_id"]).info.status == "FINISHED"

    client.delete_run(first["run_id"])
    resume_session(session.session_dir, ["trainer.epochs=3"], pm=_pm())
    log = (session.session_dir / "logs" / "trainer.log").read_text()
    assert f"run {first['run_id']} named in run.json was deleted" in log
    (entry,) = load_record(session.session_dir)["mlflow"]
    assert entry["run_id"] != first["run_id"]
    new = client.get_run(entry["run_id"])
    assert new.info.lifecycle_stage == "active" and new.info.status == "FINISHED"
    assert new.data.tags["thelper.session"] == session.name
    assert [m.step for m in client.get_metric_history(new.info.run_id,
                                                      "valid/accuracy")] == [3]


class _KillSender:
    """SIGKILLs the tracker's sender process once it has created the run (at the first
    checkpoint written after that)."""

    def __init__(self) -> None:
        self.killed_pid: int | None = None

    @hookimpl
    def thelper_checkpoint_saved(self, session: Any, path: Path, epoch: int,
                                 is_best: bool) -> None:
        if self.killed_pid is not None:
            return
        tracker = session.extras["trackers"][0]
        _wait_for_run(tracker)
        tracker._proc.kill()
        tracker._proc.wait()
        self.killed_pid = tracker._proc.pid


def test_sender_process_killed_mid_run_then_upload_completes_the_run(tmp_path: Path) -> None:
    """The sender process dying does not touch the training: the session completes, its
    record says what was not delivered and why, and an upload completes the same run."""
    killer = _KillSender()
    pm = _pm()
    pm.register(killer, name="kill-mlflow-sender")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = _config(epochs=2, trackers=[{"type": "mlflow", "params": {
        "tracking_uri": uri, "experiment": "sender"}}])
    session = run_session(document_from_dict(cfg), tmp_path, pm)
    assert killer.killed_pid is not None
    rec = load_record(session.session_dir)
    assert rec["status"] == "completed"
    (entry,) = rec["mlflow"]
    assert entry["run_id"] and "exit code -9" in entry["last_error"]
    assert entry["pending"]["metrics"] > 0 and entry["pending"]["status"] is True
    assert "checkpoints/ckpt.best.pt" in entry["pending"]["artifacts"]
    log = (session.session_dir / "logs" / "trainer.log").read_text()
    assert "MLflow tracker: not delivered to" in log and "thelper runs upload" in log
    assert main(["runs", "upload", str(session.session_dir), "--to", uri]) == 0
    client = MlflowClient(uri)
    _check_run_matches_record(client, entry["run_id"], session.session_dir)
    assert client.get_run(entry["run_id"]).info.status == "FINISHED"


def test_sender_process_stops_when_the_training_process_is_gone(tmp_path: Path) -> None:
    """The sender's input ending without a ``close`` (its training process died) ends the
    sender instead of leaving it behind (whether it reached the store before it read the end
    of its input is a race, and not asserted)."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-P", "-m", "thelper.trackers._mlflow_sender"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    start = {"op": "start", "seq": 1, "params": {}, "tags": {}, "config": {
        "tracking_uri": f"sqlite:///{tmp_path / 'never.db'}", "shown_uri": "x",
        "experiment": "e", "session_dir": str(tmp_path)}}
    assert proc.stdin is not None
    proc.stdin.write((json.dumps(start) + "\n").encode())
    proc.stdin.close()
    assert proc.wait(60) == 0
    assert proc.stdout is not None
    reports = [json.loads(line) for line in proc.stdout.read().splitlines()]
    assert reports and reports[-1]["op"] == "state" and reports[-1]["seen"] == 1
    assert reports[-1]["pending"]["status"] is True  # never closed: no final status sent
