"""The grid file's model and the executors' params models (pydantic; torch-free).

A grid file names a base session config and what to vary; see ``docs/commands/grid.md``.
"""

# No ``from __future__ import annotations``: pydantic evaluates these annotations.

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from thelper.config.slots import Slot
from thelper.params import Params

__all__ = ["GridFile", "Distribution", "RandomSearch", "LocalExecutorParams",
           "RayExecutorParams", "SEED_NAMES"]

#: The seeds of a session config (``seeds.<name>``).
SEED_NAMES = ("split", "torch", "numpy", "random", "worker")

_Int = int  # the field ``Distribution.int`` shadows the builtin in its class body
ConfigPath = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$",
                                  max_length=400)]


class Distribution(Params):
    """One randomly searched value: exactly one of ``uniform``, ``log_uniform``, ``int``
    (bounds included) or ``choice``."""

    uniform: tuple[float, float] | None = None
    """A float drawn uniformly in ``[low, high]``."""
    log_uniform: tuple[float, float] | None = None
    """A float whose logarithm is uniform in ``[log(low), log(high)]`` (both > 0), e.g. a
    learning rate."""
    int: tuple[_Int, _Int] | None = None  # noqa: A003 - the YAML key users write
    """An integer drawn uniformly in ``[low, high]``, both included."""
    choice: list[Any] | None = Field(None, min_length=1)  # after ``int``: no int below
    """One of these values, each equally likely."""

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        given = [k for k in ("uniform", "log_uniform", "int", "choice")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, log_uniform, int or choice (got "
                             f"{', '.join(given) or 'none'}), e.g. {{log_uniform: [1e-4, 1e-1]}}")
        for key in ("uniform", "log_uniform", "int"):
            bounds = getattr(self, key)
            if bounds is not None:
                low, high = bounds
                if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                    raise ValueError(f"{key}: expected finite [low, high] with low <= high "
                                     f"(got [{low}, {high}])")
                if key == "log_uniform" and low <= 0:
                    raise ValueError(f"log_uniform: bounds must be > 0 (got [{low}, {high}])")
        return self

    def draw(self, rng: Any) -> Any:
        """One value, drawn with ``rng`` (a :class:`random.Random`)."""
        if self.uniform is not None:
            return rng.uniform(*self.uniform)
        if self.log_uniform is not None:
            low, high = self.log_uniform
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.int is not None:
            return rng.randint(*self.int)
        assert self.choice is not None
        return self.choice[rng.randrange(len(self.choice))]


class RandomSearch(Params):
    """Random search: ``n_trials`` points, each value drawn from its distribution with the
    grid's seed (so the same grid file always plans the same trials)."""

    n_trials: int = Field(ge=1, le=100_000)
    """How many points to draw."""
    params: dict[ConfigPath, Distribution] = Field(min_length=1)
    """Config path -> distribution, e.g. ``trainer.optimization.optimizer.params.lr:
    {log_uniform: [1e-4, 1e-1]}``."""


class GridFile(Params):
    """A grid of experiments: a base session config and what to vary.

    The experiments are every combination of one ``cases`` entry, one value per ``vary``
    path and one ``random`` trial, each run ``repeats`` times.
    """

    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$", max_length=200)
    """The grid's name: its directory under ``--save-dir`` (default: the grid file's name
    without its extension)."""
    description: str | None = None
    """Free text, kept in ``grid.json``."""
    base: str | list[str]
    """The session config(s) every experiment starts from, relative to the grid file
    (several are merged in order, like ``thelper run a.yaml b.yaml``)."""
    set: dict[ConfigPath, Any] = Field(default_factory=dict)  # noqa: A003
    """Overrides applied to every experiment (``config path: value``), e.g.
    ``trainer.epochs: 5``."""
    vary: dict[ConfigPath, list[Any]] = Field(default_factory=dict)
    """Cartesian product: ``config path: [value, ...]``; each experiment takes one value per
    path."""
    cases: list[dict[ConfigPath, Any]] = Field(default_factory=list)
    """Explicit override sets (``[{path: value, ...}, ...]``), combined with every ``vary``
    combination."""
    random: RandomSearch | None = None
    """Random search over ranges and choices, combined with the above."""
    repeats: int = Field(1, ge=1, le=1000)
    """Runs of each point; repeat ``k`` draws its ``reseed`` seeds from the grid's seed and
    ``k`` (the same for every point, so the points are compared on the same seeds)."""
    reseed: list[Literal["split", "torch", "numpy", "random", "worker"]] = Field(
        default_factory=lambda: ["torch", "numpy", "random", "worker"])
    """The seeds each repeat draws anew (default: all but ``split``, so that every repeat
    trains and tests on the same split). Seeds the config leaves unset are drawn too."""
    seed: int | None = Field(None, ge=0, le=2**32 - 1)
    """The grid's seed: random trials and experiment seeds are drawn from it at plan time.
    Unset: drawn once and recorded in ``<grid dir>/grid.json``, reused by later runs."""
    max_concurrent: int | None = Field(None, ge=1, le=4096)
    """Most experiments running at once (default: the GPUs given by ``devices``, else the
    CPU cores)."""
    threads_per_worker: int | None = Field(None, ge=1, le=4096)
    """``torch.set_num_threads`` of each worker (default: CPU cores / workers, at least 1)."""
    devices: Literal["auto", "cpu"] | list[Annotated[int, Field(ge=0)]] = "auto"
    """GPUs for the experiments, one per running experiment: ``auto`` (every visible GPU,
    none on a machine without), ``cpu`` (none), or GPU indices ``[0, 1]``."""
    executor: Slot[Literal["executor"]] = Field(
        default_factory=lambda: Slot["executor"](type="local"))
    """Where the experiments run: ``{type: local}`` (a pool of warm worker processes on this
    machine) or ``{type: ray, params: {address: ...}}`` (a Ray cluster)."""

    @model_validator(mode="after")
    def _something(self) -> "GridFile":
        for path, values in self.vary.items():
            if not values:
                raise ValueError(f"vary.{path}: give at least one value")
        return self


class LocalExecutorParams(Params):
    """The ``local`` executor: a pool of warm worker processes on this machine."""

    max_experiments_per_worker: int | None = Field(None, ge=1)
    """Replace a worker process after this many experiments (default: never). ``1`` starts
    a fresh process (and imports torch again) for every experiment."""
    start_timeout: float = Field(300.0, gt=0)
    """Seconds a new worker may take to import torch and the plugins before the grid gives
    up on it."""


class RayExecutorParams(Params):
    """The ``ray`` executor: each experiment a Ray task on a cluster."""

    address: str | None = None
    """The cluster to join (``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``); unset: start a
    local Ray for the run and shut it down at the end."""
    num_cpus: float | None = Field(None, gt=0)
    """CPUs each experiment requests (default: ``threads_per_worker``)."""
    num_gpus: float | None = Field(None, ge=0)
    """GPUs each experiment requests (default: 1 when ``devices`` gives GPUs, else 0)."""
    local_num_cpus: int | None = Field(None, ge=1)
    """CPUs of the local Ray started when ``address`` is unset (default: Ray's choice)."""
    temp_dir: str | None = None
    """Ray's temporary directory for the local Ray (default: Ray's)."""
