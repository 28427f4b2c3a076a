"""Run record tracker: keeps ``run.json`` at the session root up to date.

``run.json`` is the session's full record (every field is described in
``docs/tracking.md``): ``name``, ``description``, ``labels``, ``status`` (``running``,
``completed``, ``failed`` or ``interrupted``), ``stopped_reason`` (``completed``,
``early_stopping``, ``time_limit``, ``requeue``, ``interrupted`` or ``failed``; ``null`` while
running) with ``stopped_epoch``, ``stopped_step`` and ``early_stopping`` (true when early
stopping ended it), ``error``, ``config``, ``config_hash`` (the run's identity, see
:func:`thelper.config.config_hash`), ``hparams``, ``metrics`` (per split, per epoch),
``epochs`` (``[{epoch, started_at, ended_at, duration_s}]``), ``steps`` (where the per-step
scalars are: ``logs/steps.jsonl``), ``best``, ``test``, ``seeds``, ``task``, ``platform``,
``git``, ``versions`` (thelper and every loaded plugin), ``started_at``, ``ended_at``,
``resumed_at``, ``checkpoints``, ``artifacts`` (``[{path, kind, size, sha256, mtime}]``,
refreshed when the session ends) and, for each configured tracker that keeps state (the
MLflow tracker: ``mlflow``), that tracker's record. It is rewritten atomically after every
event, so it is always valid JSON.

Per-step scalars (:func:`thelper.hookspecs.thelper_log_scalars`) are appended to
``logs/steps.jsonl`` instead of ``run.json``: one line per logged step keeps the record
small and its rewrites cheap however long the training is.

Every ``thelper`` command imports this module (it is a plugin of the core), so the session
helpers are imported inside the hooks, which only run during a session.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from thelper.hookspecs import hookimpl

KEY = "run-record"
#: ``session.extras`` key of the open ``logs/steps.jsonl`` file and its counters.
STEPS_KEY = "run-record-steps"
#: ``session.extras`` key of the start time (``time.time()``) of the running epoch.
EPOCH_T0 = "run-record-epoch-t0"


def _path(session: Any) -> Path:
    return session.session_dir / "run.json"


def _record(session: Any) -> dict[str, Any]:
    rec = session.extras.get(KEY)
    if rec is None:
        rec = {}
        path = _path(session)
        if session.resumed and path.is_file():
            from thelper.records import RecordError, load_record

            try:  # a FIFO or a huge file in its place is refused, never read
                rec = load_record(path)
            except RecordError:
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
    steps = session.extras.get(STEPS_KEY)
    if steps is not None:
        rec["steps"] = {"path": steps["path"], "count": steps["count"],
                        "last_step": steps["last_step"]}
    for tracker in session.extras.get("trackers") or []:  # thelper.trackers.configured
        key = getattr(tracker, "record_key", None)
        if key and hasattr(tracker, "record"):
            try:
                rec[key] = tracker.record()
            except Exception as exc:  # a tracker's bug must not lose the record
                session.logger.warning("tracker %s: cannot describe its state for run.json: "
                                       "%s", key, exc)
    write_json(_path(session), rec)


def _config_file(session: Any) -> Path | None:
    """The config file the session was started from (the last one named on the command
    line), from ``config.sources.yaml``'s recipe; ``None`` for an in-memory config."""
    import yaml

    text = session.extras.get("config-sources")
    if not text:
        return None
    try:
        files = (yaml.safe_load(text) or {}).get("recipe", {}).get("files") or []
    except (yaml.YAMLError, AttributeError):
        return None
    return Path(files[-1]).resolve() if files else None


def _git(session: Any, rec: dict[str, Any]) -> dict[str, Any] | None:
    """git state of the config file's work tree (its folder: a config kept in another
    repository than the current directory's), else of the current directory's."""
    from thelper.session import git_info

    config_file = _config_file(session)
    if config_file is None and isinstance(rec.get("git"), dict):  # a resume: same place
        recorded = rec["git"].get("config_dir")
        config_file = Path(recorded) if recorded and Path(recorded).is_dir() else None
    info = git_info(config_file) if config_file is not None else None
    if info is None:
        info = git_info()
    if info is not None:
        where = config_file.parent if config_file is not None and config_file.is_file() \
            else config_file
        info["config_dir"] = str(where) if where is not None else None
    return info


def _versions(session: Any) -> dict[str, Any]:
    """thelper-core's version and every loaded plugin's ``{distribution, version}``."""
    from importlib import metadata

    try:
        core = metadata.version("thelper-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        core = None
    plugins = {}
    for name, rec in sorted((getattr(session.plugins, "records", None) or {}).items()):
        plugins[name] = {"distribution": rec.distribution, "version": rec.version}
    return {"thelper": core, "plugins": plugins}


@hookimpl
def thelper_session_start(session: Any) -> None:
    from thelper.config import config_hash
    from thelper.session import flatten_hparams, now, platform_info

    rec = _record(session)
    if session.resumed and rec.get("started_at"):
        rec.setdefault("resumed_at", []).append(now())
    else:
        rec["started_at"] = session.started_at
    config = session.config
    rec.update({
        "name": session.name,
        "description": config.get("description"),
        "labels": list(config.get("labels") or []),
        "status": "running",
        "error": None,
        "config": config,
        "config_hash": config_hash(config),
        "hparams": session.hparams or flatten_hparams(config),
        "seeds": session.seeds,
        "task": session.task.to_dict() if session.task is not None else None,
        "platform": {**platform_info(), "device": session.device},
        "git": _git(session, rec),
        "versions": _versions(session),
        "ended_at": None,
        "stopped_reason": None,
        "stopped_epoch": None,
        "stopped_step": None,
        "early_stopping": False,
    })
    rec.setdefault("test", None)
    rec.setdefault("checkpoints", {})
    rec.setdefault("epochs", [])
    rec.setdefault("artifacts", [])
    session.extras[EPOCH_T0] = time.time()
    _write(session)


@hookimpl
def thelper_epoch_end(session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    from datetime import UTC, datetime

    end = time.time()
    start = session.extras.get(EPOCH_T0, end)
    session.extras[EPOCH_T0] = end
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")  # noqa: E731
    epochs = [e for e in _record(session).setdefault("epochs", [])
              if e.get("epoch") != epoch]  # a resume replays an interrupted epoch
    epochs.append({"epoch": epoch, "started_at": iso(start), "ended_at": iso(end),
                   "duration_s": round(end - start, 4)})
    _record(session)["epochs"] = sorted(epochs, key=lambda e: e["epoch"])
    steps = session.extras.get(STEPS_KEY)
    if steps is not None:
        steps["file"].flush()
    _write(session)


@hookimpl
def thelper_log_scalars(session: Any, split: str, step: int, values: dict[str, float]) -> None:
    steps = session.extras.get(STEPS_KEY)
    if steps is None:
        import os

        from thelper.records import STEPS_FILE
        from thelper.session import safe_path

        path = safe_path(session.session_dir, STEPS_FILE)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o666)
        previous = (_record(session).get("steps") or {}) if session.resumed else {}
        steps = {"path": STEPS_FILE, "file": os.fdopen(fd, "a", encoding="utf-8"),
                 "count": int(previous.get("count") or 0),
                 "last_step": previous.get("last_step")}
        session.extras[STEPS_KEY] = steps
    row = {"step": int(step), "split": split, **values, "time": round(time.time(), 3)}
    steps["file"].write(json.dumps(row) + "\n")
    steps["count"] += 1
    steps["last_step"] = int(step)


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


@hookimpl(trylast=True)  # after the other trackers, so that their final state is recorded
def thelper_session_end(session: Any, status: str, error: BaseException | None) -> None:
    from thelper.records import collect_artifacts
    from thelper.session import now

    rec = _record(session)
    rec["status"] = status
    rec["error"] = None if error is None else f"{type(error).__name__}: {error}"
    stopped = session.extras.get("stopped") or {}
    rec["stopped_reason"] = stopped.get("reason")
    rec["stopped_epoch"] = stopped.get("epoch")
    rec["stopped_step"] = stopped.get("step")
    rec["early_stopping"] = stopped.get("reason") == "early_stopping"
    rec["ended_at"] = now()
    steps = session.extras.pop(STEPS_KEY, None)
    if steps is not None:
        steps["file"].close()
        session.extras[STEPS_KEY] = {k: v for k, v in steps.items() if k != "file"}
    try:
        rec["artifacts"] = collect_artifacts(session.session_dir, rec.get("artifacts"))
    except OSError as exc:  # an unreadable file must not lose the record
        session.logger.warning("cannot list the session's artifacts: %s", exc)
    _write(session)
    session.extras.pop(STEPS_KEY, None)
    session.extras.pop(KEY, None)
