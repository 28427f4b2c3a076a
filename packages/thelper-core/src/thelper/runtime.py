"""The runtime context: which process this is, on which device, among how many.

One :class:`Runtime` is built per session from the environment that ``torchrun`` (or
``thelper run --nproc-per-node N``) sets for every rank (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``), or as the single-process default. It is
passed down to whatever needs to know whether it is the main process (rank 0 writes every
file and dispatches every lifecycle hook), to reduce values across ranks, or to wait for the
others. Nothing reads these facts from globals.

Collectives use ``torch.distributed``: ``nccl`` when the device is a CUDA GPU, ``gloo`` on
CPUs. In one process every method is a no-op that returns its input.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

__all__ = ["Runtime", "check_device", "device_problem"]


def _env_int(env: Mapping[str, str], key: str, default: int) -> int:
    value = env.get(key)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        from thelper.exceptions import ConfigError

        raise ConfigError(f"environment variable {key}={value!r} is not an integer; it is set "
                          "by torchrun (unset it to run a single process)") from None


def _choices(count: int) -> str:
    if count == 0:
        return "use cpu (or auto, which picks what the machine has)"
    gpus = "cuda:0" if count == 1 else f"cuda:0..cuda:{count - 1}"
    return f"use {gpus}, cuda:all or cpu"


def device_problem(device: str) -> str | None:
    """What is wrong with ``trainer.device`` on this machine, or ``None``.

    ``cuda:N`` needs at least ``N + 1`` CUDA devices, ``cuda`` and ``cuda:all`` at least one,
    ``mps`` and ``xpu`` an available backend; ``auto`` and ``cpu`` always fit. Imports torch.
    Under several processes (torchrun) every CUDA choice means ``cuda:<LOCAL_RANK>``, so
    :meth:`Runtime.start` checks the local rank instead.
    """
    import torch

    name = device.strip()
    kind, _, index = name.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        need = int(index) + 1 if index.isdigit() else 1
        if count < need:
            return (f"{device!r} but this machine has {count} CUDA device(s); "
                    + _choices(count))
    elif kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            return f"{device!r} but MPS (Apple Metal) is not available on this machine; " \
                   + _choices(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    elif kind == "xpu":
        xpu = getattr(torch, "xpu", None)
        if xpu is None or not xpu.is_available():
            return f"{device!r} but no Intel XPU is available on this machine; " \
                   + _choices(torch.cuda.device_count() if torch.cuda.is_available() else 0)
    return None


def check_device(device: str) -> None:
    """Refuse a ``trainer.device`` that this machine does not have.

    Called by :meth:`Runtime.start` (before ``thelper run`` or ``resume`` creates or
    touches the session directory) and by ``thelper config validate --build``.

    Raises:
        ConfigError: E.g. ``trainer.device: 'cuda:7' but this machine has 2 CUDA device(s);
            use cuda:0..cuda:1, cuda:all or cpu``.
    """
    problem = device_problem(device)
    if problem is not None:
        from thelper.exceptions import ConfigError

        raise ConfigError(f"trainer.device: {problem}")


@dataclass
class Runtime:
    """Rank, world size and device of this process.

    Attributes:
        rank: Global rank, ``0 .. world_size - 1``.
        local_rank: Rank on this node (selects ``cuda:<local_rank>``).
        world_size: Number of processes of the job.
        device: ``torch.device`` the process computes on (set by :meth:`start`).
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (single process).
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: Any = None
    backend: str | None = None
    _owns_group: bool = field(default=False, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Runtime:
        """Read ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` (torchrun) or default to one
        process.

        Raises:
            ConfigError: A variable is set but not an integer, or the ranks are inconsistent.
        """
        env = os.environ if env is None else env
        world = _env_int(env, "WORLD_SIZE", 1)
        rank = _env_int(env, "RANK", 0)
        local = _env_int(env, "LOCAL_RANK", rank)
        if world < 1 or not 0 <= rank < world:
            from thelper.exceptions import ConfigError

            raise ConfigError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent; launch "
                              "with torchrun or 'thelper run --nproc-per-node N'")
        return cls(rank=rank, local_rank=local, world_size=world)

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and dispatches hooks."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when the job has more than one process."""
        return self.world_size > 1

    def start(self, device_name: str) -> Runtime:
        """Resolve the device and join the process group (once per job).

        Args:
            device_name: ``trainer.device``: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or
                ``cuda:all``. Under several processes any CUDA choice means
                ``cuda:<local_rank>``.

        Raises:
            ConfigError: The device is not on this machine (``cuda:7`` with fewer GPUs,
                ``mps`` without Metal; see :func:`check_device`), or fewer GPUs than local
                ranks.
        """
        import torch

        from thelper.exceptions import ConfigError

        if not self.distributed:
            from thelper.train.trainer import resolve_device

            check_device(device_name)
            self.device = resolve_device(device_name)
            return self
        want_cuda = device_name.startswith("cuda") or (
            device_name == "auto" and torch.cuda.is_available())
        if want_cuda:
            if not torch.cuda.is_available():
                raise ConfigError(f"trainer.device: {device_name!r} requested but CUDA is not "
                                  "available; use 'cpu' (gloo) for a CPU job")
            if self.local_rank >= torch.cuda.device_count():
                raise ConfigError(f"local rank {self.local_rank} has no GPU (this node has "
                                  f"{torch.cuda.device_count()}); lower --nproc-per-node")
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
            self.backend = "nccl"
        else:
            self.device = torch.device("cpu")
            self.backend = "gloo"
        import torch.distributed as dist

        if not dist.is_initialized():
            timeout = timedelta(seconds=float(os.environ.get("THELPER_DIST_TIMEOUT", "1800")))
            kwargs: dict[str, Any] = {"backend": self.backend, "timeout": timeout}
            if self.backend == "nccl":
                kwargs["device_id"] = self.device
            dist.init_process_group(**kwargs)
            self._owns_group = True
        return self

    def close(self, sync: bool = False) -> None:
        """Leave the process group if :meth:`start` joined it.

        Args:
            sync: Wait for every rank first (a barrier), so that no rank tears its
                connections down while a peer still has a collective in flight. Only when
                every rank ends normally: after a failure a peer may never reach the
                barrier (the launcher stops the ranks instead).
        """
        if self._owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                if sync:
                    self.barrier()
                dist.destroy_process_group()
            self._owns_group = False

    # ------------------------------------------------------------ collectives
    def barrier(self) -> None:
        """Wait until every rank reaches this point."""
        if self.distributed:
            import torch.distributed as dist

            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()

    def broadcast_object(self, obj: Any = None, src: int = 0) -> Any:
        """Rank ``src``'s ``obj`` on every rank (any picklable value)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (any picklable value)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce(self, tensor: Any, op: str = "sum") -> Any:
        """Reduce ``tensor`` in place over every rank (``sum``, ``max`` or ``min``)."""
        if not self.distributed:
            return tensor
        import torch.distributed as dist

        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
        return tensor

    def any(self, flag: bool) -> bool:
        """True when ``flag`` is true on any rank (one small collective)."""
        if not self.distributed:
            return bool(flag)
        import torch

        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        return bool(self.all_reduce(t, "max").item())
