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
"""

from __future__ import annotations

import contextlib
import math
import random
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
from thelper.logs import console, is_interactive
from thelper.metrics import Metric, merge_states

__all__ = ["Trainer", "resolve_device"]


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
        model: The model (never wrapped: what checkpoints and evaluation use).
        train_model: What the training forward calls: ``model``, wrapped in
            ``DistributedDataParallel`` under several ranks and compiled with
            ``trainer.compile``.
        runtime: The process's rank, world size and device.
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
                                        opt_cfg.optimizer.params, params=self.model.parameters())
        self.monitor = self.cfg.monitor
        self.goal = self._goal(self.monitor)
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

    def _stop_requested(self) -> bool:
        return bool(getattr(self.session, "stop_requested", None))

    def _stop_everywhere(self) -> bool:
        """A stop requested on any rank (one small collective under several ranks)."""
        return self.runtime.any(self._stop_requested())

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
    def _progress(self, total: int, label: str) -> Any:
        if not (self.cfg.progress and is_interactive()):
            return None
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}"), console=console, transient=True)
        progress.start()
        progress.add_task(label, total=total, info="")
        return progress

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training loader; returns ``loss``, ``lr`` and the metrics.

        Each batch runs :meth:`forward_step` and :meth:`backward_step`; every
        ``accumulate_grad_batches`` batches (and at the epoch's last batch)
        :meth:`optimizer_step` follows and the step counter advances. Writes a step
        checkpoint every ``trainer.checkpoint_every_n_steps`` optimizer steps and when a stop
        is requested (SIGINT/SIGTERM), then raises ``KeyboardInterrupt``. The returned
        values are reduced over every rank.

        Raises:
            ThelperError: Non-finite loss with ``on_nonfinite_loss: stop`` (names epoch and
                step; no checkpoint is written after it).
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
        skip_nonfinite = self.cfg.on_nonfinite_loss == "skip"
        distributed = self.runtime.distributed
        accumulate = self.accumulate
        last = batches + len(loader)  # batches of this rank's epoch
        shard = _shard_samples(loader)  # samples of this rank's epoch (None: unknown)
        window: torch.Tensor | None = None  # summed losses of the accumulation window
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
                if progress is not None:
                    info = {}
                    if batches % self.log_every_n_steps == 0:
                        info = {"info": f"loss {float(loss_sum) / max(count, 1):.4f}"}
                    progress.update(progress.task_ids[0], advance=1, **info)
                if not boundary:
                    continue
                self.optimizer_step()
                self.step += 1
                unchecked.append(window)
                window = None
                if len(unchecked) >= _NONFINITE_CHUNK:
                    first_bad = _first_nonfinite(first_bad, unchecked, self.step)
                if distributed:  # agreed every log_every_n_steps steps: ranks stop together
                    stop = self.step % self.log_every_n_steps == 0 and self._stop_everywhere()
                else:
                    stop = self._stop_requested()
                if (every and self.step % every == 0) or stop:
                    first_bad = _first_nonfinite(first_bad, unchecked, self.step)
                    self._check_finite(first_bad, epoch)
                    self._save_step(epoch, batches, loader.batch_size, {
                        "loss_sum": loss_sum.detach().cpu(), "count": count,
                        "skipped": skipped,
                        "metrics": {k: _to(m.state_dict(), "cpu")
                                    for k, m in self.metrics.items()},
                    })
                    if stop:
                        raise KeyboardInterrupt(f"stop requested at step {self.step}")
        finally:
            if progress is not None:
                progress.stop()
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
        """
        loader = self.data.loaders[split]
        metrics = self.metrics if metrics is None else metrics
        self.model.eval()
        for m in metrics.values():
            m.reset()
        loss_sum = torch.zeros((), device=self.device)
        count = 0
        progress = self._progress(len(loader), f"epoch {epoch}/{self.cfg.epochs} {split}")
        non_blocking = self.device.type == "cuda"
        try:
            for batch in loader:
                if isinstance(batch, dict):
                    batch.pop(SKIPPED_KEY, None)
                    if self.task.input_key not in batch:
                        continue
                batch = self.task.to_device(batch, self.device, non_blocking)
                with self._autocast():
                    outputs, targets, loss = self._forward(batch)
                n = _batch_size(batch, self.task)
                count += n
                loss_sum += loss.float() * n
                for m in metrics.values():
                    m.update(outputs, targets)
                if progress is not None:
                    progress.update(progress.task_ids[0], advance=1)
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
        if not self.session.is_main:
            return
        for name, m in metrics.items():
            if type(m).report is Metric.report:
                continue
            report = m.report(self.session.split_dir(split), name)
            if report is None:
                continue
            if report.figure is not None:
                self.session.plugins.log_figure(self.session, split, epoch, name, report.figure)
                import matplotlib.pyplot as plt

                plt.close(report.figure)

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

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore model, optimizer, scheduler, scaler, monitor and counters from a
        checkpoint (of any world size)."""
        self.model.load_state_dict(ckpt["model"])
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

    def _save(self, epoch: int, is_best: bool) -> None:
        s = self.session
        if not s.is_main:
            return
        state = self.state_dict(epoch)
        paths = []
        if epoch % self.cfg.save_freq == 0 or epoch == self.cfg.epochs:
            paths.append(s.checkpoints_dir / f"ckpt.{epoch:04d}.pt")
        if is_best:
            paths.append(s.checkpoints_dir / "ckpt.best.pt")
        paths.append(s.checkpoints_dir / "ckpt.latest.pt")  # last: marks the epoch complete
        for p in paths:
            save_checkpoint(state, p)
            s.plugins.checkpoint_saved(s, p, epoch, is_best)
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
        path = s.checkpoints_dir / f"ckpt.step.{self.step:08d}.pt"
        save_checkpoint(self.state_dict(epoch - 1, in_epoch), path)
        link_checkpoint(path, s.checkpoints_dir / "ckpt.latest.pt")
        self._step_ckpts.append(path)
        while len(self._step_ckpts) > self.cfg.keep_step_checkpoints:
            self._step_ckpts.pop(0).unlink(missing_ok=True)
        s.plugins.checkpoint_saved(s, path, epoch - 1, False)

    # ---------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train from ``session.start_epoch`` to ``trainer.epochs`` (or an early stop)."""
        s = self.session
        log = s.logger
        es = self.cfg.early_stopping
        if es is not None and self.bad_epochs >= es.patience and self._resume_in_epoch is None:
            log.info("early stopping already triggered (%s did not improve for %d epochs); "
                     "raise trainer.early_stopping.patience to train further", self.monitor,
                     self.bad_epochs)
            return
        for epoch in range(s.start_epoch, self.cfg.epochs + 1):
            t0 = time.perf_counter()
            resume = self._resume_in_epoch
            if resume is not None and resume.get("epoch") == epoch:
                bs = self.data.loaders["train"].batch_size
                self._seed_epoch(epoch, self._resume_batches(resume, bs) * bs)
                if self._resume_rng is not None:  # dropout etc. continue where they were
                    set_rng_state(self._resume_rng)
                log.info("resuming epoch %d after %d batches (step %d)", epoch,
                         self._resume_batches(resume, bs), self.step)
            else:
                self._seed_epoch(epoch)
            metrics = {"train": self.train_epoch(epoch)}
            if "valid" in self.data.loaders:
                metrics["valid"] = self.evaluate("valid", epoch, reports=False)
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
            if "valid" in metrics and (is_best or epoch == self.cfg.epochs):
                # reports (confusion matrix, ...) of the best and the last epoch only:
                # plotting every epoch would cost more than a small model's training
                self._write_reports("valid", epoch, self.metrics)
            for split, values in metrics.items():
                s.history.setdefault(split, []).append({"epoch": epoch, **values})
            self.epoch = epoch
            self._save(epoch, is_best)
            log.info("epoch %d/%d  %s  (%.1fs)%s", epoch, self.cfg.epochs,
                     "  |  ".join(f"{sp} " + " ".join(f"{k} {v:.4g}" for k, v in vals.items())
                                  for sp, vals in metrics.items()),
                     time.perf_counter() - t0, "  *best*" if is_best else "")
            s.plugins.epoch_end(s, epoch, metrics)
            if self._stop_everywhere():
                raise KeyboardInterrupt(f"stop requested after epoch {epoch}")
            if es is not None and self.bad_epochs >= es.patience:
                log.info("early stopping: %s did not improve for %d epochs (best %.4g at "
                         "epoch %s)", self.monitor, es.patience, self.best or float("nan"),
                         self.best_epoch)
                break

    def test(self, best_checkpoint: Path | None = None) -> dict[str, float]:
        """Evaluate the best model (``ckpt.best.pt`` if present) on the test split.

        Falls back to the validation split when there is no test split. Uses both
        ``metrics`` and ``test_metrics``. Stores the result in ``session.test_metrics``.
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
            epoch = int(ckpt.get("epoch", epoch))
        metrics = {**self.metrics, **self._build_metrics(self.test_metric_specs)}
        values = self.evaluate(split, epoch, metrics)
        s.test_metrics = values
        s.logger.info("%s of the best model (epoch %s): %s", split, epoch,
                      " ".join(f"{k} {v:.4g}" for k, v in values.items()))
        s.plugins.evaluation_end(s, split, epoch, values)
        return values


#: The context of a backward that synchronises gradients as usual (one reusable instance:
#: no allocation per step).
_SYNC = contextlib.nullcontext()

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
