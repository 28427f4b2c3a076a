"""What runs inside a grid worker: one experiment (a normal session) per job.

The same :func:`execute_job` serves the ``local`` executor's warm worker processes and the
``ray`` executor's tasks. A worker process imports torch and loads the plugins once, then
runs many sessions one after another (sessions keep no process-global state).

A job is a plain dict:

* ``action``: ``run`` (a new session), ``resume`` (continue an interrupted one from its
  latest checkpoint, exactly) or ``test`` (evaluate its best checkpoint, ``resume
  --eval-only``);
* ``id``: the experiment's id; ``save_dir``: the grid directory; ``config``: the session
  config (for ``run``); ``sets``: overrides (for ``test``); ``allow_imports``;
* ``env``: ``THELPER_GRID_*`` variables for the session (the grid's id, name and directory:
  the hook point of trackers that group a grid's runs, e.g. MLflow parent runs).

The result is a dict: ``id``, ``status`` (``completed``, ``failed``, ``interrupted``),
``error``, ``wall_s`` (seconds of the session call itself) and ``pid``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from thelper.launch import exit_now

__all__ = ["execute_job", "worker_main", "GRID_ENV"]

#: Environment variables set while a grid experiment runs (see ``docs/commands/grid.md``).
GRID_ENV = ("THELPER_GRID_ID", "THELPER_GRID_NAME", "THELPER_GRID_DIR",
            "THELPER_GRID_EXPERIMENT")

_STATE: dict[str, Any] = {}


def _plugin_manager() -> Any:
    pm = _STATE.get("pm")
    if pm is None:
        from thelper.plugins import get_plugin_manager

        blocked = _STATE.get("blocked") or []
        local = _STATE.get("local") or []
        pm = get_plugin_manager(blocked=blocked, local=local) if blocked or local \
            else get_plugin_manager()
        _STATE["pm"] = pm
    return pm


def _quiet_console() -> None:
    """Keep the worker's console to warnings: the grid draws the progress; every line is
    in the session's ``logs/trainer.log``."""
    from thelper.logs import setup_logging

    logger = setup_logging()
    for h in logger.handlers:
        if getattr(h, "_thelper_console", False):
            h.setLevel(logging.WARNING)


def execute_job(job: dict[str, Any]) -> dict[str, Any]:
    """Run one job in this process; never raises for a failed experiment.

    Args:
        job: See the module docstring.

    Returns:
        The result dict (see the module docstring).
    """
    from thelper.config import document_from_dict
    from thelper.exceptions import ThelperError
    from thelper.runner import resume_session, run_session

    _quiet_console()
    pm = _plugin_manager()
    allow = tuple(job.get("allow_imports") or ())
    saved = {k: os.environ.get(k) for k in job.get("env", {})}
    os.environ.update(job.get("env", {}))
    status, error = "failed", None
    start = time.perf_counter()
    try:
        if job["action"] == "run":
            session = run_session(document_from_dict(job["config"]), job["save_dir"], pm,
                                  allow_imports=allow)
        elif job["action"] == "resume":
            session = resume_session(Path(job["save_dir"]) / job["id"], pm=pm,
                                     allow_imports=allow)
        elif job["action"] == "test":
            session = resume_session(Path(job["save_dir"]) / job["id"], job.get("sets") or (),
                                     eval_only=True, pm=pm, allow_imports=allow)
        else:
            raise ValueError(f"unknown grid job action {job['action']!r}")
        status = session.status or "completed"
    except KeyboardInterrupt as exc:
        status, error = "interrupted", str(exc) or "interrupted"
    except ThelperError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a crashed experiment never ends the worker
        error = f"{type(exc).__name__}: {exc}"
        logging.getLogger("thelper").debug("%s", traceback.format_exc())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return {"id": job["id"], "action": job["action"], "status": status, "error": error,
            "wall_s": time.perf_counter() - start, "pid": os.getpid()}


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _watch_parent(parent: int) -> None:
    """Stop this worker (SIGTERM to itself: a running session checkpoints and stops) when
    the grid process is gone, e.g. killed with SIGKILL."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _redirect_output(log: str | None) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log``."""
    if not log:
        return
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def worker_main(conn: Any, env: dict[str, str], threads: int, blocked: list[str],
                parent: int, log: str | None = None, local: list[str] | None = None) -> None:
    """Entry point of a ``local`` executor's worker process (started with ``spawn``).

    Sends its output to ``log`` (the sessions' own logs are in their directories), sets
    ``env`` (``CUDA_VISIBLE_DEVICES``) before torch is imported, imports torch once, sets
    its threads, loads the plugins, then runs the jobs received on ``conn`` until it
    receives ``None`` or the connection closes.
    """
    _redirect_output(log)
    if hasattr(os, "setpgid"):
        os.setpgid(0, 0)  # a terminal's Ctrl-C reaches the grid only; it forwards one stop
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    os.environ.update(env)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        start = time.perf_counter()
        import torch

        torch.set_num_threads(max(1, threads))
        _STATE["blocked"] = blocked
        _STATE["local"] = list(local or [])  # -p MODULE (sys.path is the grid's: spawn)
        _plugin_manager()
        _quiet_console()
        conn.send(("ready", os.getpid(), time.perf_counter() - start))
        while True:
            job = conn.recv()
            if job is None:
                # every result is sent and every session closed: unloading torch and the
                # plugins cost 3.8 s at the end of a 1-minute grid while the grid waited
                exit_now(0)
            result = execute_job(job)
            # a stop arriving now (the session is over) waits until the result is sent
            stops = {signal.SIGINT, signal.SIGTERM}
            signal.pthread_sigmask(signal.SIG_BLOCK, stops)
            try:
                conn.send(("result", result))
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, stops)
    except (KeyboardInterrupt, EOFError, BrokenPipeError, OSError):
        return


def ray_task(job: dict[str, Any]) -> dict[str, Any]:
    """A ``ray`` executor's task: set torch's threads, watch the grid's stop file (its
    appearance stops the session with a final checkpoint, like Ctrl-C), run the job."""
    import torch

    torch.set_num_threads(max(1, int(job.get("threads") or 1)))
    done = threading.Event()
    stop_file = job.get("stop_file")

    def watch() -> None:
        while not done.wait(0.5):
            if stop_file and os.path.exists(stop_file):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    if stop_file:
        threading.Thread(target=watch, daemon=True).start()
    try:
        return execute_job(job)
    finally:
        done.set()
