"""Start, resume and evaluate sessions: the code behind ``thelper run`` and ``thelper resume``."""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thelper.config import ConfigDocument, config_hash, document_from_dict, validate_document
from thelper.config.compose import sources_yaml
from thelper.exceptions import CheckpointError, ConfigError, SessionError, ThelperError
from thelper.logs import attach_file_handler, setup_logging
from thelper.plugins import ThelperPluginManager, get_plugin_manager
from thelper.runtime import Runtime
from thelper.session import (
    Session,
    SessionLock,
    SilentPlugins,
    check_links,
    clean_stale_files,
    create_session_dir,
    draw_seeds,
    flatten_hparams,
    probe_writable,
    session_dir_of,
)

__all__ = ["run_session", "resume_session"]

#: SIGUSR1 (absent on Windows): checkpoint and exit 75, to be requeued.
_REQUEUE: int | None = getattr(signal, "SIGUSR1", None)


def _config_dump(cfg: Any, seeds: dict[str, int]) -> dict[str, Any]:
    data = cfg.model_dump(mode="json", exclude_none=False)
    data["seeds"] = dict(seeds)
    return data


def _snapshot_torch_flags() -> Any:
    """Snapshot the process-wide torch switches a session may change; returns a restorer."""
    import torch

    det = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    bench, cudnn_det = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic

    def restore() -> None:
        torch.use_deterministic_algorithms(det, warn_only=warn)
        torch.backends.cudnn.benchmark = bench
        torch.backends.cudnn.deterministic = cudnn_det

    return restore


def _execute(session: Session, pm: ThelperPluginManager, *, ckpt: dict[str, Any] | None,
             eval_only: bool = False) -> Session:
    import torch

    from thelper.build import assemble, record
    from thelper.checkpoint import set_rng_state

    registry = pm.registry
    log = session.logger
    runtime = session.runtime
    handler = attach_file_handler(session.logs_dir / "trainer.log") if session.is_main \
        else None
    started = False
    status, error = "failed", None
    trainer, evaluated = None, None
    if eval_only and session.is_main:  # the training's run.json record stays as it is
        session.plugins = _EvalOnlyPlugins(pm)
    previous = _install_stop_handlers(session)
    restore_flags = _snapshot_torch_flags()
    if session.cfg.trainer.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    try:
        log.info("session %r in %s", session.name, session.session_dir)
        if session.extras.get("resumed_from"):
            log.info("resuming from %s", session.extras["resumed_from"])
        if runtime.distributed:
            log.info("rank %d of %d (%s backend), device %s", runtime.rank, runtime.world_size,
                     runtime.backend, runtime.device)
        log.info("seeds: %s", session.seeds)
        if eval_only:  # a missing best checkpoint fails before anything is built
            evaluated = _eval_checkpoint(session, ckpt)
        else:  # an evaluation leaves the training's config and package records alone
            session.write_config_files()
            session.write_packages()
        parts = assemble(session.cfg, session.seeds, registry, runtime, session=session)
        record(session, parts)
        trainer = parts.trainer
        if ckpt is not None:
            trainer.load_state_dict(ckpt)
            if ckpt.get("rng"):
                set_rng_state(ckpt["rng"])
        session.hparams = flatten_hparams(session.config)
        session.plugins.session_start(session)
        started = True
        tcfg = session.cfg.trainer
        if eval_only:
            trainer.test(evaluated)
        else:
            if session.start_epoch > tcfg.epochs:
                log.info("all %d epochs are done; evaluating the best model", tcfg.epochs)
            else:
                log.info("training epochs %d to %d on %s", session.start_epoch, tcfg.epochs,
                         session.device)
                trainer.fit()
            trainer.test()
        status = "completed"
    except KeyboardInterrupt as exc:
        status, error = "interrupted", exc
        what = getattr(exc, "summary", "interrupted")
        if getattr(exc, "reason", None) == "time_limit":
            log.warning("%s", exc)
        if eval_only:
            log.warning("evaluation %s; evaluate again with 'thelper resume %s --eval-only'",
                        what, session.session_dir)
        else:
            log.warning("%s; the latest checkpoint is kept, continue with 'thelper resume "
                        "%s'", what, session.session_dir)
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        session.extras["stopped"] = _stopped(trainer, status, error)
        if started:
            session.status = status
            try:
                session.plugins.session_end(session, status, error)
            finally:
                log.info("session %s: %s", session.name, status)
        elif error is not None:
            log.error("session %s %s before training started: %s", session.name, status,
                      error)
            if session.is_main and not eval_only:
                _record_early_failure(session, error, status)
        if eval_only and session.is_main:
            _record_evaluation(session, evaluated, status, error,
                               getattr(trainer, "last_evaluation", None))
        for signum, old in previous.items():
            signal.signal(signum, old)
        restore_flags()
        if handler is not None:
            logging.getLogger("thelper").removeHandler(handler)
            handler.close()
    return session


def _stopped(trainer: Any, status: str, error: BaseException | None) -> dict[str, Any]:
    """run.json's ``stopped_reason``, ``stopped_epoch`` and ``stopped_step``: why the
    session ended (``completed``, ``early_stopping``, ``time_limit``, ``requeue``,
    ``interrupted`` or ``failed``), in which epoch (the one in progress, or the last one
    trained) and after how many optimizer steps."""
    epoch = getattr(trainer, "epoch", None)
    step = getattr(trainer, "step", None)
    if status == "completed":
        done = getattr(trainer, "stopped", None) or {}
        return {"reason": done.get("reason", "completed"), "epoch": done.get("epoch", epoch),
                "step": done.get("step", step)}
    reason = getattr(error, "reason", None) or (
        "interrupted" if status == "interrupted" else "failed")
    if getattr(error, "epoch", None) is not None:  # a StopRequested says where
        epoch, step = error.epoch, error.step  # type: ignore[union-attr]
    return {"reason": reason, "epoch": epoch, "step": step}


def _on_main(runtime: Any, fn: Any) -> Any:
    """Run ``fn()`` on rank 0 and hand its result to every rank; a user-facing error on
    rank 0 is raised on every rank (instead of leaving the others waiting)."""
    from thelper.exceptions import ThelperError

    result: tuple[str, Any] = ("ok", None)
    if runtime.is_main:
        try:
            result = ("ok", fn())
        except ThelperError as exc:
            if not runtime.distributed:
                raise
            result = ("error", (type(exc), str(exc)))
    result = runtime.broadcast_object(result)
    if result[0] == "error":
        cls, text = result[1]
        raise cls(text)
    return result[1]


@contextlib.contextmanager
def _started(runtime: Runtime | None, device: str) -> Iterator[Runtime]:
    """The runtime, started for ``device`` (a missing GPU fails here, before any directory
    exists); the ranks other than 0 log warnings and errors only, prefixed ``[rank N]``. The
    process group, the log level and the handlers are given back when the session ends."""
    runtime = runtime or Runtime.from_env()
    runtime.start(device)
    logger = logging.getLogger("thelper")
    level = logger.level
    prefix = _RankPrefix(runtime.rank)
    handlers = list(logger.handlers) if runtime.distributed and not runtime.is_main else []
    if handlers:
        logger.setLevel(logging.WARNING)
        for h in handlers:
            h.addFilter(prefix)
    ok = False
    try:
        yield runtime
        ok = True
    finally:
        logger.setLevel(level)
        for h in handlers:
            h.removeFilter(prefix)
        runtime.close(sync=ok)


class _RankPrefix(logging.Filter):
    """Start the console lines of a rank other than 0 with ``[rank N]``."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "thelper_rank", None):
            record.msg = f"[rank {self.rank}] {record.msg}"
            record.thelper_rank = self.rank
        return True


def _install_stop_handlers(session: Session) -> dict[int, Any]:
    """SIGINT/SIGTERM ask the trainer to stop after the current batch, in every phase:
    training (after a step checkpoint), validation (after a checkpoint of the trained epoch)
    and the final test; the session ends ``interrupted`` (exit code 130) and ``thelper
    resume`` continues it. SIGUSR1 (a scheduler's warning before its time limit) does the
    same, but ends with ``stopped_reason: requeue`` and exit code 75, for the batch script
    to requeue the job. Under several ranks the ranks agree on it every
    ``log_every_n_steps`` steps or batches.

    A second signal stops at once (``KeyboardInterrupt``).
    """
    previous: dict[int, Any] = {}

    def _handler(signum: int, frame: Any) -> None:
        if getattr(session, "stop_requested", None):
            raise KeyboardInterrupt(f"signal {signum}")
        session.stop_requested = signum  # type: ignore[attr-defined]
        session.logger.warning("received signal %d: stopping after the current batch%s (send "
                               "it again to stop at once)", signum,
                               ", for a requeue" if signum == _REQUEUE else "")

    for signum in (signal.SIGINT, signal.SIGTERM, *([_REQUEUE] if _REQUEUE else [])):
        try:
            previous[signum] = signal.signal(signum, _handler)
        except ValueError:  # not in the main thread
            break
    return previous


def _record_early_failure(session: Session, error: BaseException,
                          status: str = "failed") -> None:
    """Write a failed (or interrupted) ``run.json`` when the session dies before the
    trackers started. Never for ``--eval-only`` (see :func:`_record_evaluation`)."""

    from thelper.session import now, platform_info, write_json

    path = session.session_dir / "run.json"
    if path.exists() and not session.resumed:
        return
    previous: dict[str, Any] = {}
    if path.exists():  # a resume that failed early keeps the record of what ran before
        try:
            loaded = _read_record(path)
            previous = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, ThelperError):
            previous = {}
    try:
        write_json(path, {**previous, **{
            "name": session.name, "status": status,
            "error": f"{type(error).__name__}: {error}",
            "stopped_reason": getattr(error, "reason", None) or (
                "interrupted" if status == "interrupted" else "failed"),
            "config": session.config,
            "config_hash": config_hash(session.config),
            "hparams": flatten_hparams(session.config), "metrics": session.history,
            "seeds": session.seeds, "ended_at": now(),
        }, **({} if previous else {"test": None, "platform": platform_info(), "git": None,
                                   "started_at": session.started_at})})
    except OSError:
        pass


class _EvalOnlyPlugins:
    """The plugin manager of ``resume --eval-only``: its lifecycle hooks reach every plugin
    but the ``run.json`` record (run-record) and the configured trackers, so that an
    evaluation, failed or not, leaves the training's status and test metrics as they are
    (:func:`_record_evaluation` appends it to ``run.json``'s ``evaluations`` instead).
    Everything else is ``pm``'s."""

    def __init__(self, pm: ThelperPluginManager) -> None:
        import inspect

        from thelper.session import LIFECYCLE

        self._pm = pm
        # configured trackers (MLflow) would log the test again as the training's run
        skip = ("run-record", "trackers")
        self._calls = {name: (pm.lifecycle_caller(name, skip),
                              list(inspect.signature(getattr(pm, name)).parameters))
                       for name in LIFECYCLE}

    def __getattr__(self, name: str) -> Any:
        if name in self._calls:
            call, params = self._calls[name]
            return lambda *args, **kwargs: call(
                **dict(zip(params, args, strict=False)), **kwargs)
        return getattr(self._pm, name)


def _eval_checkpoint(session: Session, ckpt: dict[str, Any] | None) -> Path:
    """The checkpoint ``resume --eval-only`` evaluates: the file given, else the session's
    ``ckpt.best.pt``.

    Raises:
        CheckpointError: The session has no best checkpoint; says why.
    """
    given = session.extras.get("eval_checkpoint")
    if given:
        return Path(given)
    best = session.checkpoints_dir / "ckpt.best.pt"
    if best.is_file():
        return best
    ckpt = ckpt or {}
    mon = ckpt.get("monitor") or {}
    metric = mon.get("metric") or session.cfg.trainer.monitor
    split = mon.get("split") or "valid"
    done = int(ckpt.get("epoch") or 0)
    if done == 0:
        why = "no epoch has finished yet"
    elif mon.get("best") is None:
        why = f"it had no value (NaN or not computed) in the {done} finished epoch(s)"
    else:
        why = f"best {mon['best']:.4g} at epoch {mon.get('best_epoch')}, but the file is gone"
    raise CheckpointError(
        f"no ckpt.best.pt in {str(session.checkpoints_dir)!r}: the session has no best "
        f"checkpoint (monitor {metric!r} on the {split} split: {why}); evaluate another "
        f"checkpoint with 'thelper resume {session.checkpoints_dir / 'ckpt.latest.pt'} "
        "--eval-only'")


def _record_evaluation(session: Session, checkpoint: Path | None, status: str,
                       error: BaseException | None, evaluated: dict[str, Any] | None) -> None:
    """Append an ``--eval-only`` run to ``run.json``'s ``evaluations`` list (the training's
    record, its ``status`` and ``test`` included, is kept). Nothing without a ``run.json``."""

    from thelper.session import now, write_json

    path = session.session_dir / "run.json"
    try:
        record = _read_record(path)
    except (OSError, ValueError, ThelperError):
        return
    if not isinstance(record, dict):
        return
    where = (evaluated or {}).get("checkpoint") or (str(checkpoint) if checkpoint else None)
    if where is not None and Path(where).is_relative_to(session.session_dir):
        where = Path(where).relative_to(session.session_dir).as_posix()
    entry = {
        "status": status,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "checkpoint": where,
        "split": (evaluated or {}).get("split"),
        "epoch": (evaluated or {}).get("epoch"),
        "metrics": session.test_metrics if status == "completed" else None,
        "started_at": session.started_at, "ended_at": now(),
    }
    evaluations = record.get("evaluations")
    record["evaluations"] = [*(evaluations if isinstance(evaluations, list) else []), entry]
    try:
        write_json(path, record)
    except OSError as exc:
        session.logger.warning("cannot record the evaluation in %s: %s", path, exc)


def run_session(doc: ConfigDocument, save_dir: str | Path,
                pm: ThelperPluginManager | None = None, runtime: Runtime | None = None,
                allow_imports: tuple[str, ...] | list[str] = ()) -> Session:
    """Validate ``doc``, create ``save_dir/<name>/`` and train, validate and test.

    Under several ranks (torchrun) every rank calls this; rank 0 draws the seeds and
    creates the directory, and hands both to the others before anything is split.

    Args:
        doc: The config document.
        save_dir: Where the session directory is created.
        pm: Plugin manager (default: the process's).
        runtime: Rank and world size (default: from the environment, see
            :meth:`thelper.runtime.Runtime.from_env`).
        allow_imports: Modules the caller allows configs to import (``--allow-import``);
            the config's ``imports.allow`` entries must be among them.

    Raises:
        ConfigError: The config is invalid (every problem listed).
        SessionError: The session directory exists or is not writable, or another process
            holds its lock.
        ThelperError: Any other user-facing failure while training.
    """
    setup_logging()
    pm = pm or get_plugin_manager()
    cfg = validate_document(doc, pm.registry, allow_imports=allow_imports)
    with _started(runtime, cfg.trainer.device) as runtime:

        def create() -> tuple[dict[str, int], str]:
            seeds = draw_seeds(cfg.seeds.model_dump())
            return seeds, str(create_session_dir(Path(save_dir), cfg.name))

        seeds, session_dir = _on_main(runtime, create)
        config = _config_dump(cfg, seeds)
        session = Session(name=cfg.name, session_dir=Path(session_dir), config=config,
                          cfg=cfg, seeds=seeds, runtime=runtime,
                          plugins=pm if runtime.is_main else SilentPlugins(pm))
        session.extras["config-sources"] = sources_yaml(doc)  # config.sources.yaml
        with _claimed(Path(session_dir), runtime):
            return _execute(session, pm, ckpt=None)


def resume_session(path: str | Path, sets: list[str] | tuple[str, ...] = (), *,
                   eval_only: bool = False, map_location: str | None = None,
                   pm: ThelperPluginManager | None = None, runtime: Runtime | None = None,
                   allow_imports: tuple[str, ...] | list[str] = ()) -> Session:
    """Continue a session from its latest checkpoint (or evaluate its best one).

    The checkpoint's stored config is data: it is validated under this call's
    ``allow_imports`` (``--allow-import``), never under an allow-list it brings itself.

    Args:
        path: Session directory or checkpoint file.
        sets: ``--set`` overrides applied to the checkpoint's config (e.g. more epochs).
        eval_only: Only evaluate ``ckpt.best.pt`` on the test split.
        map_location: Device for the checkpoint's tensors (``cpu`` for GPU checkpoints on a
            CPU machine; also sets ``trainer.device``).
        pm: Plugin manager.
        runtime: Rank and world size (default: from the environment). Under several
            ranks, every rank loads the checkpoint that rank 0 picked.
        allow_imports: Modules this invocation allows configs to import.

    Raises:
        CheckpointError: No usable checkpoint (every one damaged or missing).
        ConfigError: The stored config (with overrides) is invalid, the overrides
            change a seed (a resumed session replays its recorded seeds), or
            ``map_location`` is not a device of this machine.
        SessionError: Another process uses the session (its PID is named), or the session
            directory holds a symbolic link leading out of it.
    """
    setup_logging()
    pm = pm or get_plugin_manager()
    log = logging.getLogger("thelper")
    runtime = runtime or Runtime.from_env()
    if runtime.distributed and map_location is None:
        map_location = "cpu"  # each rank moves the state to its own device
        load_device = None
    else:
        load_device = map_location
    _check_resume_target(Path(path), map_location)
    _check_local_plugins(session_dir_of(Path(path)), pm)
    fresh = _fresh_restart(Path(path))
    if fresh is not None:  # killed before its first checkpoint: start over in place
        log.warning("%s has no checkpoint yet: starting it again from epoch 1 with its "
                    "recorded config and seeds", path)
        ckpt_path, ckpt = Path(path) / "checkpoints" / "ckpt.latest.pt", None
        config = fresh
    else:
        ckpt_path, ckpt = load_newest_intact(Path(path), map_location)
        config = copy.deepcopy(ckpt.get("config") or {})
    if not config:
        raise CheckpointError(f"{str(ckpt_path)!r} holds no session config; it was not "
                              "written by 'thelper run'")
    extra = list(sets)
    if load_device is not None:
        extra.insert(0, f"trainer.device={load_device}")
    doc = document_from_dict(config, extra)
    cfg = validate_document(doc, pm.registry, allow_imports=allow_imports)
    with _started(runtime, cfg.trainer.device) as runtime:
        chosen = runtime.broadcast_object(str(ckpt_path) if ckpt is not None else None)
        if chosen is not None and chosen != str(ckpt_path):  # rank 0 decides
            from thelper.checkpoint import load_checkpoint

            # its weights and its config: a resume with --set may have changed the config
            # between the checkpoints, and the ranks train one session
            ckpt_path, ckpt = Path(chosen), load_checkpoint(Path(chosen), map_location)
            config = copy.deepcopy(ckpt.get("config") or {})
            cfg = validate_document(document_from_dict(config, extra), pm.registry,
                                    allow_imports=allow_imports)
        with _claimed(session_dir_of(ckpt_path), runtime, resumed=True):
            return _resume(path, ckpt_path, ckpt, config, cfg, pm, runtime, eval_only)


def _read_record(path: Path) -> Any:
    """A session's ``run.json``, read as a regular file only (a FIFO planted there never
    blocks the command: :func:`thelper.data.files.open_regular`).

    Raises:
        OSError, ValueError, DataError: Missing, unreadable, not a regular file, not JSON.
    """
    import json

    from thelper.data.files import open_regular

    with open_regular(path, "r") as f:
        return json.loads(f.read())


def _check_local_plugins(session_dir: Path, pm: Any) -> None:
    """Refuse a resume without the local plugin modules (``-p MODULE``) the session was
    trained with: the session never loads code by itself, the command line names it.

    Raises:
        LocalPluginError: A recorded local module is not loaded.
    """
    import json

    from thelper.data.files import open_regular
    from thelper.exceptions import LocalPluginError

    path = session_dir / "logs" / "plugins.json"
    try:
        with open_regular(path, "r") as f:
            recorded = json.loads(f.read(1 << 20)).get("local_modules") or []
    except (OSError, ValueError, AttributeError, ThelperError):
        return  # older sessions have no record; a damaged one is not a reason to refuse
    missing = [m for m in recorded if isinstance(m, str)
               and m not in getattr(pm, "local_modules", ())]
    if missing:
        flags = " ".join(f"-p {m}" for m in missing)
        raise LocalPluginError(
            f"{session_dir}: the session was trained with the local plugin module(s) "
            f"{', '.join(missing)}; resume with 'thelper {flags} resume {session_dir}' (a "
            "session never loads code by itself)")


def _check_resume_target(path: Path, map_location: str | None) -> None:
    """Checks made before anything of a session is read for a resume.

    Raises:
        ConfigError: ``map_location`` is not a device of this machine.
        SessionError: The session directory holds a symbolic link leading out of it.
    """
    from thelper.checkpoint import check_map_location

    check_map_location(map_location)
    session_dir = session_dir_of(path)
    if session_dir.is_dir() and any(
            (session_dir / name).is_symlink() or (session_dir / name).exists()
            for name in ("checkpoints", "logs", "config.latest.yaml")):
        check_links(session_dir)


@contextlib.contextmanager
def _claimed(session_dir: Path, runtime: Runtime, *, resumed: bool = False
             ) -> Iterator[None]:
    """Hold the session's lock (``<session>/.lock``, rank 0) while the block runs; on
    resume, also remove the temporary files of a killed save once the lock is held. An
    error on rank 0 is raised on every rank.

    Raises:
        SessionError: Another process uses the session (the message gives its PID).
    """
    lock = SessionLock(session_dir)

    def claim() -> None:
        if not (session_dir / "checkpoints").is_dir():
            return  # not a session directory: _resume says so
        lock.acquire()
        if resumed:
            stale = clean_stale_files(session_dir)
            if stale:
                logging.getLogger("thelper").info(
                    "removed %d temporary file(s) of an interrupted save: %s", len(stale),
                    ", ".join(p.name for p in stale))

    try:
        _on_main(runtime, claim)
        yield
    finally:
        lock.release()


def _resume(path: str | Path, ckpt_path: Path, ckpt: dict[str, Any] | None,
            config: dict[str, Any], cfg: Any, pm: ThelperPluginManager, runtime: Runtime,
            eval_only: bool) -> Session:
    session_dir = ckpt_path.parent.parent if ckpt_path.parent.name == "checkpoints" \
        else ckpt_path.parent
    if not (session_dir / "checkpoints").is_dir():
        raise SessionError(f"{str(ckpt_path)!r} is not inside a session directory "
                           "(<session>/checkpoints/); cannot resume there")
    if runtime.is_main:
        probe_writable(session_dir)
    stored = (ckpt or {}).get("seeds") or config.get("seeds") or {}
    seeds = {k: int(v) for k, v in stored.items() if v is not None}
    changed = sorted(k for k, v in cfg.seeds.model_dump().items()
                     if v is not None and k in seeds and int(v) != seeds[k])
    if changed:  # by --set: refuse rather than ignore it
        raise ConfigError(
            "a resumed session keeps its seeds ("
            + ", ".join(f"seeds.{k}: recorded {seeds[k]}, asked {getattr(cfg.seeds, k)}"
                        for k in changed)
            + "): resuming replays the recorded seeds so that the run continues exactly; "
            "drop that --set, or start a new "
            "session with 'thelper run "
            f"{session_dir / 'config.latest.yaml'} --set seeds...'")
    seeds = runtime.broadcast_object(draw_seeds({**cfg.seeds.model_dump(), **seeds}))
    session = Session(name=cfg.name, session_dir=session_dir,
                      config=_config_dump(cfg, seeds), cfg=cfg, seeds=seeds, runtime=runtime,
                      plugins=pm if runtime.is_main else SilentPlugins(pm), resumed=True,
                      start_epoch=int((ckpt or {}).get("epoch", 0)) + 1,
                      history=copy.deepcopy((ckpt or {}).get("history") or {}))
    if ckpt is None:  # died before its first checkpoint: model.init_from applies again
        session.extras["restarted"] = True
    if ckpt is not None:
        where = f"epoch {ckpt.get('epoch')}"
        if ckpt.get("in_epoch"):
            where = f"epoch {ckpt['in_epoch']['epoch']}, step {ckpt.get('step')}"
        session.extras["resumed_from"] = f"{ckpt_path} ({where})"  # logged to trainer.log
    if eval_only and Path(path).is_file():  # evaluate the given checkpoint, not the best
        session.extras["eval_checkpoint"] = str(path)
    return _execute(session, pm, ckpt=ckpt, eval_only=eval_only)


def _fresh_restart(path: Path) -> dict[str, Any] | None:
    """The recorded config of a session directory that has no checkpoint at all, read
    under the same guards as any config file (size, nesting, tags; no interpolation)."""
    from thelper.config.source import read_document

    ckpts = path / "checkpoints"
    if not (path.is_dir() and ckpts.is_dir()) or any(ckpts.glob("ckpt.*.pt")):
        return None
    latest = path / "config.latest.yaml"
    if not latest.is_file():
        return None
    return read_document(latest)[0] or None


def load_newest_intact(path: Path, map_location: str | None = None
                       ) -> tuple[Path, dict[str, Any]]:
    """Load ``ckpt.latest.pt`` of a session (or the given file); when it is truncated or
    corrupted (checksums verified), fall back to the newest intact checkpoint of the session
    (by steps and epochs, see :func:`thelper.checkpoint.resume_candidates`) and say so,
    naming both files; a checkpoint file the user named is never replaced (that is an
    error). A session killed after writing its first checkpoint but before
    ``ckpt.latest.pt`` resumes from that checkpoint.

    Raises:
        CheckpointError: No checkpoint can be loaded.
        ConfigError: ``map_location`` is not a device of this machine.
    """
    from thelper.checkpoint import find_checkpoint, load_checkpoint, resume_candidates

    log = logging.getLogger("thelper")
    try:
        first = find_checkpoint(path, "latest")
    except CheckpointError as missing:
        folder = Path(path) / "checkpoints"
        candidates = resume_candidates(folder) if Path(path).is_dir() and folder.is_dir() \
            else []
        if not candidates:
            raise
        for candidate in candidates:  # killed between its first checkpoint and latest
            try:
                data = load_checkpoint(candidate, map_location=map_location)
            except CheckpointError as exc:
                log.warning("%s", exc)
                continue
            log.warning("%s has no ckpt.latest.pt (the run stopped while writing its "
                        "checkpoints); resuming from the newest intact checkpoint %s", path,
                        candidate)
            return candidate, data
        raise CheckpointError(f"{missing}; and no checkpoint in {str(folder)!r} is intact") \
            from None
    try:
        return first, load_checkpoint(first, map_location=map_location)
    except CheckpointError as exc:
        folder = first.parent
        if Path(path).is_file():  # a file the user named: never switch to another one
            raise CheckpointError(
                f"{exc}; resume the session directory instead ('thelper resume "
                f"{session_dir_of(first)}') to continue from its newest intact checkpoint") \
                from None
        for candidate in resume_candidates(folder, exclude=first):
            try:
                data = load_checkpoint(candidate, map_location=map_location)
            except CheckpointError as other:
                log.warning("checkpoint %s is unreadable too: %s", candidate, other)
                continue
            log.warning("%s; falling back to the newest intact checkpoint %s", exc, candidate)
            return candidate, data
        raise CheckpointError(f"{exc}; no intact checkpoint remains in {str(folder)!r}") \
            from None
