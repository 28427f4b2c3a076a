"""A real ``mlflow server`` for the tracking tests, started once per test session.

Import the fixture into a test module (``from tests.integration.mlflow_server import
mlflow_server``) and take ``mlflow_server`` as an argument; :func:`start_server` starts
another one (a test that kills its server must not kill the shared one).

The server listens on 127.0.0.1 on a free port with one worker (with the default four,
every request on a kept-alive connection costs ~45 ms instead of 3 ms), a SQLite backend
and an artifacts destination in a temporary folder, and
``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``. It runs in its own process group, is ready
when ``GET /health`` answers, and is stopped by signalling that group (its PID) only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Seconds to wait for ``/health`` (healthy in ~11 s on 2 cores, more under load).
START_TIMEOUT = 180


@dataclass
class MlflowServer:
    """A running server: ``uri`` (``http://127.0.0.1:<port>``), its folder and process."""

    uri: str
    port: int
    root: Path
    proc: subprocess.Popen

    def kill(self) -> None:
        """SIGKILL the server's process group (a crash), and reap it."""
        _signal_group(self.proc, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL after 20 s."""
        if self.proc.poll() is not None:
            return
        _signal_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            _signal_group(self.proc, signal.SIGKILL)
            self.proc.wait(10)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # its own group: start_new_session=True, pgid == pid
    except ProcessLookupError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int | None = None) -> MlflowServer:
    """Start ``mlflow server`` with its SQLite store and artifacts under ``root``.

    Restarting on an existing ``root`` (and the same ``port``) serves the same runs.

    Raises:
        RuntimeError: The server exited or was not healthy within :data:`START_TIMEOUT`.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = open(root / "server.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    server = MlflowServer(f"http://127.0.0.1:{port}", port, root, proc)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}: "
                               + (root / "server.log").read_text()[-2000:])
        try:
            with urllib.request.urlopen(f"{server.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.25)  # polling for readiness, not scheduling a fault
    server.stop()
    raise RuntimeError(f"mlflow server not healthy after {START_TIMEOUT} s: "
                       + (root / "server.log").read_text()[-2000:])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The test session's shared MLflow server."""
    server = start_server(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()
