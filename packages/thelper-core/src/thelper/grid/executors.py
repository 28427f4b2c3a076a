"""Grid executors: where a grid's experiments run.

Registered as components of kind ``executor`` by the core's built-in plugin, selected by a
grid file's ``executor: {type, params}``:

* ``local`` (:class:`LocalExecutor`): a pool of warm worker processes on this machine.
* ``ray`` (:class:`RayExecutor`): each experiment a Ray task, on an existing cluster or a
  local Ray started for the run (``pip install thelper-core[ray]``).

The grid (:mod:`thelper.grid.run`) drives an executor through :meth:`start`, :meth:`submit`,
:meth:`poll`, :meth:`interrupt` and :meth:`close`; a job and its result are plain dicts
(see :mod:`thelper.grid.worker`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thelper.exceptions import ConfigError, ThelperError

__all__ = ["Executor", "ExecutorContext", "LocalExecutor", "RayExecutor", "confirm_executor"]

#: Ray addresses that start a Ray on this machine instead of joining a cluster.
LOCAL_RAY = (None, "", "local")


def confirm_executor(executor: Any, grid_file: Path, grid_dir: Path,
                     ray_address: str | None) -> None:
    """Refuse what a grid file alone must not decide: joining a Ray cluster (a cluster runs
    code on this machine through the results it sends back) and a Ray temporary directory
    outside the grid directory.

    Args:
        executor: The built executor (only a :class:`RayExecutor` is checked).
        grid_file: The grid file (for the messages).
        grid_dir: The grid's directory.
        ray_address: ``--ray-address`` of the command line: must equal the file's
            ``executor.params.address``, or gives it when the file has none. Set on the
            executor.

    Raises:
        ConfigError: A cluster address the command line did not confirm, ``--ray-address``
            with another executor, or ``temp_dir`` outside ``grid_dir``.
    """
    if not isinstance(executor, RayExecutor):
        if ray_address is not None:
            raise ConfigError(f"--ray-address applies to the ray executor only; {grid_file} "
                              "runs another (set executor: {type: ray} in it)")
        return
    given = executor.address
    if given not in LOCAL_RAY:
        if ray_address != given:
            raise ConfigError(
                f"{grid_file}: executor.params.address {given!r} joins a Ray cluster, which "
                f"can run code on this machine; confirm it with --ray-address {given}, or "
                "remove it to start a local Ray")
    elif ray_address is not None:
        executor.address = ray_address
    if executor.temp_dir is not None:
        temp = Path(executor.temp_dir).resolve()
        if not temp.is_relative_to(grid_dir.resolve()):
            raise ConfigError(f"{grid_file}: executor.params.temp_dir {executor.temp_dir!r} "
                              f"is outside the grid directory {str(grid_dir)!r}; give a "
                              "folder inside it or remove the key")


@dataclass
class ExecutorContext:
    """What a grid asks of its executor.

    Attributes:
        max_concurrent: Most experiments running at once.
        threads: torch threads per experiment.
        gpus: GPU indices, one per running experiment (empty: CPU only).
        grid_dir: The grid's directory (session directories land there).
        blocked: Plugins blocked on the command line (``-p no:NAME``), blocked in the
            workers too.
        local: Local plugin modules named on the command line (``-p MODULE``), loaded by
            the ``local`` executor's workers too (not sent to Ray tasks).
    """

    max_concurrent: int
    threads: int
    gpus: list[int] = field(default_factory=list)
    grid_dir: Path = Path(".")
    blocked: list[str] = field(default_factory=list)
    local: list[str] = field(default_factory=list)


class Executor:
    """Base class of the grid executors."""

    #: How many jobs may run at once (set by :meth:`start`).
    capacity: int = 1

    def start(self, ctx: ExecutorContext, n_jobs: int) -> None:
        """Prepare to run up to ``n_jobs`` jobs under ``ctx``."""
        raise NotImplementedError

    def submit(self, job: dict[str, Any]) -> None:
        """Start ``job`` (only while fewer than :attr:`capacity` jobs run)."""
        raise NotImplementedError

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        """Results of the jobs that ended, waiting at most ``timeout`` seconds."""
        raise NotImplementedError

    def interrupt(self, force: bool = False) -> None:
        """Ask every running job to stop with a final checkpoint (``force``: at once)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (idempotent)."""

    def describe(self) -> str:
        """One line for the console."""
        return type(self).__name__


@dataclass
class _Slot:
    index: int
    gpu: int | None
    process: Any = None
    conn: Any = None
    pid: int | None = None
    job: dict[str, Any] | None = None
    ready: bool = False
    done: int = 0


class LocalExecutor(Executor):
    """A pool of warm worker processes (``spawn``), one job at a time each.

    Each worker imports torch once, sets ``torch.set_num_threads(threads)`` and, on a
    machine with GPUs, sees one GPU (``CUDA_VISIBLE_DEVICES``). A worker that dies (an
    out-of-memory kill, a SIGKILL, a crash in native code) fails its experiment only: the
    pool starts another worker for the next job. Workers run in their own process group:
    a terminal's Ctrl-C reaches the grid, which forwards exactly one stop to each running
    experiment; a worker whose grid process is gone stops its experiment the same way.

    The standard library's pools do not fit: ``ProcessPoolExecutor`` breaks for good when a
    worker dies, and ``multiprocessing.Pool`` loses the task of a dead worker silently.

    Args:
        max_experiments_per_worker: Replace a worker after this many experiments.
        start_timeout: Seconds a worker may take to start.
    """

    def __init__(self, max_experiments_per_worker: int | None = None,
                 start_timeout: float = 300.0) -> None:
        self.max_per_worker = max_experiments_per_worker
        self.start_timeout = start_timeout
        self.slots: list[_Slot] = []
        self.ctx: ExecutorContext | None = None
        self.startup_failures = 0
        self.started_workers = 0
        self.import_s: list[float] = []

    def describe(self) -> str:
        ctx = self.ctx
        assert ctx is not None
        gpus = f", GPUs {ctx.gpus}" if ctx.gpus else ""
        return (f"local executor: {self.capacity} worker process(es), {ctx.threads} torch "
                f"thread(s) each{gpus}")

    def start(self, ctx: ExecutorContext, n_jobs: int) -> None:
        self.ctx = ctx
        n = max(1, min(ctx.max_concurrent, n_jobs, len(ctx.gpus) if ctx.gpus else n_jobs))
        self.capacity = n
        self.slots = [_Slot(i, ctx.gpus[i] if ctx.gpus else None) for i in range(n)]

    def _spawn(self, slot: _Slot) -> None:
        import multiprocessing as mp

        from thelper.grid.worker import worker_main

        assert self.ctx is not None
        env = {"CUDA_VISIBLE_DEVICES": str(slot.gpu)} if slot.gpu is not None else {}
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, name=f"thelper-grid-worker-{slot.index}",
                           args=(child, env, self.ctx.threads, list(self.ctx.blocked),
                                 os.getpid(), str(self.ctx.grid_dir / "logs" /
                                                  f"worker-{slot.index}.log"),
                                 list(self.ctx.local)))
        proc.start()
        child.close()
        slot.process, slot.conn, slot.pid = proc, parent, proc.pid
        slot.ready, slot.done, slot.job = False, 0, None
        self.started_workers += 1

    def submit(self, job: dict[str, Any]) -> None:
        slot = next((s for s in self.slots if s.process is not None and s.job is None), None) \
            or next((s for s in self.slots if s.process is None), None)
        if slot is None:
            raise RuntimeError("no free worker: submit only while fewer than capacity run")
        if slot.process is None:
            self._spawn(slot)
        job = {**job, "threads": self.ctx.threads if self.ctx else 1}
        slot.job = {**job, "_submitted": time.monotonic()}
        slot.conn.send(job)

    def running(self) -> int:
        return sum(s.job is not None for s in self.slots)

    def _retire(self, slot: _Slot, kill: bool = False, told: bool = False) -> None:
        proc, conn = slot.process, slot.conn
        slot.process = slot.conn = slot.pid = None
        slot.job, slot.ready = None, False
        if conn is not None:
            try:
                if not kill and not told:
                    conn.send(None)
            except OSError:
                pass
        if proc is not None:
            proc.join(timeout=None if not kill else 5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if conn is not None:
            conn.close()

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        from multiprocessing.connection import wait

        live = [s for s in self.slots if s.process is not None]
        if not live:
            time.sleep(min(timeout, 0.05))
            return []
        waitables: list[Any] = [s.conn for s in live] + [s.process.sentinel for s in live]
        ready = set(wait(waitables, timeout=timeout))
        results: list[dict[str, Any]] = []
        for slot in live:
            if slot.conn not in ready and slot.process.sentinel not in ready:
                continue
            messages, eof = [], False
            try:
                while slot.conn.poll():  # also true at end of file: recv raises then
                    messages.append(slot.conn.recv())
            except (EOFError, OSError):
                eof = True  # the worker is gone (its end of the pipe closed)
            for msg in messages:
                if msg[0] == "ready":
                    slot.ready = True
                    self.startup_failures = 0
                    self.import_s.append(float(msg[2]))
                    continue
                slot.job = None
                slot.done += 1
                results.append(msg[1])
                if self.max_per_worker and slot.done >= self.max_per_worker:
                    self._retire(slot)
                    break
            if slot.process is None or not (eof or slot.process.sentinel in ready):
                continue
            if not eof and slot.process.is_alive():
                continue
            slot.process.join()
            code = slot.process.exitcode
            job = slot.job
            if not slot.ready:
                self.startup_failures += 1
            how = f"killed by signal {-code}" if code is not None and code < 0 else \
                f"exit code {code}"
            self._retire(slot, kill=True)
            if job is not None:
                results.append({"id": job["id"], "action": job["action"],
                                "status": "failed", "wall_s": None, "pid": None,
                                "error": f"worker process died ({how})", "crashed": True})
            if self.startup_failures >= 3:
                raise ThelperError(f"grid worker processes fail to start ({how}); run "
                                   "one experiment with 'thelper run' to see why")
        return results

    def interrupt(self, force: bool = False) -> None:
        for slot in self.slots:
            if slot.job is not None and slot.pid is not None:
                try:
                    os.kill(slot.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        idle = [s for s in self.slots if s.process is not None and s.job is None]
        for slot in idle:  # every idle worker is told to end first, then each is awaited
            try:
                slot.conn.send(None)
            except OSError:
                pass
        for slot in self.slots:
            if slot.process is not None:
                self._retire(slot, kill=slot.job is not None, told=slot in idle)


class RayExecutor(Executor):
    """Each experiment a Ray task with its resource request (CPUs, GPUs).

    On an existing cluster (``address``) or a local Ray started for the run. The session
    directories are written by the tasks into the grid directory: on a cluster of several
    machines it must be on a file system that every node and the driver share. A stop
    (Ctrl-C) writes ``<grid dir>/.stop-<token>``; each task watches for it and stops its
    session with a final checkpoint.

    Args:
        address: Cluster address; ``None`` starts a local Ray.
        num_cpus: CPUs per experiment (default: the grid's threads per worker).
        num_gpus: GPUs per experiment (default: 1 when the grid has GPUs).
        local_num_cpus: CPUs of a local Ray.
        temp_dir: Temporary directory of a local Ray.
    """

    def __init__(self, address: str | None = None, num_cpus: float | None = None,
                 num_gpus: float | None = None, local_num_cpus: int | None = None,
                 temp_dir: str | None = None) -> None:
        self.address = address
        self.num_cpus, self.num_gpus = num_cpus, num_gpus
        self.local_num_cpus, self.temp_dir = local_num_cpus, temp_dir
        self.refs: dict[Any, dict[str, Any]] = {}
        self.started_ray = False
        self.stop_file: Path | None = None
        self.ctx: ExecutorContext | None = None

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address not in LOCAL_RAY else "a local Ray"
        return f"ray executor on {where}: up to {self.capacity} task(s) at once"

    def start(self, ctx: ExecutorContext, n_jobs: int) -> None:
        try:
            import ray
        except ImportError:
            raise ThelperError("the ray executor needs Ray: pip install 'thelper-core[ray]'"
                               ) from None
        self.ctx = ctx
        self.capacity = max(1, min(ctx.max_concurrent, n_jobs))
        self.stop_file = ctx.grid_dir / f".stop-{os.getpid()}-{time.time_ns()}"
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address not in LOCAL_RAY:
                kwargs["address"] = self.address
            else:
                kwargs["address"] = "local"
                if self.local_num_cpus:
                    kwargs["num_cpus"] = self.local_num_cpus
                if self.temp_dir:
                    kwargs["_temp_dir"] = str(self.temp_dir)
            try:
                ray.init(**kwargs)
            except Exception as exc:  # noqa: BLE001 - connection errors of every kind
                raise ThelperError(f"cannot start or join Ray ({self.address or 'local'}): "
                                   f"{type(exc).__name__}: {exc}") from None
            self.started_ray = True
        from thelper.grid.worker import ray_task

        self._task = ray.remote(ray_task)

    def submit(self, job: dict[str, Any]) -> None:
        assert self.ctx is not None
        cpus = self.num_cpus if self.num_cpus is not None else self.ctx.threads
        gpus = self.num_gpus if self.num_gpus is not None else (1 if self.ctx.gpus else 0)
        job = {**job, "threads": max(1, int(cpus)), "stop_file": str(self.stop_file)}
        ref = self._task.options(num_cpus=cpus, num_gpus=gpus, max_retries=0).remote(job)
        self.refs[ref] = job

    def running(self) -> int:
        return len(self.refs)

    def poll(self, timeout: float) -> list[dict[str, Any]]:
        import ray

        if not self.refs:
            time.sleep(min(timeout, 0.05))
            return []
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=timeout)
        if ready:
            more, _ = ray.wait(list(self.refs), num_returns=len(self.refs), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        out = []
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                out.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a task or its worker failed
                out.append({"id": job["id"], "action": job["action"], "status": "failed",
                            "wall_s": None, "pid": None, "crashed": True,
                            "error": f"ray task failed: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}"})
        return out

    def interrupt(self, force: bool = False) -> None:
        if self.stop_file is not None:
            self.stop_file.write_text("stop\n")
        if force:
            import ray

            for ref in list(self.refs):
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self.stop_file is not None:
            self.stop_file.unlink(missing_ok=True)
        if self.started_ray:
            import ray

            ray.shutdown()
            self.started_ray = False
