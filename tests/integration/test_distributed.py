"""DistributedDataParallel on CPU (gloo): equivalence with one process, one set of session
files, exact evaluation, two simulated nodes, a killed rank, and resume.

Ranks are started the three ways users start them: ``torch.multiprocessing.spawn`` with a
``file://`` rendezvous (library use), ``thelper run --nproc-per-node 2`` (the elastic
launcher) and two ``torchrun`` processes as two nodes (c10d rendezvous on 127.0.0.1).
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from thelper.config import document_from_dict
from thelper.launch import _children
from thelper.runner import run_session

pytestmark = pytest.mark.slow

THELPER = str(Path(sys.executable).parent / "thelper")

#: An MLP without batch norm, dropout or augmentation, plain SGD: one process with batch 32
#: and two ranks with batch 16 each compute the same gradients. 1438 training samples: an
#: even number, so the two ranks' shards need no padding.
EQUIV: dict[str, Any] = {
    "name": "equiv",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "sklearn", "params": {"name": "digits", "as_image": False}}},
    "loaders": {"batch_size": 32, "train_split": {"digits": 0.8},
                "valid_split": {"digits": 0.1}, "test_split": {"digits": 0.1}},
    "model": {"type": "mlp", "params": {"in_features": 64, "hidden": [32], "dropout": 0.0}},
    "trainer": {
        "epochs": 2, "device": "cpu", "progress": False, "monitor": "accuracy",
        "optimization": {"optimizer": {"type": "sgd", "params": {"lr": 0.05}}},
        "metrics": {"accuracy": {"type": "accuracy"}},
    },
}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _weights(session_dir: Path, name: str = "ckpt.latest.pt") -> dict[str, torch.Tensor]:
    return torch.load(session_dir / "checkpoints" / name, weights_only=True)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()  # no 'module.' prefixes from DistributedDataParallel
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _run_cli(tmp: Path, cfg: dict, *extra: str, timeout: int = 300
             ) -> subprocess.CompletedProcess:
    path = tmp / f"{cfg['name']}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run([THELPER, "run", str(path), "--save-dir", str(tmp), *extra],
                          capture_output=True, text=True, timeout=timeout, env=_env())


def _spawned_rank(rank: int, world: int, init: str, config: dict, save_dir: str) -> None:
    import torch.distributed as dist

    from thelper.runtime import Runtime

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        run_session(document_from_dict(config), save_dir,
                    runtime=Runtime(rank=rank, local_rank=rank, world_size=world))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """The equivalence config in one process (batch 32)."""
    tmp = tmp_path_factory.mktemp("single")
    run_session(document_from_dict(copy.deepcopy(EQUIV)), tmp)
    return tmp / "equiv"


def test_two_spawned_ranks_equal_one_process(tmp_path, single):
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 16  # per rank: the same global batch of 32
    init = f"file://{tmp_path / 'pg_init'}"
    torch.multiprocessing.spawn(_spawned_rank, args=(2, init, cfg, str(tmp_path)), nprocs=2,
                                join=True)
    assert _max_diff(_weights(single), _weights(tmp_path / "equiv")) < 1e-5
    one = json.loads((single / "run.json").read_text())
    two = json.loads((tmp_path / "equiv" / "run.json").read_text())
    for split in ("train", "valid"):  # the epoch metrics are global, not rank 0's
        for a, b in zip(one["metrics"][split], two["metrics"][split], strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
            assert b["accuracy"] == pytest.approx(a["accuracy"], abs=1e-3)


def test_nproc_per_node_equals_one_process_and_writes_one_session(tmp_path, single):
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 16
    res = _run_cli(tmp_path, cfg, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    session = tmp_path / "equiv"
    assert _max_diff(_weights(single), _weights(session)) < 1e-5
    ckpt = torch.load(session / "checkpoints" / "ckpt.latest.pt", weights_only=True)
    assert ckpt["world_size"] == 2
    # rank 0 alone logged to the file; the other rank logs warnings only
    log = (session / "logs" / "trainer.log").read_text()
    assert log.count("training epochs 1 to 2") == 1
    assert "rank 0 of 2 (gloo backend)" in log
    assert res.stdout.count("session equiv: completed") == 1


def test_accumulation_equals_a_larger_batch(tmp_path, single):
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 16
    cfg["trainer"]["accumulate_grad_batches"] = 2
    session = run_session(document_from_dict(cfg), tmp_path)
    assert _max_diff(_weights(single), _weights(session.session_dir)) < 1e-5
    ckpt = torch.load(session.session_dir / "checkpoints" / "ckpt.latest.pt",
                      weights_only=True)
    assert ckpt["step"] == 2 * 45  # optimizer steps: 45 per epoch (44 full + 1 partial)


def test_evaluating_one_checkpoint_on_two_ranks_equals_one(tmp_path, mlp_config):
    mlp_config["trainer"]["epochs"] = 1
    mlp_config["trainer"]["metrics"]["roc"] = {"type": "roc_auc"}
    mlp_config["trainer"]["test_metrics"]["report"] = {"type": "classification_report"}
    mlp_config["loaders"]["batch_size"] = 16  # several batches per rank in the test split
    session = run_session(document_from_dict(mlp_config), tmp_path).session_dir
    out = {}
    files = {}
    for nproc in ("1", "2"):
        res = subprocess.run([THELPER, "resume", str(session), "--eval-only",
                              "--nproc-per-node", nproc], capture_output=True, text=True,
                             timeout=300, env=_env())
        assert res.returncode == 0, res.stderr[-3000:]
        out[nproc] = json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1])
        test_dir = session / "output" / mlp_config["name"] / "test"
        files[nproc] = {p.name: p.read_text() for p in test_dir.iterdir()
                        if p.suffix in (".csv", ".json", ".txt")}
    one, two = out["1"], out["2"]
    assert one.keys() == two.keys() >= {"loss", "accuracy", "roc"}
    assert one["accuracy"] == two["accuracy"]  # counts: exactly equal
    assert one["roc"] == two["roc"]  # concatenated scores, in the same order
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-6)  # float sums: reassociated
    assert files["1"] == files["2"]  # confusion matrix CSV, classification report


def test_digits_example_on_two_ranks(tmp_path):
    cfg = yaml.safe_load((Path(__file__).parents[2] / "examples" / "digits-classification"
                          / "config.yaml").read_text())
    cfg["trainer"]["epochs"] = 8
    cfg["trainer"]["progress"] = False
    res = _run_cli(tmp_path, cfg, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    session = tmp_path / cfg["name"]
    record = json.loads((session / "run.json").read_text())
    assert record["status"] == "completed"
    assert record["test"]["accuracy"] >= 0.9
    # exactly one set of session files, one TensorBoard stream per split
    assert len(list((session / "logs").glob("config.*.yaml"))) == 1
    for split in ("train", "valid"):
        events = list((session / "output" / cfg["name"] / split).glob("events.out.*"))
        assert len(events) == 1, events
    # the same splits on every rank: assemble() compares the ranks' split digests and
    # fails the job otherwise; the recorded splits are the single-process ones
    from thelper.build import build_data
    from thelper.config import validate_document
    from thelper.plugins import get_plugin_manager

    pm = get_plugin_manager()
    cfg["seeds"] = record["seeds"]
    data = build_data(validate_document(document_from_dict(cfg), pm.registry),
                      record["seeds"], pm.registry)
    splits = json.loads((session / "logs" / "splits.json").read_text())
    assert splits["datasets"]["digits"]["indices"] == data.indices["digits"]


def test_two_nodes_through_torchrun_rendezvous(tmp_path, single):
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 16
    path = tmp_path / "equiv.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
         "1", "--node-rank", str(node), "--rdzv-backend", "c10d", "--rdzv-endpoint",
         f"127.0.0.1:{port}", "--rdzv-id", "thelper-test", "--rdzv-conf", "join_timeout=60",
         "--max-restarts", "0", "-m", "thelper", "run", str(path), "--save-dir",
         str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env()) for node in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert _max_diff(_weights(single), _weights(tmp_path / "equiv")) < 1e-5


def test_a_missing_node_fails_in_seconds(tmp_path):
    path = tmp_path / "equiv.yaml"
    path.write_text(yaml.safe_dump(EQUIV))
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node",
         "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
         "--rdzv-id", "alone", "--rdzv-conf", "join_timeout=5", "--max-restarts", "0",
         "-m", "thelper", "run", str(path), "--save-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=_env())
    assert res.returncode != 0
    assert not (tmp_path / "equiv").exists()  # no rank ever started


def _rank_of(pid: int) -> int | None:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in env:
        if item.startswith(b"RANK="):
            return int(item[5:])
    return None


def _start_two_ranks(run_dir: Path, cfg: dict[str, Any]) -> subprocess.Popen:
    """``thelper run --nproc-per-node 2`` of ``cfg`` in ``run_dir``, in the background."""
    run_dir.mkdir()
    path = run_dir / "equiv.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.Popen([THELPER, "run", str(path), "--save-dir", str(run_dir),
                             "--nproc-per-node", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env())


def _wait_for(proc: subprocess.Popen, reached, what: str) -> None:
    """Poll ``reached()`` (a run's progress on disk) while ``proc`` runs; fail if it ends
    first."""
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not reached():
        time.sleep(0.02)
    assert proc.poll() is None, f"the run ended before {what}"


def _resume_two_ranks(session_dir: Path) -> None:
    res = subprocess.run([THELPER, "resume", str(session_dir), "--nproc-per-node", "2"],
                         capture_output=True, text=True, timeout=300, env=_env())
    assert res.returncode == 0, res.stderr[-3000:]


def test_sigkill_one_rank_stops_the_job_and_resume_continues_exactly(tmp_path):
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 8
    cfg["trainer"]["epochs"] = 3
    cfg["trainer"]["checkpoint_every_n_steps"] = 5
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    res = _run_cli(ref_dir, cfg, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    reference = _weights(ref_dir / "equiv")

    run_dir = tmp_path / "killed"
    proc = _start_two_ranks(run_dir, cfg)
    ckpts = run_dir / "equiv" / "checkpoints"
    # by progress: once the second epoch has a step checkpoint, kill rank 1
    _wait_for(proc, lambda: (ckpts / "ckpt.0001.pt").exists()
              and any(ckpts.glob("ckpt.step.*.pt")), "the kill")
    victims = [p for p in _children(proc.pid) if _rank_of(p) == 1]
    assert victims, "rank 1 not found"
    os.kill(victims[0], signal.SIGKILL)
    proc.communicate(timeout=120)  # the launcher stops the other rank: no hang
    assert proc.returncode != 0
    _resume_two_ranks(run_dir / "equiv")
    assert _max_diff(reference, _weights(run_dir / "equiv")) == 0.0


@pytest.mark.slow
def test_sigusr1_to_the_launcher_requeues_every_rank(tmp_path):
    """sbatch --signal=B:USR1 signals the batch step, i.e. the launcher: the ranks get it,
    checkpoint at the next step and the job exits 75; a resume completes it."""
    cfg = copy.deepcopy(EQUIV)
    cfg["loaders"]["batch_size"] = 8
    cfg["trainer"]["epochs"] = 2
    cfg["trainer"]["checkpoint_every_n_steps"] = 5
    run_dir = tmp_path / "requeued"
    proc = _start_two_ranks(run_dir, cfg)
    ckpts = run_dir / "equiv" / "checkpoints"
    # by progress: the first step checkpoint
    _wait_for(proc, lambda: any(ckpts.glob("ckpt.step.*.pt")), "the signal")
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 75, err[-3000:]
    run = json.loads((run_dir / "equiv" / "run.json").read_text())
    assert run["status"] == "interrupted" and run["stopped_reason"] == "requeue"
    _resume_two_ranks(run_dir / "equiv")


def test_resume_on_another_world_size_says_the_order_changed(tmp_path):
    cfg = copy.deepcopy(EQUIV)
    cfg["trainer"]["epochs"] = 1
    res = _run_cli(tmp_path, cfg, "--nproc-per-node", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    res = subprocess.run([THELPER, "resume", str(tmp_path / "equiv"), "--set",
                          "trainer.epochs=2"], capture_output=True, text=True, timeout=300,
                         env=_env())
    assert res.returncode == 0, res.stderr[-3000:]
    assert "written by 2 rank(s) and resumes on 1" in res.stderr + res.stdout
    ckpt = torch.load(tmp_path / "equiv" / "checkpoints" / "ckpt.latest.pt",
                      weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["world_size"] == 1
