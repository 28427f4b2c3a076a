"""The generic supervised epoch loop, shared by every task.

The task object supplies inputs, targets and the default loss; metrics accumulate on the
device and are reduced once per epoch, so a step performs no device-to-host
synchronisation except every ``log_every_n_steps`` steps for the progress bar.

A training step is three named seams that a subclass may override one at a time:
:meth:`Trainer.forward_step` (the task's forward and loss under autocast),
:meth:`Trainer.backward_step` (loss scaling for accumulation and float16, backward) and
:meth:`Trainer.optimizer_step` (unscale, clip, step, scaler update, zero_grad, per-step
scheduler). Under several ranks the model is wrapped in ``DistributedDataParallel``
(gradients are averaged at the backward of each accumulation boundary, ``no_sync`` in
between), and the epoch's loss, metric states, non-finite check and stop requests are
reduced over the ranks so that every rank takes the same decisions.

A stop request (SIGINT/SIGTERM, or SIGUSR1 for a requeue: ``session.stop_requested``) is
honoured within one batch in every phase (under several ranks, at the next multiple of
``log_every_n_steps`` steps or batches, where the ranks agree on it): during training after
a step checkpoint, during validation after a checkpoint of the trained epoch (a resume
validates it again), during the final test without one (a resume tests again); the loop
then raises a :class:`StopRequested` (a ``KeyboardInterrupt``), :class:`RequeueRequested`
for SIGUSR1. ``trainer.max_time`` stops the training the same way at the first step
boundary (or epoch end) past the limit, with :class:`TimeLimitReached`; the training time is
read through :func:`clock` and summed over the resumes (checkpoint key ``elapsed_time``).

Besides ``ckpt.best.pt`` and ``ckpt.latest.pt``, ``trainer.save_top_k`` keeps the
checkpoints of the K best epochs (``ckpt.epoch<NNNN>-<metric><value>.pt``), listed in every
checkpoint (``top_k``) so that a resume keeps exactly those files; ``trainer.ema`` keeps an
exponential moving average of the weights (``torch.optim.swa_utils.AveragedModel``) that
validation and test evaluate, checkpointed under ``ema``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thelper.checkpoint import (
    FORMAT,
    get_rng_state,
    link_checkpoint,
    save_checkpoint,
    set_rng_state,
    source_info,
)
from thelper.data.loaders import SKIPPED_KEY, epoch_seed
from thelper.exceptions import ConfigError, DataError, NonFiniteLossError
from thelper.finetune import apply_unfreeze, optimizer_params
from thelper.logs import console, is_interactive
from thelper.metrics import Metric, merge_states
from thelper.train.reports import ReportWorker, render_curves, snapshot, write_curves_csv

__all__ = ["Trainer", "EvaluationStopped", "StopRequested", "RequeueRequested",
           "TimeLimitReached", "REQUEUE_SIGNAL", "EXIT_TIME_LIMIT", "EXIT_REQUEUE", "clock",
           "top_k_name"]

#: The signal that asks for a checkpoint and an exit to be requeued (as SLURM's
#: ``--signal=USR1@90`` sends before the job's time limit); ``None`` where it does not exist.
REQUEUE_SIGNAL: int | None = getattr(signal, "SIGUSR1", None)
#: Exit code of ``thelper run``/``resume`` when ``trainer.max_time`` stopped the training.
EXIT_TIME_LIMIT = 3
#: Exit code after a requeue request (SIGUSR1): ``EX_TEMPFAIL`` of ``sysexits.h``.
EXIT_REQUEUE = 75

#: The clock of ``trainer.max_time``: seconds, monotonic. Tests replace it (monkeypatch
#: ``thelper.train.trainer.clock``) to advance time by training progress.
clock = time.monotonic


class StopRequested(KeyboardInterrupt):
    """The loop stopped at a step or batch boundary after keeping what a resume needs.

    Attributes:
        reason: ``interrupted`` (SIGINT/SIGTERM), ``requeue`` or ``time_limit``: run.json's
            ``stopped_reason``.
        exit_code: The command's exit code (130, :data:`EXIT_REQUEUE`,
            :data:`EXIT_TIME_LIMIT`).
        summary: The line the command prints on stderr.
        epoch: The epoch in progress (or the last one trained).
        step: Optimizer steps done.
    """

    reason = "interrupted"
    exit_code = 130
    summary = "interrupted"

    def __init__(self, message: str, epoch: int | None = None, step: int | None = None
                 ) -> None:
        super().__init__(message)
        self.epoch, self.step = epoch, step


class RequeueRequested(StopRequested):
    """SIGUSR1 stopped the session after a checkpoint: exit :data:`EXIT_REQUEUE` (75), so
    that a batch script requeues the job, whose ``thelper resume`` continues exactly."""

    reason = "requeue"
    exit_code = EXIT_REQUEUE
    summary = f"stopped for a requeue (SIGUSR1); exit code {EXIT_REQUEUE}"


class TimeLimitReached(StopRequested):
    """``trainer.max_time`` stopped the training after a checkpoint: exit
    :data:`EXIT_TIME_LIMIT` (3); a resume with a larger ``max_time`` continues exactly."""

    reason = "time_limit"
    exit_code = EXIT_TIME_LIMIT
    summary = f"time limit reached (trainer.max_time); exit code {EXIT_TIME_LIMIT}"


#: Stop reasons by priority (a larger code wins when the ranks agree on a stop).
_STOP_REASONS = (None, "time_limit", "requeue", "interrupted")
_STOP_ERRORS = {"interrupted": StopRequested, "requeue": RequeueRequested,
                "time_limit": TimeLimitReached}
#: Top-k checkpoint file names: ``ckpt.epoch0007-accuracy0.9812.pt``.
TOP_K_PATTERN = re.compile(r"^ckpt\.epoch\d{4,}-[A-Za-z0-9_.+-]*\.pt$")


def top_k_name(epoch: int, metric: str, value: float) -> str:
    """File name of a top-k checkpoint: ``ckpt.epoch0007-accuracy0.9812.pt`` (the metric's
    name with characters other than letters, digits and ``_ . + -`` replaced by ``_``, its
    value with 4 significant digits)."""
    safe = re.sub(r"[^A-Za-z0-9_.+-]", "_", metric)
    return f"ckpt.epoch{epoch:04d}-{safe}{value:.4g}.pt"


class EvaluationStopped(KeyboardInterrupt):
    """A stop request ended an evaluation pass at a batch boundary.

    :meth:`Trainer.fit` and :meth:`Trainer.test` turn it into a :class:`StopRequested` of
    its ``reason`` after what they keep (a checkpoint of the trained epoch during
    validation).
    """

    def __init__(self, message: str, reason: str = "interrupted") -> None:
        super().__init__(message)
        self.reason = reason


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available else ``cpu``; validates CUDA requests.

    Raises:
        ConfigError: CUDA requested but unavailable.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda:all":  # one process: the first GPU (several ranks: Runtime.start)
        name = "cuda"
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"trainer.device: {name!r} is not a device ({exc}); use auto, cpu, "
                          "cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"trainer.device: {name!r} requested but CUDA is not available; use "
                          "'auto' or 'cpu' (e.g. --set trainer.device=cpu)")
    return dev


class Trainer:
    """Generic epoch loop: train, validate, checkpoint, then test the best model.

    Args:
        session: The session (config, task, directories, plugin manager).
        model: The model to train.
        data: The session data (loaders per split, generators).
        registry: Component registry used to build loss, optimizer, scheduler, metrics.
        grad_clip_norm: Clip the global gradient norm (``None``: no clipping).
        log_every_n_steps: Refresh the running loss shown in the progress bar every N steps;
            under several ranks, also how often a stop request is agreed on.
        find_unused_parameters: Passed to ``DistributedDataParallel`` (models whose forward
            leaves some parameters unused).

    Attributes:
        model: The model (never wrapped: what checkpoints save).
        train_model: What the training forward calls: ``model``, wrapped in
            ``DistributedDataParallel`` under several ranks and compiled with
            ``trainer.compile``.
        ema: With ``trainer.ema``, the ``AveragedModel`` of ``model`` (on every rank: the
            ranks' weights are identical), else ``None``.
        runtime: The process's rank, world size and device.
        top_k: With ``trainer.save_top_k``, the kept checkpoints, best first:
            ``{"file", "epoch", "value"}`` (file names in ``checkpoints/``).
        stopped: Why and where the training ended when it ended without an exception
            (``{"reason": "completed" | "early_stopping", "epoch", "step"}``), else ``None``.
    """

    def __init__(self, session: Any, model: torch.nn.Module, data: Any, registry: Any,
                 grad_clip_norm: float | None = None, log_every_n_steps: int = 20,
                 find_unused_parameters: bool = False) -> None:
        self.session = session
        self.cfg = session.cfg.trainer
        self.registry = registry
        self.data = data
        self.task = data.task
        self.grad_clip_norm = grad_clip_norm
        self.log_every_n_steps = log_every_n_steps
        self.reports = ReportWorker()  # figures render off the training thread (rank 0)
        self._live: Any = None  # the run's progress display while fit() runs
        self._kept_reports: dict[str, tuple[int, dict[str, Metric]]] = {}
        self.runtime = session.runtime
        self.device = self.runtime.device if self.runtime.device is not None \
            else resolve_device(self.cfg.device)
        session.device = str(self.device)
        self.accumulate = int(self.cfg.accumulate_grad_batches)
        self.autocast_dtype = {"32": None, "bf16-mixed": torch.bfloat16,
                               "16-mixed": torch.float16}[self.cfg.precision]
        if self.autocast_dtype is torch.float16 and self.device.type != "cuda":
            raise ConfigError(f"trainer.precision: '16-mixed' needs a CUDA device (this "
                              f"session runs on {self.device}); use 'bf16-mixed'")
        self.scaler = torch.amp.GradScaler("cuda") \
            if self.autocast_dtype is torch.float16 else None
        self.model = model.to(self.device)
        opt_cfg = self.cfg.optimization
        if opt_cfg.loss is not None:
            self.loss_fn = registry.build("loss", opt_cfg.loss.type, opt_cfg.loss.params)
            self.loss_spec = {"type": opt_cfg.loss.type, "params": opt_cfg.loss.params.model_dump()}
        else:
            name, params = self.task.default_loss()
            self.loss_fn = registry.build("loss", name, params)
            self.loss_spec = {"type": name, "params": params}
        if isinstance(self.loss_fn, torch.nn.Module):
            self.loss_fn = self.loss_fn.to(self.device)
        self.optimizer = registry.build("optimizer", opt_cfg.optimizer.type,
                                        opt_cfg.optimizer.params,
                                        params=optimizer_params(self.model, opt_cfg.optimizer))
        self.monitor = self.cfg.monitor
        self.goal = self._goal(self.monitor)
        es = self.cfg.early_stopping
        if es is not None and es.mode is not None and es.mode != self.goal:
            raise ConfigError(
                f"trainer.early_stopping.mode: {es.mode!r} contradicts the goal of the "
                f"monitored metric {self.monitor!r} ({self.goal}); use mode: {self.goal} or "
                "leave mode out (it defaults to the metric's goal)")
        self.scheduler = None
        self.step_metric: str | None = None
        if opt_cfg.scheduler is not None:
            spec = opt_cfg.scheduler
            info = registry.get("scheduler", spec.type)
            if info.metadata.get("needs_metric"):
                self.step_metric = spec.step_metric or self.monitor
            self.scheduler = registry.build(
                "scheduler", spec.type, spec.params, optimizer=self.optimizer,
                goal=self._goal(self.step_metric) if self.step_metric else "min")
        self.scheduler_interval = opt_cfg.scheduler.interval \
            if opt_cfg.scheduler is not None else "epoch"
        self.metric_specs = dict(self.cfg.metrics)
        self.test_metric_specs = dict(self.cfg.test_metrics)
        self.metrics = self._build_metrics(self.metric_specs)
        self.find_unused_parameters = find_unused_parameters
        self.train_model = self._wrap(self.model, find_unused_parameters)
        self.monitor_split = "valid" if "valid" in data.loaders else "train"
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.step = 0
        self.epoch = 0
        self.skipped_samples = 0
        self._checked_outputs = False
        self.input_shape: list[int] | None = None
        self._resume_in_epoch: dict[str, Any] | None = None
        self._resume_rng: dict[str, Any] | None = None
        self._step_ckpts: list[Path] = sorted(
            session.checkpoints_dir.glob("ckpt.step.*.pt"), key=lambda p: p.stat().st_mtime)
        self.last_evaluation: dict[str, Any] | None = None
        self.ema = self._build_ema()
        self.max_time = self.cfg.max_time_seconds()
        self._elapsed_before = 0.0  # training seconds of the previous runs (checkpoint)
        self._started: float | None = None  # clock() when this run's loop started
        self.top_k: list[dict[str, Any]] = []
        self.stopped: dict[str, Any] | None = None

    # ------------------------------------------------------------------ helpers
    def _goal(self, metric: str | None) -> str:
        if metric is None or metric == "loss":
            return "min"
        spec = self.cfg.metrics.get(metric)
        if spec is None:
            raise ConfigError(f"trainer.monitor: metric {metric!r} is not defined under "
                              "trainer.metrics")
        goal = self.registry.get("metric", spec.type).metadata.get("goal")
        if goal not in ("min", "max"):
            raise ConfigError(f"metric {metric!r} has no min/max goal and cannot be monitored")
        return str(goal)

    def _build_ema(self) -> Any:
        """The ``AveragedModel`` of ``trainer.ema`` (buffers averaged too), or ``None``."""
        spec = self.cfg.ema
        if spec is None:
            return None
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(spec.decay),
                            use_buffers=True)
        ema.requires_grad_(False)
        return ema

    @property
    def eval_model(self) -> torch.nn.Module:
        """What validation and test evaluate: the EMA's module with ``trainer.ema``, else
        ``model``."""
        return self.ema.module if self.ema is not None else self.model

    def elapsed(self) -> float:
        """Training seconds so far (:func:`clock`), summed over the resumes."""
        if self._started is None:
            return self._elapsed_before
        return self._elapsed_before + (clock() - self._started)

    def _build_metrics(self, specs: dict[str, Any]) -> dict[str, Metric]:
        out = {}
        for name, spec in specs.items():
            metric = self.registry.build("metric", spec.type, spec.params, task=self.task)
            if self.runtime.distributed and not metric.declared_states():
                raise ConfigError(
                    f"trainer.metrics.{name}: metric {spec.type!r} declares no state "
                    "(Metric.add_state), so it cannot be reduced across ranks; declare "
                    "its accumulators (see docs/writing-plugins.md) or run one process")
            out[name] = metric
        return out

    def _wrap(self, model: torch.nn.Module, find_unused: bool) -> torch.nn.Module:
        """``DistributedDataParallel`` under several ranks, then ``torch.compile``."""
        wrapped = model
        if self.runtime.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=ids,
                                              find_unused_parameters=find_unused)
        if self.cfg.compile:
            wrapped = torch.compile(wrapped)
        return wrapped

    def _improved(self, value: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        if self.best is None:
            return True
        delta = self.cfg.early_stopping.min_delta if self.cfg.early_stopping else 0.0
        return value < self.best - delta if self.goal == "min" else value > self.best + delta

    def _seed_epoch(self, epoch: int, start: int = 0) -> None:
        """Seed the global RNGs (dropout, ...) and the data order for ``epoch``.

        Args:
            epoch: 1-based epoch.
            start: Training samples of this epoch already consumed (mid-epoch resume).
        """
        seeds = self.session.seeds
        torch.manual_seed(epoch_seed(seeds["torch"], epoch))
        np.random.seed(epoch_seed(seeds["numpy"], epoch) % 2**32)
        random.seed(epoch_seed(seeds["random"], epoch))
        for split, loader in self.data.loaders.items():
            loader.dataset.epoch = epoch
            loader.sampler.set_epoch(epoch, start if split == "train" else 0)
            loader.generator.manual_seed(epoch_seed(seeds["worker"], epoch))

    def _stop_reason(self, timed: bool = False) -> str | None:
        """This rank's reason to stop: ``interrupted`` (SIGINT/SIGTERM), ``requeue``
        (SIGUSR1), ``time_limit`` (``timed`` and ``trainer.max_time`` reached) or ``None``."""
        signum = getattr(self.session, "stop_requested", None)
        if signum:
            return "requeue" if signum == REQUEUE_SIGNAL else "interrupted"
        if timed and self.max_time is not None and self.elapsed() >= self.max_time:
            return "time_limit"
        return None

    def _agree(self, reason: str | None) -> str | None:
        """The stop reason of the ranks (one small collective under several ranks): the
        first of ``interrupted``, ``requeue``, ``time_limit`` that any rank has."""
        if not self.runtime.distributed:
            return reason
        t = torch.tensor([_STOP_REASONS.index(reason)], dtype=torch.int32,
                         device=self.device)
        return _STOP_REASONS[int(self.runtime.all_reduce(t, "max").item())]

    def _stop_everywhere(self, timed: bool = False) -> str | None:
        """A stop reason of any rank (see :meth:`_agree`), or ``None``."""
        return self._agree(self._stop_reason(timed))

    def _stop_agreed(self, count: int, common: int, timed: bool = False) -> str | None:
        """Whether (and why) to stop after the ``count``-th step or batch of a loop.

        In one process: as soon as a stop is requested (or, ``timed``, the time limit is
        reached). Under several ranks: a reason of any rank, agreed on (one collective)
        every ``log_every_n_steps``, and only while ``count <= common``, the steps or
        batches that every rank runs (the ranks call the collective together).
        """
        if not self.runtime.distributed:
            return self._stop_reason(timed)
        if count % self.log_every_n_steps == 0 and count <= common:
            return self._stop_everywhere(timed)
        return None

    def _stop_error(self, reason: str, message: str, epoch: int) -> StopRequested:
        """The exception that ends the session for ``reason`` (logged with its cause)."""
        if reason == "time_limit":
            message = (f"time limit {self.cfg.max_time!r} (trainer.max_time) reached {message}"
                       f" after {self.elapsed():.0f}s of training; continue with a larger "
                       "max_time ('thelper resume SESSION --set trainer.max_time=...')")
        elif reason == "requeue":
            message = f"requeue requested (SIGUSR1) {message}"
        else:
            message = f"stop requested {message}"
        return _STOP_ERRORS[reason](message, epoch, self.step)

    def _autocast(self) -> Any:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def forward_step(self, batch: dict[str, Any]) -> tuple[Any, Any, torch.Tensor]:
        """Seam 1: the task's forward and loss on ``train_model``, under autocast.

        Returns:
            ``(outputs, targets, loss)``; ``loss`` is the batch's mean loss (0-d float).
        """
        if self.autocast_dtype is None:
            return self._forward(batch, self.train_model)
        with self._autocast():
            return self._forward(batch, self.train_model)

    def backward_step(self, loss: torch.Tensor, weight: float = 1.0) -> None:
        """Seam 2: backward of ``loss * weight`` (scaled for float16).

        Args:
            loss: The batch's mean loss.
            weight: The batch's share of the samples of its accumulation window
                (``1 / accumulate_grad_batches`` for full batches), so that the summed
                gradients are those of the window as one batch, the epoch's last, shorter
                window included.

        Under several ranks, gradients are averaged over the ranks during the backward of
        an accumulation boundary (the loop wraps the others in ``no_sync``).
        """
        if weight != 1.0:
            loss = loss * weight
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
        else:
            loss.backward()

    def optimizer_step(self) -> None:
        """Seam 3: unscale, clip the gradient norm, step, update the scaler, zero the
        gradients, and step a per-step scheduler."""
        if self.scaler is not None:
            if self.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if self.grad_clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()

    def _forward(self, batch: dict[str, Any], model: torch.nn.Module | None = None
                 ) -> tuple[Any, Any, torch.Tensor]:
        outputs, targets, loss = self.task.step(model if model is not None else self.model,
                                                self.loss_fn, batch, self.device)
        if self.autocast_dtype is not None and isinstance(outputs, torch.Tensor) \
                and outputs.is_floating_point():
            outputs = outputs.float()  # metrics see float32 logits
        if not self._checked_outputs:
            self.task.check_outputs(outputs, self.session.cfg.model.type)
            self._checked_outputs = True
            x = self.task.get_input(batch)
            if isinstance(x, torch.Tensor):
                self.input_shape = list(x.shape[1:])
        return outputs, targets, loss

    # ------------------------------------------------------------------- epochs
    def _progress(self, total: int, label: str) -> _Bar | None:
        """A bar for one pass (``total`` batches): under the run's line while :meth:`fit`
        shows one, else on its own; ``None`` without a terminal or with ``thelper -q``."""
        if not (self.cfg.progress and is_interactive()):
            return None
        if self._live is not None:
            return _Bar(self._live, self._live.add_task(label, total=total, info=""), False)
        progress = _new_progress()
        progress.start()
        return _Bar(progress, progress.add_task(label, total=total, info=""), True)

    def _run_line(self) -> Any:
        """The whole run's line (``run NAME: epoch k/N``, elapsed, ETA) above the pass bars,
        or ``None`` (no terminal, ``thelper -q``, ``trainer.progress: false``)."""
        if not (self.cfg.progress and is_interactive()):
            return None
        progress = _new_progress()
        s = self.session
        done = max(s.start_epoch - 1, 0)
        progress.add_task(f"run {s.name}: epoch {done + 1}/{self.cfg.epochs}",
                          total=self.cfg.epochs, completed=done, info="")
        progress.start()
        return progress

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader; returns ``loss``, ``lr`` and the metrics.

        Each batch runs :meth:`forward_step` and :meth:`backward_step`; every
        ``accumulate_grad_batches`` batches (and at the epoch's last batch)
        :meth:`optimizer_step` follows, the step counter advances and the EMA of the
        weights is updated (``trainer.ema``, every ``every_n_steps`` steps). Writes a step
        checkpoint every ``trainer.checkpoint_every_n_steps`` optimizer steps and when the
        loop must stop (a signal, or ``trainer.max_time`` reached), then raises. The
        returned values are reduced over every rank.

        Raises:
            ThelperError: Non-finite loss with ``on_nonfinite_loss: stop`` (names epoch and
                step; no checkpoint is written after it).
            StopRequested: After the step checkpoint: :class:`RequeueRequested` (SIGUSR1),
                :class:`TimeLimitReached`, else a SIGINT/SIGTERM.
        """
        loader = self.data.loaders["train"]
        self.train_model.train()
        for m in self.metrics.values():
            m.reset()
        loss_sum = torch.zeros((), device=self.device)
        count, batches, skipped = 0, 0, 0
        first_bad = torch.full((), -1, dtype=torch.int64, device=self.device)
        unchecked: list[torch.Tensor] = []  # detached losses of the last steps, not yet
        # checked for NaN/inf: folded into first_bad every _NONFINITE_CHUNK steps (cheaper
        # than a check per step: small CPU ops cost 20-60 us each within a training step)
        resume = self._resume_in_epoch if (self._resume_in_epoch or {}).get("epoch") == epoch \
            else None
        self._resume_in_epoch = None
        if resume is not None:  # continue mid-epoch exactly where the checkpoint was taken
            batches, local = self._resume_plan(resume, loader.batch_size)
            loss_sum = local["loss_sum"].to(self.device).reshape(())
            count, skipped = int(local["count"]), int(local.get("skipped", 0))
            for name, m in self.metrics.items():
                if name in local["metrics"]:
                    m.load_state_dict(_to(local["metrics"][name], self.device))
        every = self.cfg.checkpoint_every_n_steps
        ema, ema_every = self.ema, (self.cfg.ema.every_n_steps if self.ema is not None else 0)
        skip_nonfinite = self.cfg.on_nonfinite_loss == "skip"
        distributed = self.runtime.distributed
        accumulate = self.accumulate
        last = batches + len(loader)  # batches of this rank's epoch
        shard = _shard_samples(loader)  # samples of this rank's epoch (None: unknown)
        window: torch.Tensor | None = None  # summed losses of the accumulation window
        window_n = 0  # micro-batches in the window
        # per-step scalars for thelper_log_scalars (rank 0): (step, mean loss, lr)
        logged: list[tuple[int, torch.Tensor, float]] = []
        log_steps = self.session.is_main
        progress = self._progress(len(loader), f"epoch {epoch}/{self.cfg.epochs} train")
        non_blocking = self.device.type == "cuda"
        self.optimizer.zero_grad(set_to_none=True)
        try:
            for batch in loader:
                skipped += int(batch.pop(SKIPPED_KEY, 0)) if isinstance(batch, dict) else 0
                if isinstance(batch, dict) and self.task.input_key not in batch:
                    batches += 1
                    continue  # every sample of this batch was unreadable and skipped
                batch = self.task.to_device(batch, self.device, non_blocking)
                n = _batch_size(batch, self.task)
                boundary = accumulate == 1 or (batches + 1) % accumulate == 0 \
                    or batches + 1 >= last
                # gradients are averaged over the ranks at the boundary's backward only
                sync = _SYNC if boundary or not distributed else self.train_model.no_sync()
                with sync:
                    outputs, targets, loss = self.forward_step(batch)
                    bad = skip_nonfinite and self._skip_nonfinite(loss, batches, epoch)
                    if not bad:
                        self.backward_step(loss, self._window_weight(batches, last, n, loader,
                                                                     shard))
                batches += 1
                if bad:
                    continue
                loss_value = loss.detach()
                count += n
                detached = outputs.detach() if isinstance(outputs, torch.Tensor) else outputs
                loss_sum.add_(loss_value, alpha=n)
                for m in self.metrics.values():
                    m.update(detached, targets)
                # one value per optimizer step: the window's losses summed (NaN/inf stays)
                window = loss_value if window is None else window + loss_value
                window_n += 1
                if progress is not None:
                    info = {}
                    if batches % self.log_every_n_steps == 0:
                        info = {"info": f"loss {float(loss_sum) / max(count, 1):.4f}"}
                    progress.advance(**info)
                if not boundary:
                    continue
                self.optimizer_step()
                self.step += 1
                if log_steps and self.step % self.log_every_n_steps == 0 and window is not None:
                    # kept on the device: read back once, at the end of the epoch
                    logged.append((self.step, window / max(window_n, 1),
                                   float(self.optimizer.param_groups[0]["lr"])))
                    if len(logged) >= _STEP_FLUSH:  # trackers see long epochs as they go
                        self._log_steps(logged, epoch)
                window_n = 0
                if ema is not None and self.step % ema_every == 0:
                    ema.update_parameters(self.model)
                unchecked.append(window)
                window = None
                if len(unchecked) >= _NONFINITE_CHUNK:
                    first_bad = _first_nonfinite(first_bad, unchecked, self.step)
                # under several ranks agreed every log_every_n_steps steps (every rank runs
                # the same steps): the ranks stop together
                stop = self._stop_agreed(self.step, self.step, timed=True)
                if (every and self.step % every == 0) or stop:
                    first_bad = _first_nonfinite(first_bad, unchecked, self.step)
                    self._check_finite(first_bad, epoch)
                    self._log_steps(logged, epoch)  # the checkpoint syncs anyway
                    self._save_step(epoch, batches, loader.batch_size, {
                        "loss_sum": loss_sum.detach().cpu(), "count": count,
                        "skipped": skipped,
                        "metrics": {k: _to(m.state_dict(), "cpu")
                                    for k, m in self.metrics.items()},
                    })
                    if stop:
                        self.runtime.barrier()  # rank 0 has written it: the ranks may exit
                        raise self._stop_error(stop, f"at step {self.step}", epoch)
        finally:
            if progress is not None:
                progress.stop()
            self._log_steps(logged, epoch)  # also when the epoch is stopped
        first_bad = _first_nonfinite(first_bad, unchecked, self.step)
        self._check_finite(first_bad, epoch)
        loss_total, count, skipped = self._reduce_sums(loss_sum, count, skipped)
        if count == 0:
            raise DataError("the training loader produced no batch (batch size larger than "
                            "the split with drop_last, or every sample skipped?)")
        if skipped:
            self.session.logger.warning("epoch %d: skipped %d unreadable sample(s)", epoch,
                                        skipped)
        self.skipped_samples += skipped
        out = {"loss": loss_total / count,
               "lr": float(self.optimizer.param_groups[0]["lr"])}
        self._sync_metrics(self.metrics)
        for name, m in self.metrics.items():
            v = m.compute()
            if v is not None:
                out[name] = float(v)
        return out

    def _log_steps(self, logged: list[tuple[int, torch.Tensor, float]], epoch: int) -> None:
        """``thelper_log_scalars`` for the steps logged since the last call (rank 0): their
        losses stay on the device and are read back here in one transfer, every
        :data:`_STEP_FLUSH` logged steps, at a step checkpoint and at the epoch's end, so
        the training step itself never waits for the device (see
        tests/integration/test_trainer_syncs)."""
        if not logged:
            return
        losses = torch.stack([loss.detach().float() for _, loss, _ in logged]).cpu().tolist()
        for (step, _, lr), loss in zip(logged, losses, strict=True):
            self.session.plugins.log_scalars(self.session, "train", step,
                                             {"loss": loss, "lr": lr, "epoch": float(epoch)})
        logged.clear()

    def _skip_nonfinite(self, loss: torch.Tensor, index: int, epoch: int) -> bool:
        """``on_nonfinite_loss: skip``: True (after dropping the accumulated gradients) when
        the loss is NaN/inf on any rank; a host sync per step, by design."""
        if not self.runtime.any(not bool(torch.isfinite(loss.detach()))):
            return False
        self.session.logger.warning(
            "skipping batch %d of epoch %d (after step %d): non-finite loss %s", index + 1,
            epoch, self.step, float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)  # the whole accumulation window
        return True

    def _window_weight(self, index: int, last: int, n: int, loader: Any,
                       shard: int | None) -> float:
        """Share of batch ``index`` (``n`` samples) in its accumulation window's samples."""
        k = self.accumulate
        if k == 1:
            return 1.0
        if shard is None:
            return 1.0 / k
        bs = loader.batch_size
        first = index - index % k
        end = min(first + k, last)
        total = (end - first) * bs
        if end == last and not loader.drop_last:
            total -= max(last * bs - shard, 0)  # the epoch's last batch is shorter
        return n / total if total > 0 else 1.0 / k

    # ------------------------------------------------------------ across ranks
    def _reduce_sums(self, loss_sum: torch.Tensor, count: int, skipped: int = 0
                     ) -> tuple[float, int, int]:
        """The epoch's loss sum, sample count and skipped samples over every rank."""
        if not self.runtime.distributed:
            return float(loss_sum), count, skipped
        t = torch.stack([loss_sum.detach().double().reshape(()),
                         torch.tensor(float(count), dtype=torch.float64, device=self.device),
                         torch.tensor(float(skipped), dtype=torch.float64, device=self.device)])
        self.runtime.all_reduce(t, "sum")
        total, n, sk = t.tolist()
        return total, int(n), int(sk)

    def _sync_metrics(self, metrics: dict[str, Metric]) -> None:
        """Replace every rank's metric states by their reduction over the ranks
        (:func:`thelper.metrics.merge_states`, rank order)."""
        if not self.runtime.distributed or not metrics:
            return
        local = {name: _to(m.state_dict(), "cpu") for name, m in metrics.items()}
        every = self.runtime.all_gather_object(local)
        for name, m in metrics.items():
            m.load_state_dict(_to(merge_states(m, [r[name] for r in every]), self.device))

    def _resume_plan(self, resume: dict[str, Any], batch_size: int
                     ) -> tuple[int, dict[str, Any]]:
        """Batches already done by this rank and its running sums, from a step checkpoint.

        With the checkpoint's world size, each rank continues its own shard exactly. With
        another, the ranks' sums are merged into rank 0 (the others start from zero) and
        each rank skips its share of the samples already seen: the epoch's remaining sample
        order differs from an uninterrupted run.
        """
        old = int(resume.get("world_size") or 1)
        ranks = resume.get("ranks") or [resume]
        batches = self._resume_batches(resume, batch_size)
        if old == self.runtime.world_size:
            return batches, ranks[self.runtime.rank]
        empty = {"loss_sum": torch.zeros(()), "count": 0, "skipped": 0, "metrics": {}}
        if not self.runtime.is_main:
            return batches, empty
        merged = {
            "loss_sum": sum((r["loss_sum"].double() for r in ranks), torch.zeros((),
                            dtype=torch.float64)).float(),
            "count": sum(int(r["count"]) for r in ranks),
            "skipped": sum(int(r.get("skipped", 0)) for r in ranks),
            "metrics": {name: merge_states(m, [r["metrics"][name] for r in ranks
                                               if name in r["metrics"]])
                        for name, m in self.metrics.items()},
        }
        return batches, merged

    def _resume_batches(self, resume: dict[str, Any], batch_size: int) -> int:
        """Batches of the running epoch this rank counts as done after a step checkpoint
        (its share of the samples seen when the world size changed)."""
        old = int(resume.get("world_size") or 1)
        if old == self.runtime.world_size:
            return int(resume["batches"])
        return int(resume["samples"]) * old // self.runtime.world_size // batch_size

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = first_bad
        if self.runtime.distributed:  # the first bad step of any rank
            big = torch.iinfo(torch.int64).max
            t = torch.where(first_bad < 0, torch.full_like(first_bad, big), first_bad)
            t = self.runtime.all_reduce(t.reshape(1).clone(), "min")[0]
            bad = torch.where(t == big, torch.full_like(t, -1), t)
        bad = int(bad)
        if bad >= 0:
            raise NonFiniteLossError(
                f"non-finite training loss (NaN or inf) at epoch {epoch}, step {bad}; the "
                "last good checkpoint is kept. Lower the learning rate, clip gradients "
                "(trainer.params.grad_clip_norm), check the data, or set "
                "trainer.on_nonfinite_loss: skip")

    @torch.inference_mode()
    def evaluate(self, split: str, epoch: int, metrics: dict[str, Metric] | None = None,
                 reports: bool = True) -> dict[str, float]:
        """Evaluate the model on ``split``; write non-scalar metric reports and figures.

        Under several ranks each rank evaluates its block of the split with the unwrapped
        model, then the loss and metric states are reduced over the ranks; reports are
        written by rank 0.

        Returns:
            ``{"loss": ..., metric: value}`` for every scalar metric.

        With ``trainer.ema`` the EMA of the weights is evaluated (:attr:`eval_model`).

        Raises:
            EvaluationStopped: A stop was requested (SIGINT/SIGTERM/SIGUSR1): raised after
                the current batch (under several ranks, at the next multiple of
                ``log_every_n_steps`` batches that every rank runs), on every rank.
        """
        loader = self.data.loaders[split]
        metrics = self.metrics if metrics is None else metrics
        model = self.eval_model
        model.eval()
        for m in metrics.values():
            m.reset()
        loss_sum = torch.zeros((), device=self.device)
        count, batches = 0, 0
        common = len(loader)  # batches that every rank runs (the blocks may differ by one)
        if self.runtime.distributed:
            t = torch.tensor([common], dtype=torch.int64, device=self.device)
            common = int(self.runtime.all_reduce(t, "min")[0])
        progress = self._progress(len(loader), f"epoch {epoch}/{self.cfg.epochs} {split}")
        non_blocking = self.device.type == "cuda"
        observers = [m for m in metrics.values() if getattr(m, "needs_inputs", False)]
        try:
            for batch in loader:
                batches += 1
                if isinstance(batch, dict):
                    batch.pop(SKIPPED_KEY, None)
                if not isinstance(batch, dict) or self.task.input_key in batch:
                    # (a batch whose samples were all unreadable and skipped has no input)
                    batch = self.task.to_device(batch, self.device, non_blocking)
                    with self._autocast():
                        outputs, targets, loss = self._forward(batch, model)
                    n = _batch_size(batch, self.task)
                    count += n
                    loss_sum += loss.float() * n
                    for m in observers:
                        m.observe_inputs(batch[self.task.input_key])
                    for m in metrics.values():
                        m.update(outputs, targets)
                if progress is not None:
                    progress.advance()
                stop = self._stop_agreed(batches, common)
                if stop:
                    raise EvaluationStopped(
                        f"during the {split} pass of epoch {epoch}, after {batches} of "
                        f"{len(loader)} batches", stop)
        finally:
            if progress is not None:
                progress.stop()
        total, count, _ = self._reduce_sums(loss_sum, count)
        self._sync_metrics(metrics)
        out = {"loss": total / max(count, 1)}
        for name, m in metrics.items():
            v = m.compute()
            if v is not None:
                out[name] = float(v)
        if reports:
            self._write_reports(split, epoch, metrics)
        return out

    def _write_reports(self, split: str, epoch: int, metrics: dict[str, Metric]) -> None:
        """Hand a snapshot of the metrics to the report thread (rank 0; see
        :mod:`thelper.train.reports`): the training goes on while figures render."""
        if not self.session.is_main:
            return
        wanted = {k: m for k, m in metrics.items() if type(m).report is not Metric.report}
        if not wanted:
            return
        snap = snapshot(wanted)
        self.reports.submit(split, lambda: self._render_reports(split, epoch, snap))

    def _keep_reports(self, split: str, epoch: int, metrics: dict[str, Metric]) -> None:
        """Keep a snapshot of ``split``'s metrics for the reports :meth:`fit` renders when the
        training ends (rank 0)."""
        if not self.session.is_main:
            return
        wanted = {k: m for k, m in metrics.items() if type(m).report is not Metric.report}
        if wanted:
            self._kept_reports[split] = (epoch, snapshot(wanted))

    def _render_reports(self, split: str, epoch: int, metrics: dict[str, Metric]) -> None:
        for name, m in metrics.items():
            m.report_context = {"split": split, "epoch": epoch}  # (a snapshot's attribute)
            report = m.report(self.session.split_dir(split), name)
            if report is None:
                continue
            if report.figure is not None:
                self.session.plugins.log_figure(self.session, split, epoch, name, report.figure)
                if "matplotlib.pyplot" in sys.modules:  # a plugin's metric used pyplot
                    sys.modules["matplotlib.pyplot"].close(report.figure)

    # ------------------------------------------------------------- checkpoints
    def state_dict(self, epoch: int, in_epoch: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything needed to resume, as plain data.

        Args:
            epoch: Last finished epoch (1-based; 0 before the first one ends).
            in_epoch: For mid-epoch checkpoints: the running epoch, batches done, sampler
                position, the world size, and each rank's running loss and metric states
                (``ranks``; rank 0's also at the top level).
        """
        s = self.session
        return {
            "format": FORMAT,
            "version": _version(),
            "name": s.name,
            "epoch": epoch,
            "step": self.step,
            "model": self.model.state_dict(),
            "model_type": s.cfg.model.type,
            "model_params": s.cfg.model.params.model_dump(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "world_size": self.runtime.world_size,
            "monitor": {"metric": self.monitor, "goal": self.goal, "split": self.monitor_split,
                        "best": self.best, "best_epoch": self.best_epoch},
            "early_stopping": {"bad_epochs": self.bad_epochs},
            "top_k": [dict(e) for e in self.top_k],
            "ema": self._ema_state(),
            "elapsed_time": self.elapsed(),
            "in_epoch": in_epoch,
            "input_shape": self.input_shape,
            "skipped_samples": self.skipped_samples,
            "history": s.history,
            "rng": get_rng_state(),
            "config": s.config,
            "task": self.task.to_dict(),
            "seeds": dict(s.seeds),
            "source": source_info(),
            "torch": str(torch.__version__),
        }

    def _ema_state(self) -> dict[str, Any] | None:
        """The checkpoint's ``ema``: the average's ``model`` state dict (the keys of
        ``model``), ``n_averaged`` (updates so far), ``decay`` and ``every_n_steps``."""
        if self.ema is None:
            return None
        return {"model": self.ema.module.state_dict(), "n_averaged": int(self.ema.n_averaged),
                "decay": self.cfg.ema.decay, "every_n_steps": self.cfg.ema.every_n_steps}

    def _load_ema(self, state: dict[str, Any] | None) -> None:
        """Restore the EMA from a checkpoint's ``ema``; without one (EMA turned on for a
        resume), start it from the model's weights."""
        if self.ema is None:
            return
        if not state or "model" not in state:
            self.session.logger.warning(
                "the checkpoint has no EMA of the weights (trainer.ema was off): the "
                "average starts from its weights")
            self.ema.module.load_state_dict(self.model.state_dict())
            self.ema.n_averaged.zero_()
            return
        self.ema.module.load_state_dict(state["model"])
        self.ema.n_averaged.fill_(int(state.get("n_averaged", 0)))

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore model, EMA, optimizer, scheduler, scaler, monitor, top-k list, training
        time and counters from a checkpoint (of any world size)."""
        self.model.load_state_dict(ckpt["model"])
        self._load_ema(ckpt.get("ema"))
        self._elapsed_before = float(ckpt.get("elapsed_time") or 0.0)
        self.top_k = [
            {"file": e["file"], "epoch": int(e["epoch"]), "value": float(e["value"])}
            for e in ckpt.get("top_k") or []
            if isinstance(e, dict) and isinstance(e.get("file"), str)
            and TOP_K_PATTERN.match(e["file"]) and e.get("epoch") is not None
            and e.get("value") is not None]
        if ckpt.get("optimizer") is not None:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scheduler is not None and ckpt.get("scheduler") is not None:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        mon = ckpt.get("monitor") or {}
        self.best, self.best_epoch = mon.get("best"), mon.get("best_epoch")
        self.bad_epochs = int((ckpt.get("early_stopping") or {}).get("bad_epochs", 0))
        self.step = int(ckpt.get("step", 0))
        self.epoch = int(ckpt.get("epoch", 0))
        self.skipped_samples = int(ckpt.get("skipped_samples", 0))
        self.input_shape = ckpt.get("input_shape")
        self._resume_in_epoch = ckpt.get("in_epoch")
        self._resume_rng = ckpt.get("rng") if self._resume_in_epoch else None
        old = int(ckpt.get("world_size") or 1)
        if old != self.runtime.world_size and self.runtime.is_main:
            self.session.logger.warning(
                "this checkpoint was written by %d rank(s) and resumes on %d: the sample "
                "order (which samples each step sees) differs from the original run", old,
                self.runtime.world_size)

    def _rank(self, entry: dict[str, Any]) -> tuple[float, int]:
        """Sort key of a top-k entry: best value first, then the earlier epoch."""
        value = float(entry["value"])
        return (value if self.goal == "min" else -value, int(entry["epoch"]))

    def _update_top_k(self, epoch: int, value: float | None) -> list[str]:
        """Enter ``epoch`` (monitored ``value``) in the top-k list if it ranks among the
        ``save_top_k`` best (a tie keeps the earlier epoch; NaN never enters).

        Returns:
            The file names that left the list (to delete once the epoch is saved).
        """
        k = self.cfg.save_top_k
        if k is None:
            return []
        kept = [e for e in self.top_k if e["epoch"] < epoch]
        dropped = [e["file"] for e in self.top_k if e["epoch"] >= epoch]  # stale: redone
        if value is not None and math.isfinite(value):
            kept.append({"file": top_k_name(epoch, self.monitor, value), "epoch": epoch,
                         "value": float(value)})
        kept.sort(key=self._rank)
        dropped += [e["file"] for e in kept[k:]]
        self.top_k = kept[:k]
        self._publish_top_k()
        names = {e["file"] for e in self.top_k}
        return [name for name in dropped if name not in names]

    def _publish_top_k(self) -> None:
        """Hand the top-k list to the trackers (``session.extras["top_k"]``: run.json)."""
        if self.cfg.save_top_k is not None:
            self.session.extras["top_k"] = [
                {"path": f"checkpoints/{e['file']}", "epoch": e["epoch"],
                 "metric": self.monitor, "value": e["value"]} for e in self.top_k]

    def _reconcile_top_k(self) -> None:
        """Make ``checkpoints/`` hold exactly the top-k files of the list (at the start of
        the loop, after a resume): delete the files of a run killed between writing a
        top-k checkpoint and ``ckpt.latest.pt`` (or before deleting the file that left the
        list), and the worst entries when ``save_top_k`` was lowered. Rank 0 decides; the
        list is handed to every rank."""
        k = self.cfg.save_top_k
        if k is None:
            return
        s = self.session
        if s.is_main:
            listed = sorted(self.top_k, key=self._rank)
            names = {e["file"] for e in listed[:k]}
            folder = s.checkpoints_dir
            extra = [e["file"] for e in listed[k:]] + sorted(
                p.name for p in folder.iterdir()
                if TOP_K_PATTERN.match(p.name) and p.name not in names)
            for name in extra:
                self._remove_checkpoint(name)
            kept = [e for e in listed[:k] if (folder / e["file"]).is_file()]
            if len(kept) < len(listed[:k]):
                s.logger.warning("top-k checkpoint(s) missing, no longer listed: %s",
                                 ", ".join(e["file"] for e in listed[:k] if e not in kept))
            if extra:
                s.logger.info("removed %d checkpoint(s) that are not among the top %d: %s",
                              len(extra), k, ", ".join(extra))
            self.top_k = kept
        self.top_k = self.runtime.broadcast_object(self.top_k)
        self._publish_top_k()

    def _remove_checkpoint(self, name: str) -> None:
        """Delete ``checkpoints/<name>``, a top-k file name, inside the session directory
        only: the ``checkpoints`` folder is checked by :func:`thelper.session.safe_path`
        (inside the session, not a link), and a link named so is removed itself, never its
        target. Failures are logged, never raised."""
        from thelper.exceptions import SessionError
        from thelper.session import safe_path

        if not TOP_K_PATTERN.match(name):
            return
        log = self.session.logger
        try:
            folder = safe_path(self.session.session_dir, "checkpoints")
            os.unlink(folder / name)  # unlink never follows a link
        except FileNotFoundError:
            pass
        except (OSError, SessionError) as exc:
            log.warning("cannot delete checkpoint %s: %s", name, exc)

    def _save(self, epoch: int, is_best: bool, value: float | None = None) -> None:
        """Epoch-end checkpoints: ``ckpt.<epoch>.pt`` every ``save_freq`` epochs (or the
        top-k file of the epoch with ``save_top_k``), ``ckpt.best.pt`` on a best epoch,
        then ``ckpt.latest.pt``; then the top-k files that left the list and the epoch's
        step checkpoints are deleted.

        Args:
            epoch: The finished epoch.
            is_best: Whether it is the best so far.
            value: Its monitored value (for the top-k list).
        """
        s = self.session
        dropped = self._update_top_k(epoch, value)  # every rank: the same list
        if not s.is_main:
            return
        state = self.state_dict(epoch)
        paths = []
        if self.cfg.save_top_k is None:
            if epoch % self.cfg.save_freq == 0 or epoch == self.cfg.epochs:
                paths.append(s.checkpoints_dir / f"ckpt.{epoch:04d}.pt")
        else:
            paths += [s.checkpoints_dir / e["file"] for e in self.top_k if e["epoch"] == epoch]
        if is_best:
            paths.append(s.checkpoints_dir / "ckpt.best.pt")
        paths.append(s.checkpoints_dir / "ckpt.latest.pt")  # last: marks the epoch complete
        for p in paths:
            save_checkpoint(state, p)
            s.plugins.checkpoint_saved(s, p, epoch, is_best)
        for name in dropped:  # after ckpt.latest.pt, whose list no longer has them
            self._remove_checkpoint(name)
        for old in self._step_ckpts:  # the epoch checkpoint supersedes its step checkpoints
            old.unlink(missing_ok=True)
        self._step_ckpts = []

    def _save_step(self, epoch: int, batches: int, batch_size: int,
                   local: dict[str, Any]) -> None:
        """Mid-epoch checkpoint ``ckpt.step.<step>.pt``, also linked as ``ckpt.latest.pt``.

        Args:
            epoch: The running epoch.
            batches: Batches this rank has done in it.
            batch_size: This rank's batch size (the sampler position is ``batches`` times
                it).
            local: This rank's running ``loss_sum``, ``count``, ``skipped`` and ``metrics``
                states (CPU); gathered from every rank to rank 0, which writes the file.
        """
        s = self.session
        ranks = self.runtime.all_gather_object(local)
        if not s.is_main:
            return
        in_epoch = {"epoch": epoch, "batches": batches, "samples": batches * batch_size,
                    "world_size": self.runtime.world_size, **ranks[0],
                    "ranks": ranks if self.runtime.distributed else None}
        self._write_step(epoch, self.state_dict(epoch - 1, in_epoch))

    def _write_step(self, epoch: int, state: dict[str, Any]) -> None:
        """Write ``ckpt.step.<step>.pt`` (rank 0), link it as ``ckpt.latest.pt``, rotate."""
        s = self.session
        path = s.checkpoints_dir / f"ckpt.step.{self.step:08d}.pt"
        save_checkpoint(state, path)
        link_checkpoint(path, s.checkpoints_dir / "ckpt.latest.pt")
        if path in self._step_ckpts:  # rewritten (a stop right after a cadence checkpoint)
            self._step_ckpts.remove(path)
        self._step_ckpts.append(path)
        while len(self._step_ckpts) > self.cfg.keep_step_checkpoints:
            self._step_ckpts.pop(0).unlink(missing_ok=True)
        s.plugins.checkpoint_saved(s, path, epoch - 1, False)

    def _save_trained(self, epoch: int, train: dict[str, float], rng: dict[str, Any]) -> None:
        """Step checkpoint of an epoch whose training is done and whose validation was
        stopped: ``in_epoch.trained`` holds the epoch's training values (reduced over the
        ranks) and ``rng`` the RNG state the validation started with, so that a resume
        validates the epoch again, exactly. Every rank returns once the file exists."""
        s = self.session
        if s.is_main:
            in_epoch = {"epoch": epoch, "trained": dict(train),
                        "world_size": self.runtime.world_size}
            state = self.state_dict(epoch - 1, in_epoch)
            state["rng"] = rng
            self._write_step(epoch, state)
        self.runtime.barrier()

    # ---------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train from ``session.start_epoch`` to ``trainer.epochs`` (or an early stop).

        Sets :attr:`stopped` when the training ends (``completed`` or ``early_stopping``).
        Whatever ends it (an interrupt too), the training curves are rendered to
        ``output/<name>/curves.png`` and every pending report is written before it returns.

        Raises:
            StopRequested: A signal, or ``trainer.max_time`` (:class:`TimeLimitReached`,
                at once when a resume finds the time used up), after a checkpoint.
        """
        self._live = self._run_line()
        try:
            self._fit()
        finally:
            if self._live is not None:
                self._live.stop()
                self._live = None
            s = self.session
            for split, (epoch, snap) in self._kept_reports.items():
                self.reports.submit(split, lambda sp=split, e=epoch, m=snap:
                                    self._render_reports(sp, e, m))
            self._kept_reports = {}
            if s.is_main and s.history:
                history = {k: list(v) for k, v in s.history.items()}
                self.reports.submit("curves", lambda: self._render_curves(history))
            self.reports.flush()

    def _render_curves(self, history: dict[str, list[dict[str, Any]]]) -> None:
        s = self.session
        fig = render_curves(s.output_dir / "curves.png", history, self.monitor,
                            f"{s.name}: training curves")
        s.plugins.log_figure(s, self.monitor_split, self.epoch, "curves", fig)

    def _fit(self) -> None:
        s = self.session
        log = s.logger
        es = self.cfg.early_stopping
        self._started = clock()
        self._reconcile_top_k()
        if es is not None and self.bad_epochs >= es.patience and self._resume_in_epoch is None:
            log.info("early stopping already triggered (%s did not improve for %d epochs); "
                     "raise trainer.early_stopping.patience to train further", self.monitor,
                     self.bad_epochs)
            self.stopped = {"reason": "early_stopping", "epoch": self.epoch, "step": self.step}
            return
        if self.max_time is not None and self._elapsed_before >= self.max_time:
            running = (self._resume_in_epoch or {}).get("epoch", self.epoch)
            raise self._stop_error("time_limit", "before this resume", running)
        self.stopped = None
        for epoch in range(s.start_epoch, self.cfg.epochs + 1):
            t0 = time.perf_counter()
            if apply_unfreeze(self.model, s.cfg.model.unfreeze, epoch, log) \
                    and self.runtime.distributed:  # DDP reduces only what was trainable
                self.train_model = self._wrap(self.model, self.find_unused_parameters)
            resume = self._resume_in_epoch
            trained = (resume or {}).get("trained") if (resume or {}).get("epoch") == epoch \
                else None
            if trained is not None:  # stopped during this epoch's validation: validate again
                self._resume_in_epoch = None
                self._seed_epoch(epoch)
                if self._resume_rng is not None:  # the RNG state the validation started with
                    set_rng_state(self._resume_rng)
                log.info("resuming epoch %d after its training (step %d): validating it",
                         epoch, self.step)
            elif resume is not None and resume.get("epoch") == epoch:
                bs = self.data.loaders["train"].batch_size
                self._seed_epoch(epoch, self._resume_batches(resume, bs) * bs)
                if self._resume_rng is not None:  # dropout etc. continue where they were
                    set_rng_state(self._resume_rng)
                log.info("resuming epoch %d after %d batches (step %d)", epoch,
                         self._resume_batches(resume, bs), self.step)
            else:
                self._seed_epoch(epoch)
            metrics = {"train": dict(trained) if trained is not None
                       else self.train_epoch(epoch)}
            if "valid" in self.data.loaders:
                rng = get_rng_state()  # for a checkpoint if the validation is stopped
                try:
                    metrics["valid"] = self.evaluate("valid", epoch, reports=False)
                except EvaluationStopped as exc:
                    self._save_trained(epoch, metrics["train"], rng)
                    raise self._stop_error(exc.reason, str(exc), epoch) from None
            value = metrics[self.monitor_split].get(self.monitor)
            is_best = self._improved(value)
            if is_best:
                self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            else:
                self.bad_epochs += 1
            if self.scheduler is not None and self.scheduler_interval == "epoch":
                if self.step_metric is not None:
                    sv = metrics[self.monitor_split].get(self.step_metric)
                    if sv is None:
                        raise ConfigError(f"scheduler step metric {self.step_metric!r} was "
                                          f"not computed on the {self.monitor_split} split")
                    self.scheduler.step(sv)
                else:
                    self.scheduler.step()
            if "valid" in metrics:
                # the validation reports (confusion matrix, ...) of the last epoch are
                # rendered when the training ends, however it ends: a snapshot of the
                # metric states (counts) costs little, a figure per epoch would cost more
                # than a small model's training (the test reports are the best model's)
                self._keep_reports("valid", epoch, self.metrics)
            for split, values in metrics.items():
                s.history.setdefault(split, []).append({"epoch": epoch, **values})
            self.epoch = epoch
            self._save(epoch, is_best, value)
            log.info("epoch %d/%d  %s  (%.1fs)%s", epoch, self.cfg.epochs,
                     "  |  ".join(f"{sp} " + " ".join(f"{k} {v:.4g}" for k, v in vals.items())
                                  for sp, vals in metrics.items()),
                     time.perf_counter() - t0, "  *best*" if is_best else "")
            if s.is_main:
                write_curves_csv(s.output_dir / "curves.csv", s.history)
            s.plugins.epoch_end(s, epoch, metrics)
            if self._live is not None:
                run = self._live.task_ids[0]
                self._live.update(run, completed=epoch, description=f"run {s.name}: epoch "
                                  f"{min(epoch + 1, self.cfg.epochs)}/{self.cfg.epochs}")
            early = es is not None and self.bad_epochs >= es.patience
            # the time limit stops before another epoch, not after the last one
            stop = self._stop_everywhere(timed=epoch < self.cfg.epochs and not early)
            if stop:
                raise self._stop_error(stop, f"after epoch {epoch}", epoch)
            if early:
                log.info("early stopping: %s did not improve by more than %g for %d epochs "
                         "(best %.4g at epoch %s)", self.monitor, es.min_delta, es.patience,
                         self.best if self.best is not None else float("nan"),
                         self.best_epoch)
                self.stopped = {"reason": "early_stopping", "epoch": epoch, "step": self.step}
                break
        if self.stopped is None:
            self.stopped = {"reason": "completed", "epoch": self.epoch, "step": self.step}

    def test(self, best_checkpoint: Path | None = None) -> dict[str, float]:
        """Evaluate the best model (``ckpt.best.pt`` if present) on the test split.

        Falls back to the validation split when there is no test split. Uses both
        ``metrics`` and ``test_metrics``; with ``trainer.ema``, the checkpoint's EMA of the
        weights. Stores the result in ``session.test_metrics``, and what it evaluates
        (``split``, ``epoch``, ``checkpoint``) in ``last_evaluation``.

        Raises:
            StopRequested: A stop was requested during the evaluation (SIGINT/SIGTERM, or
                SIGUSR1: :class:`RequeueRequested`).
        """
        from thelper.checkpoint import load_checkpoint

        s = self.session
        split = "test" if "test" in self.data.loaders else (
            "valid" if "valid" in self.data.loaders else None)
        if split is None:
            s.logger.info("no test or validation split: skipping the final evaluation")
            return {}
        epoch = self.epoch
        path = best_checkpoint or s.checkpoints_dir / "ckpt.best.pt"
        self.runtime.barrier()  # rank 0 has written the checkpoint
        if path.is_file():
            ckpt = load_checkpoint(path, map_location=self.device)
            self.model.load_state_dict(ckpt["model"])
            self._load_ema(ckpt.get("ema"))
            epoch = int(ckpt.get("epoch", epoch))
        metrics = {**self.metrics, **self._build_metrics(self.test_metric_specs)}
        self.last_evaluation = {"split": split, "epoch": epoch,
                                "checkpoint": str(path) if path.is_file() else None}
        try:
            values = self.evaluate(split, epoch, metrics)
        except EvaluationStopped as exc:  # nothing to save: a resume evaluates again
            raise self._stop_error(exc.reason, str(exc), self.epoch) from None
        finally:
            self.reports.flush()  # the reports are on disk before anyone reads them
        s.test_metrics = values
        s.logger.info("%s of the best model (epoch %s): %s", split, epoch,
                      " ".join(f"{k} {v:.4g}" for k, v in values.items()))
        s.plugins.evaluation_end(s, split, epoch, values)
        return values


#: The context of a backward that synchronises gradients as usual (one reusable instance:
#: no allocation per step).
_SYNC = contextlib.nullcontext()

#: Logged steps (``log_every_n_steps``) whose losses are read back from the device and handed
#: to ``thelper_log_scalars`` at once during an epoch: one host synchronisation per this many
#: logged steps (1,000 steps at the default of every 20th), so that trackers show a long
#: epoch as it goes; the rest at the epoch's end or at a step checkpoint.
_STEP_FLUSH = 50

#: Training steps whose losses are checked for NaN/inf at once (see :func:`_first_nonfinite`).
_NONFINITE_CHUNK = 256


def _first_nonfinite(first_bad: torch.Tensor, losses: list[torch.Tensor], step: int
                     ) -> torch.Tensor:
    """Fold the losses of the last ``len(losses)`` steps into ``first_bad`` and clear them.

    Args:
        first_bad: 0-d int64 tensor, the first step with a non-finite loss so far, or -1.
        losses: One-element detached losses of consecutive steps
            ``step - len(losses) + 1 .. step``.
        step: The step of the last loss.

    Returns:
        The updated ``first_bad`` (same device; no host synchronisation).
    """
    if not losses:
        return first_bad
    bad = ~torch.isfinite(torch.stack(losses).reshape(-1))  # a loss may be (1,), not ()
    losses.clear()
    steps = torch.arange(step - bad.numel() + 1, step + 1, device=first_bad.device)
    # the first bad step of the chunk, or a value above every step when there is none
    first = torch.where(bad, steps, torch.full_like(steps, step + 1)).min()
    return torch.where((first_bad < 0) & (first <= step), first, first_bad)


def _to(value: Any, device: Any) -> Any:
    """Move tensors in nested dicts/lists to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to(v, device) for v in value)
    return value


def _shard_samples(loader: Any) -> int | None:
    """Samples this rank's training loader yields in a whole epoch, if its sampler says."""
    shard_size = getattr(loader.sampler, "shard_size", None)
    return int(shard_size()) if callable(shard_size) else None


def _batch_size(batch: dict[str, Any], task: Any) -> int:
    x = batch[task.input_key]
    return int(x.shape[0]) if isinstance(x, torch.Tensor) else len(x)


def _version() -> str:
    from thelper import __version__

    return __version__


def _new_progress() -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                    console=console, transient=True)


class _Bar:
    """One pass's bar: a task of the run's display (removed when done) or its own display."""

    def __init__(self, progress: Any, task: Any, own: bool) -> None:
        self.progress, self.task, self.own = progress, task, own

    def advance(self, **fields: Any) -> None:
        self.progress.update(self.task, advance=1, **fields)

    def stop(self) -> None:
        if self.own:
            self.progress.stop()
        else:
            self.progress.remove_task(self.task)
