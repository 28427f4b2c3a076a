"""Run record tracker: keeps ``run.json`` at the session root up to date.

``run.json`` holds ``name``, ``status`` (``running``, ``completed``, ``failed`` or
``interrupted``), ``stopped_reason`` (why it ended: ``completed``, ``early_stopping``,
``time_limit``, ``requeue``, ``interrupted`` or ``failed``; ``null`` while running) with
``stopped_epoch`` and ``stopped_step``, ``error``, ``config``, ``config_hash`` (the run
identity, see :func:`thelper.config.config_hash`), ``hparams``, ``metrics`` (per split, per
epoch), ``best`` (monitored metric, value, epoch), ``test`` (final metrics of the best
model), ``seeds``, ``platform``, ``git``, ``started_at``, ``ended_at``, ``resumed_at`` and
``checkpoints`` (``best``, ``latest``, ``epochs`` and, with ``trainer.save_top_k``,
``top_k``: ``[{path, epoch, metric, value}]``, best first, as the trainer publishes it in
``session.extras["top_k"]``). It is rewritten atomically after every event, so it is always
valid JSON.

Every ``thelper`` command imports this module (it is a plugin of the core), so the session
helpers are imported inside the hooks, which only run during a session.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from thelper.hookspecs import hookimpl

KEY = "run-record"


def _path(session: Any) -> Path:
    return session.session_dir / "run.json"


def _record(session: Any) -> dict[str, Any]:
    rec = session.extras.get(KEY)
    if rec is None:
        rec = {}
        path = _path(session)
        if session.resumed and path.is_file():
            try:
                rec = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                rec = {}
        session.extras[KEY] = rec
    return rec


def _write(session: Any) -> None:
    from thelper.session import write_json

    rec = _record(session)
    rec["metrics"] = session.history
    top_k = session.extras.get("top_k")
    if top_k is not None and isinstance(rec.get("checkpoints"), dict):
        rec["checkpoints"]["top_k"] = [dict(e) for e in top_k]
    write_json(_path(session), rec)


@hookimpl
def thelper_session_start(session: Any) -> None:
    from thelper.config import config_hash
    from thelper.session import flatten_hparams, git_info, now, platform_info

    rec = _record(session)
    if session.resumed and rec.get("started_at"):
        rec.setdefault("resumed_at", []).append(now())
    else:
        rec["started_at"] = session.started_at
    rec.update({
        "name": session.name,
        "status": "running",
        "error": None,
        "config": session.config,
        "config_hash": config_hash(session.config),
        "hparams": session.hparams or flatten_hparams(session.config),
        "seeds": session.seeds,
        "task": session.task.to_dict() if session.task is not None else None,
        "platform": {**platform_info(), "device": session.device},
        "git": git_info(),
        "ended_at": None,
        "stopped_reason": None,
        "stopped_epoch": None,
        "stopped_step": None,
    })
    rec.setdefault("test", None)
    rec.setdefault("checkpoints", {})
    _write(session)


@hookimpl
def thelper_epoch_end(session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    _write(session)


@hookimpl
def thelper_checkpoint_saved(session: Any, path: Path, epoch: int, is_best: bool) -> None:
    rec = _record(session)
    rel = str(path.relative_to(session.session_dir)) if path.is_relative_to(
        session.session_dir) else str(path)
    kind = "best" if path.name == "ckpt.best.pt" else (
        "latest" if path.name == "ckpt.latest.pt" else "epoch")
    if path.name.startswith("ckpt.step."):  # mid-epoch: linked as ckpt.latest.pt, rotated
        rec["checkpoints"]["latest"] = {"path": "checkpoints/ckpt.latest.pt", "epoch": epoch,
                                        "step": int(path.name.split(".")[2])}
        return
    if path.name.startswith("ckpt.epoch"):  # top-k: listed from session.extras["top_k"]
        return
    if kind == "epoch":
        rec["checkpoints"].setdefault("epochs", [])
        if rel not in rec["checkpoints"]["epochs"]:
            rec["checkpoints"]["epochs"].append(rel)
    else:
        rec["checkpoints"][kind] = {"path": rel, "epoch": epoch}
    if is_best:
        trainer_monitor = session.cfg.trainer.monitor
        split = "valid" if "valid" in session.history else "train"
        value = session.history.get(split, [{}])[-1].get(trainer_monitor)
        rec["best"] = {"metric": trainer_monitor, "split": split, "value": value,
                       "epoch": epoch}


@hookimpl
def thelper_evaluation_end(session: Any, split: str, epoch: int, metrics: dict[str, float]) -> None:
    rec = _record(session)
    rec["test"] = {"split": split, "epoch": epoch, **metrics}
    _write(session)


@hookimpl
def thelper_session_end(session: Any, status: str, error: BaseException | None) -> None:
    from thelper.session import now

    rec = _record(session)
    rec["status"] = status
    rec["error"] = None if error is None else f"{type(error).__name__}: {error}"
    stopped = session.extras.get("stopped") or {}
    rec["stopped_reason"] = stopped.get("reason")
    rec["stopped_epoch"] = stopped.get("epoch")
    rec["stopped_step"] = stopped.get("step")
    rec["ended_at"] = now()
    _write(session)
    session.extras.pop(KEY, None)
