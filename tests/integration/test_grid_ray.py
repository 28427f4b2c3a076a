"""The ``ray`` executor: a local Ray started for the run (2 CPUs, in a temporary
directory), then an "existing cluster": ``ray start --head --block`` on 127.0.0.1 on a free
port, stopped by its PID (never ``ray stop``, which kills every Ray process on the
machine)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from thelper.cli import main

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "examples" / "digits-classification" / "config.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, head: subprocess.Popen, deadline_s: float = 180.0) -> None:
    """Until the head's GCS accepts connections (generous: Ray starts slowly on a busy
    machine); fails at once when the head exited."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        assert head.poll() is None, f"ray start --head exited with {head.returncode}"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"the Ray head's GCS port {port} did not open within {deadline_s} s")


def _grid(folder: Path, executor: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BASE, folder / "base.yaml")
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ray2", "base": "base.yaml", "seed": 5,
        "set": {"trainer.epochs": 1, "trainer.device": "cpu", "trainer.progress": False,
                "model.params.channels": [4, 8], "model.params.hidden": 16},
        "vary": {"trainer.optimization.optimizer.params.lr": [0.01, 0.002]},
        "max_concurrent": 2, "threads_per_worker": 1, "executor": executor}))
    return path


@pytest.fixture
def ray_env(monkeypatch, tmp_path):
    short = Path(tempfile.mkdtemp(prefix="tgr", dir="/tmp"))  # Ray's socket paths are short
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("HOME", str(tmp_path))
    yield short
    shutil.rmtree(short, ignore_errors=True)


def _check(grid_dir: Path) -> None:
    plan = json.loads((grid_dir / "grid.json").read_text())
    assert len(plan["experiments"]) == 2
    for e in plan["experiments"]:
        run = json.loads((grid_dir / e["id"] / "run.json").read_text())
        assert run["status"] == "completed" and run["config_hash"] == e["hash"]


def test_local_ray_then_existing_cluster(ray_env, tmp_path, capsys):
    import ray

    save = ray_env / "o"  # Ray's temp_dir must lie in the grid directory (and be short)
    grid = _grid(tmp_path / "a", {"type": "ray", "params": {
        "local_num_cpus": 2, "temp_dir": str(save / "ray2" / "ray")}})
    assert main(["grid", "run", str(grid), "--save-dir", str(save)]) == 0
    _check(save / "ray2")
    assert not ray.is_initialized()  # the local Ray of the run is shut down
    assert "ray executor on a local Ray" in capsys.readouterr().out

    port = _free_port()
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
         f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={ray_env / 'head'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())
    try:
        _wait_for_port(port, head)
        grid = _grid(tmp_path / "b", {"type": "ray", "params": {
            "address": f"127.0.0.1:{port}"}})
        assert main(["grid", "run", str(grid), "--save-dir", str(tmp_path / "out2"),
                     "--ray-address", f"127.0.0.1:{port}"]) == 0
        _check(tmp_path / "out2" / "ray2")
        assert f"cluster 127.0.0.1:{port}" in capsys.readouterr().out
        assert head.poll() is None  # disconnecting leaves the cluster running
    finally:
        head.send_signal(signal.SIGTERM)
        head.wait(timeout=60)
