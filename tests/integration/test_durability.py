"""Durability of a session directory against damaged, racing or hostile input (issue #13).

Checkpoint checksums, the window between the first checkpoint and ``ckpt.latest.pt``,
two processes on one session, symbolic links planted in a session, and unusable
``--map-location`` values. Faults are scheduled by progress (a checkpoint written, a
lock held), never by sleeps.
"""

from __future__ import annotations

import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch

from thelper.checkpoint import (
    load_checkpoint,
    resume_candidates,
    save_checkpoint,
    verify_checkpoint,
)
from thelper.cli import main
from thelper.config import document_from_dict
from thelper.exceptions import CheckpointError, ConfigError, SessionError
from thelper.logs import attach_file_handler
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.runner import resume_session, run_session
from thelper.session import (
    Session,
    SessionLock,
    check_links,
    clean_stale_files,
    create_session_dir,
    safe_path,
)

THELPER = str(Path(sys.executable).parent / "thelper")


# ---------------------------------------------------------------------------- helpers
def _record_offset(path: Path, name: str) -> tuple[int, int]:
    """Offset and size of the data of zip record ``name`` (after its local header)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(name)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len, info.file_size


def _record_holding(path: Path, tensor: torch.Tensor) -> str:
    """The zip record that stores ``tensor``'s bytes."""
    want = tensor.contiguous().numpy().tobytes()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if "/data/" in info.filename and z.read(info) == want:
                return info.filename
    raise AssertionError(f"no record of {path} holds that tensor")


def _flip(path: Path, record: str, at: float = 0.5) -> None:
    """Flip one bit inside the data of zip record ``record`` (in place)."""
    offset, size = _record_offset(path, record)
    data = bytearray(path.read_bytes())
    data[offset + int(size * at)] ^= 0x10
    path.write_bytes(bytes(data))


def _record(path: Path, kind: str) -> str:
    """A record of a thelper checkpoint: ``weight`` (a model tensor), ``pickle``
    (data.pkl) or ``rng`` (the torch RNG state tensor)."""
    ckpt = torch.load(path, weights_only=True)
    if kind == "pickle":
        with zipfile.ZipFile(path) as z:
            return next(n for n in z.namelist() if n.endswith("/data.pkl"))
    tensor = ckpt["rng"]["torch"] if kind == "rng" else next(iter(ckpt["model"].values()))
    return _record_holding(path, tensor)


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    path = tmp_path / "ckpt.0001.pt"
    save_checkpoint({"model": {"w": torch.arange(64, dtype=torch.float32)}, "epoch": 1,
                     "step": 10, "rng": {"torch": torch.get_rng_state()}}, path)
    return path


@pytest.fixture
def one_epoch(tmp_path, mlp_config) -> Path:
    """A finished one-epoch session (about a second on a CPU)."""
    mlp_config["trainer"]["epochs"] = 1
    return run_session(document_from_dict(mlp_config), tmp_path / "runs").session_dir


@pytest.fixture
def two_epochs(tmp_path, mlp_config) -> Path:
    """A finished two-epoch session: ckpt.0002.pt, ckpt.best.pt and ckpt.latest.pt."""
    mlp_config["trainer"]["epochs"] = 2
    return run_session(document_from_dict(mlp_config), tmp_path / "runs").session_dir


# ------------------------------------------------------------------ 1. checksums
@pytest.mark.parametrize("kind", ["weight", "pickle", "rng"])
def test_flipped_bit_is_a_checkpoint_error_naming_file_and_record(small_ckpt, kind):
    record = _record(small_ckpt, kind)
    _flip(small_ckpt, record)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(small_ckpt)
    assert str(small_ckpt) in str(err.value) and repr(record) in str(err.value)
    assert "CRC-32" in str(err.value)


def test_torch_load_alone_misses_a_flipped_weight(small_ckpt):
    """Why the check exists: torch.load returns the damaged weight without a word."""
    _flip(small_ckpt, _record(small_ckpt, "weight"))
    damaged = torch.load(small_ckpt, weights_only=True)["model"]["w"]
    assert not torch.equal(damaged, torch.arange(64, dtype=torch.float32))
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        verify_checkpoint(small_ckpt)
    assert load_checkpoint(small_ckpt, verify=False)["epoch"] == 1


def test_intact_checkpoint_verifies(small_ckpt):
    verify_checkpoint(small_ckpt)
    assert torch.load(small_ckpt, weights_only=True)["step"] == 10  # still a plain file


@pytest.mark.parametrize("kind", ["weight", "pickle", "rng"])
def test_flipped_latest_falls_back_naming_both_files(two_epochs, kind, capfd):
    latest = two_epochs / "checkpoints" / "ckpt.latest.pt"
    record = _record(latest, kind)
    _flip(latest, record)
    resumed = resume_session(two_epochs, ["trainer.epochs=3"])
    err = capfd.readouterr().err
    line = next(ln for ln in err.splitlines() if "falling back" in ln)
    assert "ckpt.latest.pt" in line and record in line and "ckpt.0002.pt" in line
    ckpt = torch.load(resumed.checkpoints_dir / "ckpt.latest.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and resumed.status == "completed"


def test_a_named_damaged_checkpoint_is_refused_not_replaced(two_epochs):
    named = two_epochs / "checkpoints" / "ckpt.0002.pt"
    _flip(named, _record(named, "weight"))
    with pytest.raises(CheckpointError) as err:
        resume_session(named, ["trainer.epochs=3"])
    assert str(named) in str(err.value) and f"thelper resume {two_epochs}" in str(err.value)
    assert torch.load(two_epochs / "checkpoints" / "ckpt.latest.pt",
                      weights_only=True)["epoch"] == 2  # nothing was resumed


def test_a_rank_takes_the_config_of_the_checkpoint_rank_0_picked(two_epochs):
    """Under several ranks, rank 0 picks the checkpoint; a rank that found another one (its
    own view of a damaged file) loads rank 0's, weights *and* config (a resume with --set
    changed the config between the two checkpoints)."""
    from dataclasses import dataclass

    from thelper.runtime import Runtime

    first = resume_session(two_epochs, ["trainer.epochs=3", "trainer.optimization.optimizer"
                                        ".params.lr=0.02"])
    assert first.config["trainer"]["optimization"]["optimizer"]["params"]["lr"] == 0.02
    picked = two_epochs / "checkpoints" / "ckpt.0002.pt"  # the config before that resume
    lr = torch.load(picked, weights_only=True)["config"]["trainer"]["optimization"][
        "optimizer"]["params"]["lr"]
    assert lr != 0.02

    @dataclass
    class Rank0Picked(Runtime):  # rank 0's broadcast of its choice, on this rank
        def broadcast_object(self, obj: Any = None, src: int = 0) -> Any:
            if isinstance(obj, str) and obj.endswith(".pt"):
                assert obj.endswith("ckpt.latest.pt")  # this rank's own choice
                return str(picked)
            return super().broadcast_object(obj, src)

    resumed = resume_session(two_epochs, ["trainer.epochs=4"], runtime=Rank0Picked())
    assert resumed.config["trainer"]["optimization"]["optimizer"]["params"]["lr"] == lr
    assert resumed.config["trainer"]["epochs"] == 4 and resumed.start_epoch == 3


def test_no_intact_checkpoint_is_a_clear_error(two_epochs):
    folder = two_epochs / "checkpoints"
    for path in folder.glob("ckpt.*.pt"):
        _flip(path, _record(path, "weight"))
    with pytest.raises(CheckpointError, match="no intact checkpoint remains"):
        resume_session(two_epochs, ["trainer.epochs=3"])


def test_no_intact_checkpoint_exits_1_on_the_cli(two_epochs, capsys):
    for path in (two_epochs / "checkpoints").glob("ckpt.*.pt"):
        _flip(path, _record(path, "pickle"))
    assert main(["resume", str(two_epochs)]) == 1
    err = capsys.readouterr().err
    assert "no intact checkpoint remains" in err and "Traceback" not in err


# ------------------------------------------------------- 2. the first-checkpoint window
def _fake(folder: Path, name: str, step: int, epoch: int) -> Path:
    return save_checkpoint({"model": {}, "step": step, "epoch": epoch}, folder / name)


def test_candidates_are_ranked_by_progress_not_mtime(tmp_path):
    newest = _fake(tmp_path, "ckpt.step.00000030.pt", 30, 1)
    _fake(tmp_path, "ckpt.0001.pt", 22, 1)
    _fake(tmp_path, "ckpt.best.pt", 22, 1)
    _fake(tmp_path, "ckpt.step.00000011.pt", 11, 0)
    (tmp_path / ".ckpt.0002.pt.abc.tmp").write_bytes(b"half")
    (tmp_path / "ckpt.broken.pt").write_bytes(b"not a checkpoint")
    os.utime(newest, (1, 1))  # a copy without -p: modification times say nothing
    names = [p.name for p in resume_candidates(tmp_path)]
    assert names == ["ckpt.step.00000030.pt", "ckpt.0001.pt", "ckpt.best.pt",
                     "ckpt.step.00000011.pt", "ckpt.broken.pt"]
    os.link(newest, tmp_path / "ckpt.latest.pt")
    excluded = [p.name for p in resume_candidates(tmp_path, exclude=tmp_path / "ckpt.latest.pt")]
    assert excluded[0] == "ckpt.0001.pt"  # the damaged latest and its hard link are skipped


class _Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs in the trainer."""


def test_killed_between_first_step_checkpoint_and_latest_resumes(tmp_path, mlp_config,
                                                                   monkeypatch, capfd):
    import thelper.train.trainer as trainer_mod

    mlp_config["trainer"].update(epochs=1, checkpoint_every_n_steps=3)

    def die(src, dst):  # the step checkpoint exists, ckpt.latest.pt not yet
        raise _Killed

    monkeypatch.setattr(trainer_mod, "link_checkpoint", die)
    with pytest.raises(_Killed):
        run_session(document_from_dict(mlp_config), tmp_path)
    monkeypatch.undo()
    session_dir = tmp_path / "digits-mlp"
    folder = session_dir / "checkpoints"
    assert [p.name for p in folder.glob("ckpt.*.pt")] == ["ckpt.step.00000003.pt"]
    (folder / ".ckpt.latest.pt.4242.link").write_bytes(b"stale")  # a killed link_checkpoint
    (folder / ".ckpt.0001.pt.x1y2.tmp").write_bytes(b"stale")  # a killed save_checkpoint
    assert main(["run", str(session_dir / "config.latest.yaml"), "--save-dir",
                 str(tmp_path)]) == 2
    err = capfd.readouterr().err
    assert f"thelper resume {session_dir}" in err
    resumed = resume_session(session_dir)
    err = capfd.readouterr().err
    assert "has no ckpt.latest.pt" in err and "ckpt.step.00000003.pt" in err
    assert "resuming epoch 1 after 3 batches" in err
    assert resumed.status == "completed"
    assert torch.load(folder / "ckpt.latest.pt", weights_only=True)["epoch"] == 1
    assert not list(folder.glob(".*.tmp")) and not list(folder.glob(".*.link"))


def test_killed_between_epoch_checkpoint_and_latest_resumes(one_epoch, capfd):
    folder = one_epoch / "checkpoints"
    (folder / "ckpt.latest.pt").unlink()
    (folder / "ckpt.best.pt").unlink()
    resumed = resume_session(one_epoch, ["trainer.epochs=2"])
    assert "resuming from the newest intact checkpoint" in capfd.readouterr().err
    assert resumed.start_epoch == 2
    assert torch.load(folder / "ckpt.latest.pt", weights_only=True)["epoch"] == 2


# ---------------------------------------------------------- 3. one session, one process
def test_racing_creations_make_one_session(tmp_path):
    """30 rounds of 4 threads released together: exactly one creates each directory."""
    for trial in range(30):
        barrier = threading.Barrier(4)
        outcomes: list[str] = []

        def create(trial: int = trial, barrier: threading.Barrier = barrier,
                   outcomes: list[str] = outcomes) -> None:
            barrier.wait()
            try:
                create_session_dir(tmp_path, f"s{trial}")
                outcomes.append("created")
            except SessionError as exc:
                assert "already exists" in str(exc) and "thelper resume" in str(exc)
                outcomes.append("refused")

        threads = [threading.Thread(target=create) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["created", "refused", "refused", "refused"], trial


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    with SessionLock(tmp_path):
        assert (tmp_path / ".lock").read_text().strip() == str(os.getpid())
        with pytest.raises(SessionError, match=rf"in use by PID {os.getpid()}; wait for it "
                                               "or stop it"):
            SessionLock(tmp_path).acquire()
    with SessionLock(tmp_path) as again:  # released (the file stays)
        assert again.held


def test_lock_dies_with_its_process_even_with_forked_children(tmp_path):
    """SIGKILL frees the session at once, although a forked child (like a DataLoader
    worker, which outlives its parent by seconds) still runs."""
    code = (
        "import os, sys, time\n"
        "from thelper.session import SessionLock\n"
        f"lock = SessionLock({str(tmp_path)!r}).acquire()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    print('forked', flush=True)\n"  # the at-fork hooks have run by now
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # both lines, in either order: the child has started (and dropped its copy of the
    # lock's descriptor) before the parent is killed, however the machine schedules them
    lines = {proc.stdout.readline().strip() for _ in range(2)}
    child = int(next(line for line in lines if line != "forked"))
    try:
        with pytest.raises(SessionError, match=f"in use by PID {proc.pid}"):
            SessionLock(tmp_path).acquire()
        proc.kill()
        proc.wait()
        SessionLock(tmp_path).acquire().release()  # the orphaned child holds nothing
    finally:
        proc.kill()
        proc.wait()
        os.kill(child, signal.SIGKILL)


def test_resume_of_a_session_in_use_fails_naming_the_pid(one_epoch):
    """Another process holds the lock: here the test process, through plain fcntl."""
    before = (one_epoch / "checkpoints" / "ckpt.latest.pt").read_bytes()
    fd = os.open(one_epoch / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        res = subprocess.run([THELPER, "resume", str(one_epoch), "--set", "trainer.epochs=2"],
                             capture_output=True, text=True, timeout=300)
    finally:
        os.close(fd)
    assert res.returncode == 2, res.stderr
    assert f"session '{one_epoch}' is in use by PID {os.getpid()}; wait for it or stop it" \
        in res.stderr
    assert "Traceback" not in res.stderr
    assert (one_epoch / "checkpoints" / "ckpt.latest.pt").read_bytes() == before
    resumed = resume_session(one_epoch, ["trainer.epochs=2"])  # released: it goes on
    assert resumed.status == "completed"


class _ProbeLock:
    """Tries to take the session's lock while the session trains, as a second process
    would (flock locks of two open files conflict even within one process)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    @hookimpl
    def thelper_epoch_end(self, session, epoch, metrics):
        try:
            SessionLock(session.session_dir).acquire().release()
        except SessionError as exc:
            self.errors.append(str(exc))


@pytest.mark.parametrize("how", ["run", "resume"])
def test_lock_is_held_while_training_and_released_after(tmp_path, mlp_config, how):
    mlp_config["trainer"]["epochs"] = 1
    probe = _ProbeLock()
    pm = ThelperPluginManager()
    pm.register(probe, name="probe")
    if how == "run":
        s = run_session(document_from_dict(mlp_config), tmp_path, pm)
    else:
        s = run_session(document_from_dict(mlp_config), tmp_path)
        s = resume_session(s.session_dir, ["trainer.epochs=2"], pm=pm)
    assert len(probe.errors) == 1 and f"in use by PID {os.getpid()}" in probe.errors[0]
    SessionLock(s.session_dir).acquire().release()


class _Boom:
    @hookimpl
    def thelper_epoch_end(self, session, epoch, metrics):
        raise RuntimeError("boom")


def test_lock_is_released_when_the_session_fails(one_epoch):
    pm = ThelperPluginManager()
    pm.register(_Boom(), name="boom")
    with pytest.raises(RuntimeError, match="boom"):  # fails while holding the lock
        resume_session(one_epoch, ["trainer.epochs=2"], pm=pm)
    SessionLock(one_epoch).acquire().release()


def test_stale_temporaries_are_cleaned_only_by_name(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "logs").mkdir()
    stale = [tmp_path / "checkpoints" / ".ckpt.0003.pt.abcd.tmp",
             tmp_path / "checkpoints" / ".ckpt.latest.pt.99.link",
             tmp_path / ".run.json.xyz.tmp", tmp_path / "logs" / ".packages.txt.q.tmp"]
    kept = [tmp_path / "checkpoints" / "ckpt.0003.pt", tmp_path / "run.json"]
    for p in stale + kept:
        p.write_bytes(b"x")
    assert sorted(clean_stale_files(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)


# ------------------------------------------------------------------------ 4. symlinks
@pytest.mark.parametrize("rel", ["config.latest.yaml", "logs/packages.txt", "logs/trainer.log",
                                 "logs/model.txt", "checkpoints", "logs"])
def test_resume_refuses_links_out_of_the_session(one_epoch, tmp_path, rel):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("precious\n")
    target = one_epoch / rel
    if target.is_dir():  # move the folder out, link to it
        moved = outside / target.name
        target.rename(moved)
        target.symlink_to(moved, target_is_directory=True)
        snapshot = {p.name: p.read_bytes() for p in moved.iterdir() if p.is_file()}
    else:
        target.unlink()
        target.symlink_to(victim)
        snapshot = None
    with pytest.raises(SessionError) as err:
        resume_session(one_epoch, ["trainer.epochs=2"])
    assert f"{rel} -> " in str(err.value) and "lead out of it" in str(err.value)
    assert victim.read_text() == "precious\n"
    if snapshot is not None:
        assert {p.name: p.read_bytes() for p in (outside / target.name).iterdir()
                if p.is_file()} == snapshot
    assert main(["resume", str(one_epoch)]) == 2


def test_links_inside_the_session_are_allowed(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "ckpt.0001.pt").write_bytes(b"x")
    (tmp_path / "checkpoints" / "alias.pt").symlink_to("ckpt.0001.pt")
    check_links(tmp_path)
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(SessionError, match="loop -> loop"):
        check_links(tmp_path)


def test_session_writes_refuse_links(tmp_path):
    session_dir = tmp_path / "s"
    (session_dir / "logs").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    s = Session(name="s", session_dir=session_dir, config={"name": "s"}, cfg=None, seeds={},
                plugins=None)
    (session_dir / "logs" / "packages.txt").symlink_to(victim)
    with pytest.raises(SessionError, match="packages.txt' is a symbolic link"):
        s.write_packages()
    (session_dir / "config.latest.yaml").symlink_to(victim)
    with pytest.raises(SessionError, match="config.latest.yaml' is a symbolic link"):
        s.write_config_files()
    (session_dir / "logs" / "trainer.log").symlink_to(victim)
    with pytest.raises(SessionError, match="trainer.log' is a symbolic link"):
        attach_file_handler(session_dir / "logs" / "trainer.log")
    assert victim.read_text() == "precious\n"
    (session_dir / "out").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(SessionError, match="leads out of the session directory"):
        safe_path(session_dir, "out/x.txt")
    assert safe_path(session_dir, "logs/new.txt") == session_dir / "logs" / "new.txt"


# ------------------------------------------------------------------ 5. --map-location
@pytest.mark.parametrize(("where", "message"), [
    ("bogus", "'bogus' is not a device"),
    pytest.param("cuda:3", "CUDA is not available on this machine",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has CUDA")),
])
def test_unusable_map_location_is_a_usage_error(one_epoch, where, message, capsys):
    with pytest.raises(ConfigError, match=message):
        resume_session(one_epoch, map_location=where)
    with pytest.raises(ConfigError, match=message):
        load_checkpoint(one_epoch / "checkpoints" / "ckpt.latest.pt", map_location=where)
    assert main(["resume", str(one_epoch), "--map-location", where]) == 2
    err = capsys.readouterr().err
    assert message in err and "corrupted" not in err and "Traceback" not in err


def test_killed_before_its_first_checkpoint_restarts_in_place_with_init_from(
        tmp_path, mlp_config, write_config):
    """Review finding: a restart with no checkpoint must load model.init_from again (there
    are no weights to resume), and read config.latest.yaml under the config guards."""
    import copy
    import json
    import shutil

    source = copy.deepcopy(mlp_config)
    source["name"], source["trainer"]["epochs"] = "source", 1
    assert main(["run", str(write_config(source, "source.yaml")), "-o", str(tmp_path)]) == 0
    target = copy.deepcopy(mlp_config)
    target["name"], target["trainer"]["epochs"] = "target", 1
    target["model"]["init_from"] = {"path": str(tmp_path / "source")}
    assert main(["run", str(write_config(target, "target.yaml")), "-o", str(tmp_path)]) == 0
    session = tmp_path / "target"
    shutil.rmtree(session / "checkpoints")  # as if killed before the first checkpoint
    (session / "checkpoints").mkdir()
    (session / "logs" / "init_from.json").unlink()
    assert main(["resume", str(session)]) == 0
    assert json.loads((session / "run.json").read_text())["status"] == "completed"
    assert (session / "checkpoints" / "ckpt.latest.pt").is_file()
    report = json.loads((session / "logs" / "init_from.json").read_text())
    assert report  # the source weights were loaded again
    (session / "config.latest.yaml").write_text("[" * 60000)
    shutil.rmtree(session / "checkpoints")
    (session / "checkpoints").mkdir()
    assert main(["resume", str(session)]) == 2  # a config error, not a crash


def test_a_resume_that_fails_early_keeps_the_training_record(tmp_path, mlp_config,
                                                            write_config, monkeypatch):
    """Review finding: a failure before the trackers start used to replace run.json whole,
    dropping the test metrics of the run it resumed."""
    import copy
    import json

    import thelper.build
    from thelper.exceptions import DataError

    cfg = copy.deepcopy(mlp_config)
    cfg["trainer"]["epochs"] = 1
    assert main(["run", str(write_config(cfg)), "-o", str(tmp_path)]) == 0
    session = tmp_path / cfg["name"]
    before = json.loads((session / "run.json").read_text())
    assert before["test"]

    def broken(*args, **kwargs):
        raise DataError("the data went away")

    monkeypatch.setattr(thelper.build, "assemble", broken)
    monkeypatch.setattr("thelper.runner.assemble", broken, raising=False)
    assert main(["resume", str(session), "--set", "trainer.epochs=2"]) != 0
    after = json.loads((session / "run.json").read_text())
    assert after["status"] == "failed" and "the data went away" in after["error"]
    assert after["test"] == before["test"] and after["started_at"] == before["started_at"]
