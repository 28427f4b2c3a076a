"""Start the ranks of a one-node DistributedDataParallel job from ``thelper run``.

``thelper run CONFIG --nproc-per-node N`` (and ``device: cuda:all`` on a machine with
several GPUs) re-runs the same command as ``N`` worker processes through torch.distributed's
elastic launcher, the engine behind ``torchrun`` (c10d rendezvous on a free port of
127.0.0.1, no restarts). Each worker sees ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` and builds its :class:`thelper.runtime.Runtime` from
them. For several nodes use ``torchrun`` itself: ``torchrun --nnodes 2 --nproc-per-node 4
--rdzv-backend c10d --rdzv-endpoint HOST:PORT -m thelper run CONFIG``.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import uuid
from collections.abc import Sequence

__all__ = ["launch_workers", "in_launched_job", "exit_now"]


def in_launched_job() -> bool:
    """True inside a rank started by torchrun or :func:`launch_workers`."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def exit_now(code: int, collect: bool = False) -> None:  # pragma: no cover - ends the process
    """End this process with ``code`` without the interpreter's teardown, after flushing the
    logs and the standard streams (and, with ``collect``, a garbage collection, so that
    objects with resources, e.g. loader workers, are closed first).

    For processes whose work is done and saved: a rank of a multi-process job (gloo's C++
    threads can still hold tensors during the teardown and abort the rank,
    pytorch/pytorch#190489, #179291) and a grid worker (unloading torch and the plugins
    took seconds while the grid waited).
    """
    import gc

    if collect:
        gc.collect()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def launch_workers(nproc: int, args: Sequence[str]) -> int:
    """Run ``python -m thelper ARGS`` as ``nproc`` ranks of one job; wait for them.

    Args:
        nproc: Processes (ranks) on this node.
        args: The ``thelper`` command line of each worker (without ``--nproc-per-node``).

    Returns:
        0 when every rank succeeded, 130 when the launcher was interrupted (SIGINT or
        SIGTERM: the ranks are asked to stop, as a single run is), 75 after SIGUSR1 (passed
        on to the ranks: a checkpoint, then a requeue), else the exit code of
        the first rank that failed (a rank killed by a signal counts as 1). When one rank
        dies, the launcher stops the others (no rank waits forever for a dead peer).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    logging.getLogger("torch.distributed.elastic").setLevel(logging.ERROR)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"thelper-{uuid.uuid4().hex}",
        rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0,
        monitor_interval=0.2, start_method="spawn",
    )
    requeue = getattr(signal, "SIGUSR1", None)
    previous = signal.signal(requeue, _forward_to_children) if requeue is not None else None
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "thelper", *args)
    except ChildFailedError as exc:
        codes = [f.exitcode for _, f in sorted(exc.failures.items())]
        return next((c for c in codes if c and c > 0), 1)
    except SignalException:  # SIGINT/SIGTERM to the launcher: the ranks stopped
        return 130
    finally:
        if requeue is not None:
            signal.signal(requeue, previous)
    return 0


def _children(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (Linux ``/proc``; none elsewhere)."""
    out = []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), encoding="ascii",
                      errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
            out.append(int(entry.name))
    return out


def _forward_to_children(signum: int, frame: object) -> None:
    """SIGUSR1 (a scheduler's requeue warning, e.g. ``sbatch --signal=B:USR1@120``) sent to
    the launcher reaches every rank: they checkpoint at the next step and exit 75, which
    the launcher returns. torch's elastic launcher handles SIGINT/SIGTERM itself, not this
    one (its default action would kill the launcher and orphan the ranks)."""
    for pid in _children(os.getpid()):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass
