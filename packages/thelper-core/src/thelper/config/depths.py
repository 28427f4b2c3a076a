"""Deeper validation: ``thelper config validate --build`` and ``--dry-run``.

Both run on CPU in a temporary session directory that is removed afterwards, through the
same code as ``thelper run``: :func:`thelper.build.build_data`,
:func:`thelper.build.build_model` and the registered trainer.

``--build`` first checks ``trainer.device`` against this machine (``cuda:7`` with fewer
GPUs, ``mps`` without Metal: :func:`thelper.runtime.check_device`), then instantiates every
component (datasets, splits, loaders, transforms, model, loss, optimizer, scheduler,
metrics, test metrics), loads one training batch and checks the model's output against the
task (e.g. ``(N, C)`` logits for ``C`` classes) and the loss.

``--dry-run`` also runs one batch of each split through the trainer: training step
(forward, loss, backward, optimizer step, metric update), validation, the epoch's scheduler
step and checkpoint, the final test of the best checkpoint with the test metrics, and a
checkpoint round trip with ``torch.load(path, weights_only=True)``.

Lifecycle plugins (TensorBoard, run records) are not called: nothing outside the temporary
directory is written.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thelper.config.source import ConfigDocument, Loc
from thelper.exceptions import ConfigIssue

__all__ = ["DepthReport", "Step", "run_depth"]


@dataclass
class Step:
    """One stage of a deep check: what was built or run, and how long it took."""

    name: str
    detail: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.name, "detail": self.detail, "seconds": round(self.seconds, 3)}


@dataclass
class DepthReport:
    """Outcome of :func:`run_depth`."""

    level: str
    steps: list[Step] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.issues

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "ok": self.ok, "seconds": round(self.seconds, 3),
                "steps": [s.to_dict() for s in self.steps], "warnings": list(self.warnings)}


class _Failed(Exception):
    def __init__(self, loc: Loc, exc: BaseException) -> None:
        super().__init__(str(exc))
        self.loc, self.exc = loc, exc


class _OneBatch:
    """A loader that yields only its first batch (every other attribute is the loader's)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def __iter__(self) -> Iterator[Any]:
        for batch in self._loader:
            yield batch
            break

    def __len__(self) -> int:
        return 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _stage(loc: Loc) -> Iterator[None]:
    try:
        yield
    except _Failed:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes an issue at ``loc``
        raise _Failed(loc, exc) from exc


def _message(exc: BaseException) -> str:
    from thelper.exceptions import ThelperError

    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, ThelperError):
        return text
    return f"{type(exc).__name__}: {text.splitlines()[0]}"


def _shape(value: Any) -> str:
    shape = getattr(value, "shape", None)
    if shape is not None:
        return "(" + ", ".join(str(int(s)) for s in shape) + ")"
    if isinstance(value, list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _session(cfg: Any, pm: Any, root: Path | None, level: str) -> Any:
    """A session for the trainer to report to: silent hooks, CPU, and a directory (under
    ``root``) only for a dry run, whose checkpoint round trip writes files."""
    from thelper.session import Session, SilentPlugins, create_session_dir, draw_seeds

    # a dry run checks the parts, not the time budget: max_time would stop it early
    trainer = cfg.trainer.model_copy(update={
        "device": "cpu", "progress": False,
        **({"epochs": 1, "max_time": None} if level == "dry-run" else {})})
    cfg = cfg.model_copy(update={"trainer": trainer})
    seeds = draw_seeds(cfg.seeds.model_dump())
    config = cfg.model_dump(mode="json")
    config["seeds"] = dict(seeds)
    session_dir = create_session_dir(root, cfg.name) if root is not None \
        else Path(cfg.name)  # never created: building writes nothing
    return Session(name=cfg.name, session_dir=session_dir, config=config, cfg=cfg,
                   seeds=seeds, plugins=SilentPlugins(pm))


def _check_device(report: DepthReport, cfg: Any) -> None:
    """``trainer.device`` exists on this machine (the deep checks themselves run on CPU)."""
    t = time.perf_counter()
    from thelper.exceptions import ConfigError
    from thelper.runtime import device_problem

    with _stage(("trainer", "device")):
        problem = device_problem(cfg.trainer.device)
        if problem is not None:
            raise ConfigError(problem)
    report.steps.append(Step("device", f"trainer.device {cfg.trainer.device} fits this machine "
                                       "(the checks run on CPU)", time.perf_counter() - t))


def _build(report: DepthReport, cfg: Any, pm: Any, root: Path | None
           ) -> tuple[Any, Any, Any]:
    t = time.perf_counter()
    import torch

    from thelper.build import assemble

    registry = pm.registry
    session = _session(cfg, pm, root, report.level)
    report.steps.append(Step("imports", f"torch {torch.__version__}", time.perf_counter() - t))
    _check_device(report, cfg)
    seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(name: str) -> Iterator[None]:
        t = time.perf_counter()
        with _stage((name,)):
            yield
        seconds[name] = time.perf_counter() - t

    parts = assemble(session.cfg, session.seeds, registry, session=session, stage=stage)
    data, model, trainer = parts.data, parts.model, parts.trainer
    sizes = ", ".join(f"{s} {len(d)}" for s, d in data.splits.items())
    task = data.task.to_dict()
    classes = task.get("params", {}).get("class_names")
    task_text = str(task.get("type")) + (f" ({len(classes)} classes)" if classes else "")
    report.steps.append(Step("datasets", f"{len(data.datasets)} dataset(s), task "
                                         f"{task_text}; splits: {sizes}", seconds["datasets"]))
    n_params = sum(p.numel() for p in model.parameters())
    report.steps.append(Step("model", f"{cfg.model.type}: {n_params:,} parameters",
                             seconds["model"]))
    t = time.perf_counter()
    tcfg = session.cfg.trainer
    with _stage(("trainer", "test_metrics")):
        for spec in tcfg.test_metrics.values():
            registry.build("metric", spec.type, spec.params, task=data.task)
    opt = tcfg.optimization
    built = [f"optimizer {opt.optimizer.type}"]
    if opt.scheduler is not None:
        built.append(f"scheduler {opt.scheduler.type}")
    built.append(f"{len(tcfg.metrics) + len(tcfg.test_metrics)} metric(s)")
    report.steps.append(Step("trainer", f"{tcfg.type}: " + ", ".join(built),
                             seconds["trainer"] + time.perf_counter() - t))
    return session, data, trainer


def _check_batch(report: DepthReport, session: Any, data: Any, trainer: Any) -> None:
    import torch

    t = time.perf_counter()
    task = data.task
    with _stage(("loaders",)):
        batch = next(iter(data.loaders["train"]))
        batch = task.to_device(batch, torch.device("cpu"))
    model = trainer.model if hasattr(trainer, "model") else None
    loss_fn = getattr(trainer, "loss_fn", None)
    if model is None or loss_fn is None:
        report.steps.append(Step("batch", "one training batch loaded (the trainer exposes "
                                          "no model/loss_fn to check)", time.perf_counter() - t))
        return
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            inputs = task.get_input(batch)
            with _stage(("model",)):  # the task's own forward (detection models differ)
                outputs, targets, loss = task.step(model, loss_fn, batch, torch.device("cpu"))
                task.check_outputs(outputs, session.cfg.model.type)
            with _stage(("trainer", "optimization", "loss")):
                value = float(loss)
    finally:
        model.train(was_training)
    report.steps.append(Step(
        "batch", f"input {_shape(inputs)} -> output {_shape(outputs)} matches the task; "
                 f"loss {value:.4g}", time.perf_counter() - t))


def _dry_run(report: DepthReport, session: Any, data: Any, trainer: Any) -> None:
    import torch

    t = time.perf_counter()
    data.loaders = {split: _OneBatch(loader) for split, loader in data.loaders.items()}
    with _stage(("trainer",)):
        trainer.fit()
    history = {split: rows[-1] for split, rows in session.history.items() if rows}
    shown = "; ".join(f"{split} " + " ".join(f"{k} {v:.4g}" for k, v in row.items()
                                             if k != "epoch" and isinstance(v, float))
                      for split, row in history.items())
    report.steps.append(Step("train", f"one batch per split: {shown}", time.perf_counter() - t))
    t = time.perf_counter()
    with _stage(("trainer", "test_metrics")):
        values = trainer.test()
    report.steps.append(Step("test", " ".join(f"{k} {v:.4g}" for k, v in values.items()),
                             time.perf_counter() - t))
    t = time.perf_counter()
    path = session.checkpoints_dir / "ckpt.latest.pt"
    with _stage(("trainer",)):
        if not path.is_file():
            raise FileNotFoundError(f"the trainer wrote no {path.name}")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.load_state_dict(ckpt)
        after = trainer.model.state_dict()
        if set(before) != set(after) or not all(
                torch.equal(before[k], after[k]) for k in before):
            raise RuntimeError("the model differs after a checkpoint round trip")
    size = path.stat().st_size
    report.steps.append(Step("checkpoint", f"{path.name} ({size / 1e6:.2f} MB) reloads with "
                                           "torch.load(weights_only=True)",
                             time.perf_counter() - t))


def run_depth(doc: ConfigDocument, cfg: Any, pm: Any, level: str, *,
              keep_traceback: bool = False) -> DepthReport:
    """Build (``level="build"``) or dry-run (``"dry-run"``) a validated config on CPU.

    Args:
        doc: The document (for the positions of issues).
        cfg: Its validated session config.
        pm: The plugin manager.
        level: ``"build"`` or ``"dry-run"``.
        keep_traceback: Re-raise failures instead of reporting them (``--traceback``).

    Returns:
        The steps run and, on failure, one issue at the config path of the failing stage.
    """
    report = DepthReport(level)
    start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="thelper-validate-")) if level == "dry-run" else None
    collect = _Collect()
    logger = logging.getLogger("thelper")
    logger.addHandler(collect)
    try:
        session, data, trainer = _build(report, cfg, pm, root)
        _check_batch(report, session, data, trainer)
        if level == "dry-run":
            _dry_run(report, session, data, trainer)
    except _Failed as failed:
        if keep_traceback:
            raise failed.exc from None
        file, line, col, source = doc.locate(failed.loc)
        report.issues.append(ConfigIssue(".".join(map(str, failed.loc)),
                                         f"{report.level} failed: {_message(failed.exc)}",
                                         file, line, col, source))
    finally:
        logger.removeHandler(collect)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
        report.seconds = time.perf_counter() - start
    report.warnings = collect.messages
    return report
