"""Run records without training: artifacts, steps, metric points, git, `thelper runs`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from thelper.cli import main
from thelper.config import document_from_dict, validate_document
from thelper.exceptions import ConfigError
from thelper.plugins import ThelperPluginManager
from thelper.records import (
    RecordError,
    collect_artifacts,
    find_sessions,
    load_record,
    metric_points,
    read_steps,
    summarize,
)
from thelper.session import git_info

from ..conftest import MLP_CONFIG


def _record(name: str, lr: float, acc: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "name": name, "status": "completed", "stopped_reason": "completed",
        "config_hash": hashlib.sha256(name.encode()).hexdigest(),
        "started_at": "2026-01-01T00:00:00+00:00", "ended_at": "2026-01-01T00:01:00+00:00",
        "hparams": {"trainer.epochs": len(acc), "optimizer.lr": lr, "loaders.batch_size": 64},
        "metrics": {"train": [{"epoch": i + 1, "loss": 1.0 / (i + 1), "lr": lr}
                              for i in range(len(acc))],
                    "valid": [{"epoch": i + 1, "accuracy": a} for i, a in enumerate(acc)]},
        "epochs": [{"epoch": i + 1, "started_at": f"2026-01-01T00:00:{i:02d}+00:00",
                    "ended_at": f"2026-01-01T00:00:{i + 1:02d}+00:00", "duration_s": 1.0}
                   for i in range(len(acc))],
        "best": {"metric": "accuracy", "split": "valid", "value": max(acc),
                 "epoch": acc.index(max(acc)) + 1},
        "test": {"split": "test", "epoch": acc.index(max(acc)) + 1, "accuracy": max(acc) - 0.01},
        "labels": ["x"], **extra,
    }


def _session(root: Path, rec: dict[str, Any]) -> Path:
    d = root / rec["name"]
    (d / "checkpoints").mkdir(parents=True)
    (d / "logs").mkdir()
    (d / "run.json").write_text(json.dumps(rec))
    return d


def test_collect_artifacts_kinds_sizes_and_hashes(tmp_path: Path) -> None:
    d = _session(tmp_path, _record("a", 0.1, [0.5]))
    files = {"checkpoints/ckpt.best.pt": b"weights", "config.latest.yaml": b"name: a\n",
             "logs/config.20260101-000000.yaml": b"name: a\n", "logs/trainer.log": b"log\n",
             "output/a/valid/confmat.png": b"\x89PNG", "output/a/test/report.json": b"{}",
             "output/a/train/events.out.tfevents.1.vm": b"ev", "export/model.pt": b"ts",
             "checkpoints/.ckpt.best.pt.x.tmp": b"partial", ".lock": b"1\n"}
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    arts = collect_artifacts(d)
    by = {a["path"]: a for a in arts}
    assert set(by) == set(files) - {"checkpoints/.ckpt.best.pt.x.tmp", ".lock"}
    kinds = {p: a["kind"] for p, a in by.items()}
    assert kinds == {"checkpoints/ckpt.best.pt": "checkpoint", "config.latest.yaml": "config",
                     "logs/config.20260101-000000.yaml": "config", "logs/trainer.log": "log",
                     "output/a/valid/confmat.png": "figure",
                     "output/a/test/report.json": "report",
                     "output/a/train/events.out.tfevents.1.vm": "events",
                     "export/model.pt": "export"}
    for p, a in by.items():
        assert a["size"] == len(files[p])
        assert a["sha256"] == hashlib.sha256(files[p]).hexdigest()
    # an unchanged file keeps its recorded hash (not re-read); a changed one is re-hashed
    stale = [{**a, "sha256": "cached"} for a in arts]
    (d / "logs/trainer.log").write_bytes(b"log\nmore\n")
    again = {a["path"]: a["sha256"] for a in collect_artifacts(d, stale)}
    assert again["config.latest.yaml"] == "cached"
    assert again["logs/trainer.log"] == hashlib.sha256(b"log\nmore\n").hexdigest()


def test_artifacts_skip_links_out_of_the_session(tmp_path: Path) -> None:
    d = _session(tmp_path, _record("a", 0.1, [0.5]))
    secret = tmp_path / "secret.txt"
    secret.write_text("no")
    (d / "output").mkdir()
    (d / "output" / "leak.txt").symlink_to(secret)
    (d / "checkpoints" / "ckpt.0001.pt").write_bytes(b"w")
    (d / "checkpoints" / "ckpt.latest.pt").symlink_to("ckpt.0001.pt")
    paths = {a["path"] for a in collect_artifacts(d)}
    assert "output/leak.txt" not in paths
    assert {"checkpoints/ckpt.0001.pt", "checkpoints/ckpt.latest.pt"} <= paths


def test_steps_keep_the_last_value_of_a_replayed_step_and_skip_a_torn_line(
        tmp_path: Path) -> None:
    d = _session(tmp_path, _record("a", 0.1, [0.5]))
    lines = [{"step": 1, "split": "train", "loss": 2.0, "lr": 0.1, "epoch": 1.0, "time": 1.0},
             {"step": 2, "split": "train", "loss": 1.5, "lr": 0.1, "epoch": 1.0, "time": 2.0},
             {"step": 2, "split": "train", "loss": 1.4, "lr": 0.1, "epoch": 1.0, "time": 3.0}]
    (d / "logs" / "steps.jsonl").write_text(
        "".join(json.dumps(x) + "\n" for x in lines) + '{"step": 3, "lo')
    steps = read_steps(d)
    assert [(s["step"], s["loss"]) for s in steps] == [(1, 2.0), (2, 1.4)]
    points = metric_points(load_record(d), steps)
    keys = {(k, s) for k, _, s, _ in points}
    assert {("step/loss", 1), ("step/loss", 2), ("step/lr", 2), ("train/loss", 1),
            ("valid/accuracy", 1), ("test/accuracy", 1)} <= keys
    assert not any(k == "step/epoch" or k == "step/time" for k, *_ in points)
    assert len(keys) == len(points)  # one value per (key, step)


def test_find_and_load_errors(tmp_path: Path) -> None:
    a = _session(tmp_path / "save", _record("a", 0.1, [0.5]))
    b = _session(tmp_path / "save" / "nested", _record("b", 0.1, [0.5]))
    (b / "inner").mkdir()
    (b / "inner" / "run.json").write_text("{}")  # not searched: inside a session
    assert find_sessions(tmp_path / "save") == [a, b]
    with pytest.raises(RecordError, match="not a session directory"):
        load_record(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run.json").write_text("[1, 2]")
    with pytest.raises(RecordError, match="not a run record"):
        load_record(tmp_path / "bad")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_info_of_a_config_in_another_repository(tmp_path: Path) -> None:
    repo = tmp_path / "configs"
    repo.mkdir()
    _git(repo, "init", "-q")
    _git(repo, "remote", "add", "origin", "https://user:token@example.org/team/configs.git")
    (repo / "cfg.yaml").write_text("name: x\n")
    _git(repo, "add", "cfg.yaml")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "c")
    info = git_info(repo / "cfg.yaml")
    assert info is not None
    assert info["commit"] == _git(repo, "rev-parse", "HEAD")
    assert info["dirty"] is False
    assert info["remote"] == "https://example.org/team/configs.git"  # no credentials
    assert Path(info["root"]).resolve() == repo.resolve()
    (repo / "cfg.yaml").write_text("name: y\n")
    assert git_info(repo / "cfg.yaml")["dirty"] is True
    assert git_info(tmp_path / "elsewhere") is None or git_info(tmp_path)["root"] != str(repo)


def test_trackers_and_labels_sections_validate() -> None:
    pm = ThelperPluginManager(autoload=False)
    good = {**MLP_CONFIG, "labels": ["baseline"],
            "trackers": [{"type": "mlflow", "params": {"experiment": "e", "tags": {"a": "b"}}}]}
    cfg = validate_document(document_from_dict(good), pm.registry)
    assert cfg.trackers.root[0].params.experiment == "e"
    assert cfg.labels.root == ["baseline"]
    for bad, where in (
            ({"trackers": [{"type": "mlfow"}]}, "trackers.0.type: 'mlfow' is not a registered "
                                                "tracker; did you mean 'mlflow'"),
            ({"trackers": [{"type": "mlflow", "params": {"tracking_uri": "evil://x"}}]},
             "unsupported tracking URI scheme 'evil'"),
            ({"trackers": [{"type": "mlflow", "params": {"experimnt": "e"}}]},
             "did you mean 'experiment'"),
            ({"trackers": {"type": "mlflow"}}, "trackers: Input should be a valid list")):
        with pytest.raises(ConfigError) as exc:
            validate_document(document_from_dict({**MLP_CONFIG, **bad}), pm.registry)
        assert where in str(exc.value)


def test_runs_list_show_compare_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = _session(tmp_path, _record("a", 0.1, [0.5, 0.7]))
    b = _session(tmp_path, _record("b", 0.01, [0.6, 0.65, 0.8], early_stopping=True))
    assert main(["runs", "list", str(tmp_path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["runs"]
    assert [(r["name"], r["best"], r["best_epoch"], r["epochs"]) for r in listed] == [
        ("a", 0.7, 2, 2), ("b", 0.8, 3, 3)]
    assert listed[0] == summarize(a, load_record(a))
    assert main(["runs", "show", str(b), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["early_stopping"] is True
    assert main(["runs", "compare", str(a), str(b), "--json"]) == 0
    cmp = json.loads(capsys.readouterr().out)
    assert cmp["differs"] == ["trainer.epochs", "optimizer.lr"]
    assert cmp["hparams"]["loaders.batch_size"] == [64, 64]
    assert cmp["metrics"]["valid/accuracy"] == [0.7, 0.8]
    assert cmp["metrics"]["test/accuracy"] == [pytest.approx(0.69), pytest.approx(0.79)]
    # the tables: every session and the differing hyperparameters are shown
    assert main(["runs", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.7 (2)" in out and "0.8 (3)" in out and "completed" in out
    assert main(["runs", "show", str(a)]) == 0
    out = capsys.readouterr().out
    assert "valid accuracy" in out and "valid/accuracy 0.7 at epoch 2" in out
    assert main(["runs", "compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "optimizer.lr" in out and "loaders.batch_size" not in out


def test_runs_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "show", str(tmp_path)]) == 2
    assert "not a session directory" in capsys.readouterr().err
    a = _session(tmp_path, _record("a", 0.1, [0.5]))
    assert main(["runs", "compare", str(a)]) == 2
    assert main(["runs", "upload", str(a), "--to", "http://127.0.0.1:1",
                 "--on-conflict", "merge"]) == 2
    assert "--on-conflict 'merge'" in capsys.readouterr().err
    assert main(["runs", "upload", str(tmp_path / "none"), "--to", "sqlite:///x.db"]) == 2


# ---------------------------------------------------------------- hostile session folders
def test_a_fifo_run_json_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os
    import sys

    d = tmp_path / "s"
    d.mkdir()
    os.mkfifo(d / "run.json")
    with pytest.raises(RecordError, match="not a regular file"):
        load_record(d)
    # the CLI, in a child process: a hang fails the test through the timeout
    out = subprocess.run([sys.executable, "-m", "thelper", "runs", "show", str(d)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2, out.stderr
    assert "run.json" in out.stderr and "Traceback" not in out.stderr


def test_upload_of_a_folder_goes_past_an_unreadable_session(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A folder of sessions: one whose run.json is a dangling link is reported (one line)
    and the others are still uploaded; the exit code is the failure's. Once mended, an
    upload sends it and finds the others up to date."""
    root = tmp_path / "runs"
    a = _session(root, _record("a", 0.1, [0.5]))
    c = _session(root, _record("c", 0.3, [0.7]))
    b = root / "b"
    b.mkdir()
    (b / "run.json").symlink_to(tmp_path / "gone.json")
    up = ["runs", "upload", str(root), "--to", f"sqlite:///{tmp_path / 'mlflow.db'}",
          "--no-artifacts", "--json"]
    assert main(up) == 2
    captured = capsys.readouterr()
    results = {Path(r["session"]).name: r for r in json.loads(captured.out)["results"]}
    assert {k: r["action"] for k, r in results.items()} == {
        "a": "created", "b": "failed", "c": "created"}
    assert "link to a missing file" in results["b"]["error"]
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and "link to a missing file" in err[0]
    assert "1 of 3 sessions" in err[1] and "2 done" in err[1]
    assert all(load_record(d)["mlflow"][0]["run_id"] for d in (a, c))

    (b / "run.json").unlink()
    (b / "run.json").write_text(json.dumps(_record("b", 0.2, [0.6])))
    assert main(up) == 0
    results = {Path(r["session"]).name: r["action"]
               for r in json.loads(capsys.readouterr().out)["results"]}
    assert results == {"a": "up to date", "b": "created", "c": "up to date"}


def test_a_huge_run_json_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import thelper.records as records

    d = _session(tmp_path, _record("a", 0.1, [0.5]))
    monkeypatch.setattr(records, "MAX_RECORD_BYTES", 100)
    with pytest.raises(RecordError, match="larger than"):
        load_record(d)


def test_artifacts_and_steps_skip_fifos(tmp_path: Path) -> None:
    import os

    d = _session(tmp_path, _record("a", 0.1, [0.5]))
    (d / "output").mkdir()
    (d / "output" / "report.json").write_text("{}")
    os.mkfifo(d / "output" / "pipe.json")
    os.mkfifo(d / "output" / "linked.json.fifo")
    (d / "output" / "link.json").symlink_to("linked.json.fifo")  # a link to a FIFO inside
    os.mkfifo(d / "logs" / "steps.jsonl")
    paths = {a["path"] for a in collect_artifacts(d)}
    assert paths == {"output/report.json"}
    assert read_steps(d) == []


def _bad_record() -> dict[str, Any]:
    rec = _record("[/]", 0.1, [0.5, 0.7], description="[bold]x[/]", labels=["[red]"])
    rec["artifacts"] = [{"path": "output/[/].png"}, {"kind": "report"}, "junk",
                        {"path": "checkpoints/ckpt.best.pt", "kind": "checkpoint",
                         "size": 7, "sha256": "ab" * 32}]
    rec["epochs"] = [{"epoch": 1, "duration_s": "[/]"}, "junk"]
    rec["metrics"]["valid"].append({"epoch": "[/]", "[/]": 1.0})
    rec["hparams"]["[/]"] = "[/]"
    return rec


def test_runs_tables_escape_markup_and_survive_missing_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _session(tmp_path, _bad_record())
    (tmp_path / "b").mkdir()
    b = _session(tmp_path / "b", _record("b", 0.01, [0.6]))
    assert main(["runs", "show", str(a)]) == 0
    out = capsys.readouterr().out
    assert "[/]" in out and "[bold]x[/]" in out and "output/[/].png" in out
    assert main(["runs", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[/]" in out and "[red]" in out
    assert main(["runs", "compare", str(a), str(b)]) == 0
    assert "[/]" in capsys.readouterr().out
    # fields of the wrong type are shown as they can be
    c = _session(tmp_path, {**_record("c", 0.1, [0.5]), "epochs": 3, "metrics": [1],
                            "artifacts": {"x": 1}, "mlflow": ["junk", {"pending": 3}]})
    assert main(["runs", "show", str(c)]) == 0
    assert main(["runs", "compare", str(b), str(c)]) == 0
    # a record that cannot be read or summarised is reported by name; the others are listed
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "run.json").write_text("{")
    import thelper.records as records

    real = records.summarize

    def summarize(d: Path, rec: dict[str, Any]) -> dict[str, Any]:
        if rec.get("name") == "c":
            raise TypeError("bad field")
        return real(d, rec)

    monkeypatch.setattr(records, "summarize", summarize)
    capsys.readouterr()
    assert main(["runs", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out.replace("\n", "")
    assert "unreadable" in out and str(tmp_path / "d" / "run.json") in out
    assert str(c / "run.json") in out and "bad field" in out
    assert "0.7 (2)" in out and "0.6 (1)" in out


def test_runs_list_names_a_run_json_that_is_not_a_regular_file(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A FIFO or a dangling link named run.json is listed as unreadable (never opened, so
    nothing blocks), not left out without a word."""
    _session(tmp_path, _record("ok", 0.1, [0.5]))
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "run.json")
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "run.json").symlink_to(tmp_path / "nowhere.json")
    assert main(["runs", "list", str(tmp_path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in out["runs"]] == ["ok"]
    errors = {Path(p["path"]).name: p["error"] for p in out["unreadable"]}
    assert set(errors) == {"fifo", "link"}
    assert "not a regular file" in errors["fifo"]
    assert "link to a missing file" in errors["link"]


# ---------------------------------------------------------------- tracking URIs and upload
def test_redact_uri_keeps_scheme_host_and_path() -> None:
    from thelper.records import redact_uri

    assert redact_uri("https://user:tok@host:5000/mlflow") == "https://host:5000/mlflow"
    assert redact_uri("https://tok@host") == "https://host"
    assert redact_uri("see http://u:p@h/x and https://u2@h2") == "see http://h/x and https://h2"
    assert redact_uri("sqlite:////tmp/a@b/mlflow.db") == "sqlite:////tmp/a@b/mlflow.db"
    assert redact_uri("http://host/x?who=a@b") == "http://host/x?who=a@b"


def test_mlflow_tracker_record_has_no_credentials() -> None:
    from thelper.trackers.mlflow import MlflowTracker

    t = MlflowTracker(tracking_uri="https://user:secret@mlflow.example.org/")
    assert [e["tracking_uri"] for e in t.record()] == ["https://mlflow.example.org"]
    assert "secret" not in json.dumps(t.record())


class _FakeClient:
    """The MlflowClient calls of ``upload_session``, in memory (no server)."""

    def __init__(self) -> None:
        from types import SimpleNamespace as NS

        self.ns = NS
        self.experiments = {"thelper": "1", "other": "2"}
        self.runs: dict[str, Any] = {}
        self.logged: dict[str, list[Any]] = {}

    def add_run(self, run_id: str, exp_id: str, tags: dict[str, str]) -> None:
        self.runs[run_id] = self.ns(
            info=self.ns(run_id=run_id, experiment_id=exp_id, lifecycle_stage="active",
                         run_name=run_id),
            data=self.ns(params={}, tags=dict(tags)))

    def get_experiment_by_name(self, name: str) -> Any:
        eid = self.experiments.get(name)
        return self.ns(experiment_id=eid, lifecycle_stage="active") if eid else None

    def get_run(self, run_id: str) -> Any:
        from mlflow.exceptions import MlflowException

        if run_id not in self.runs:
            raise MlflowException(f"no run {run_id}")
        return self.runs[run_id]

    def search_runs(self, exp_ids: list[str], filter_string: str, max_results: int) -> list:
        chash = filter_string.split("'")[1]
        return [r for r in self.runs.values() if r.info.experiment_id in exp_ids
                and r.data.tags.get("thelper.config_hash") == chash]

    def create_run(self, exp_id: str, run_name: str, tags: dict[str, str],
                   start_time: Any) -> Any:
        run_id = f"new{len(self.runs)}"
        self.add_run(run_id, exp_id, tags)
        return self.runs[run_id]

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()
                  ) -> None:
        self.logged.setdefault(run_id, []).extend([*metrics, *params, *tags])

    def get_metric_history(self, run_id: str, key: str) -> list:
        return []

    def list_artifacts(self, run_id: str, path: Any = None) -> list:
        return []

    def log_artifact(self, run_id: str, local: str, path: Any = None) -> None:
        self.logged.setdefault(run_id, []).append(local)

    def set_terminated(self, run_id: str, status: str, end_time: Any) -> None:
        pass


def test_upload_trusts_the_recorded_run_only_in_its_experiment_and_config(
        tmp_path: Path) -> None:
    from thelper.trackers.upload import UploadConflictError, upload_session

    uri = "https://user:secret@mlflow.example.org"
    rec = _record("a", 0.1, [0.5])
    chash = rec["config_hash"]
    rec["mlflow"] = [{"tracking_uri": uri + "/", "experiment": "thelper", "run_id": "r1"}]
    d = _session(tmp_path, rec)
    said: list[str] = []
    # the recorded run is in another experiment: not appended to, a new run is created
    client = _FakeClient()
    client.add_run("r1", "2", {"thelper.config_hash": chash})
    res = upload_session(d, uri, client=client, progress=said.append)
    assert res["action"] == "created" and res["run_id"] != "r1" and "r1" not in client.logged
    stored = load_record(d)["mlflow"]
    assert [e["tracking_uri"] for e in stored] == ["https://mlflow.example.org"]
    assert "secret" not in (d / "run.json").read_text() + "".join(said)
    # the recorded run has another config_hash: the conflict path decides (error here)
    rec["mlflow"][0]["run_id"] = "r2"
    (d / "run.json").write_text(json.dumps(rec))
    client = _FakeClient()
    client.add_run("r2", "1", {"thelper.config_hash": "0" * 64})
    client.add_run("r3", "1", {"thelper.config_hash": chash})
    with pytest.raises(UploadConflictError, match="r3") as info:
        upload_session(d, uri, on_conflict="error", client=client)
    assert "secret" not in str(info.value) and "r2" not in client.logged
    # the recorded run matches both: appended to (the redacted URIs compared)
    client = _FakeClient()
    client.add_run("r2", "1", {"thelper.config_hash": chash})
    assert upload_session(d, uri, client=client)["action"] == "appended"


def test_upload_refuses_a_config_hash_that_is_not_a_sha256(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    d = _session(tmp_path, _record("a", 0.1, [0.5], config_hash="x' OR name != '"))
    assert main(["runs", "upload", str(d), "--to", "https://u:secret@127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "config_hash" in err and "run.json" in err and len(err.strip().splitlines()) == 1
    assert "secret" not in err
