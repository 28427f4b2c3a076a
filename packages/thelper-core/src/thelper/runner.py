"""Start, resume and evaluate sessions: the code behind ``thelper run`` and ``thelper resume``."""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from thelper.config import ConfigDocument, document_from_dict, validate_document
from thelper.exceptions import CheckpointError, ConfigError, SessionError
from thelper.logs import attach_file_handler, setup_logging
from thelper.plugins import ThelperPluginManager, get_plugin_manager
from thelper.runtime import Runtime
from thelper.session import (
    Session,
    SilentPlugins,
    create_session_dir,
    draw_seeds,
    flatten_hparams,
    probe_writable,
)

__all__ = ["run_session", "resume_session"]


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
    from thelper.checkpoint import find_checkpoint, set_rng_state

    registry = pm.registry
    log = session.logger
    runtime = session.runtime
    handler = attach_file_handler(session.logs_dir / "trainer.log") if session.is_main \
        else None
    started = False
    status, error = "failed", None
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
            given = session.extras.get("eval_checkpoint")
            trainer.test(Path(given) if given else find_checkpoint(session.session_dir, "best"))
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
        log.warning("interrupted; the latest checkpoint is kept, continue with 'thelper "
                    "resume %s'", session.session_dir)
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        if started:
            session.status = status
            try:
                session.plugins.session_end(session, status, error)
            finally:
                log.info("session %s: %s", session.name, status)
        elif error is not None:
            log.error("session %s failed before training started: %s", session.name, error)
            if session.is_main:
                _record_early_failure(session, error)
        for signum, old in previous.items():
            signal.signal(signum, old)
        restore_flags()
        if handler is not None:
            logging.getLogger("thelper").removeHandler(handler)
            handler.close()
    return session


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
    try:
        yield runtime
    finally:
        logger.setLevel(level)
        for h in handlers:
            h.removeFilter(prefix)
        runtime.close()


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
    """SIGINT/SIGTERM ask the trainer to stop at the next step, after a final checkpoint.

    A second signal stops at once (``KeyboardInterrupt``).
    """
    previous: dict[int, Any] = {}

    def _handler(signum: int, frame: Any) -> None:
        if getattr(session, "stop_requested", None):
            raise KeyboardInterrupt(f"signal {signum}")
        session.stop_requested = signum  # type: ignore[attr-defined]
        session.logger.warning("received signal %d: stopping after the current step (send it "
                               "again to stop at once)", signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, _handler)
        except ValueError:  # not in the main thread
            break
    return previous


def _record_early_failure(session: Session, error: BaseException) -> None:
    """Write a failed ``run.json`` when the session dies before the trackers started."""
    from thelper.session import now, platform_info, write_json

    path = session.session_dir / "run.json"
    if path.exists() and not session.resumed:
        return
    try:
        write_json(path, {
            "name": session.name, "status": "failed",
            "error": f"{type(error).__name__}: {error}", "config": session.config,
            "hparams": flatten_hparams(session.config), "metrics": session.history,
            "test": None, "seeds": session.seeds, "platform": platform_info(), "git": None,
            "started_at": session.started_at, "ended_at": now(),
        })
    except OSError:
        pass


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
        SessionError: The session directory exists or is not writable.
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
        CheckpointError: No usable checkpoint.
        ConfigError: The stored config (with overrides) is invalid, or the overrides
            change a seed (a resumed session replays its recorded seeds).
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

            ckpt_path, ckpt = Path(chosen), load_checkpoint(Path(chosen), map_location)
        return _resume(path, ckpt_path, ckpt, config, cfg, pm, runtime, eval_only)


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
    if ckpt is not None:
        where = f"epoch {ckpt.get('epoch')}"
        if ckpt.get("in_epoch"):
            where = f"epoch {ckpt['in_epoch']['epoch']}, step {ckpt.get('step')}"
        session.extras["resumed_from"] = f"{ckpt_path} ({where})"  # logged to trainer.log
    if eval_only and Path(path).is_file():  # evaluate the given checkpoint, not the best
        session.extras["eval_checkpoint"] = str(path)
    return _execute(session, pm, ckpt=ckpt, eval_only=eval_only)


def _fresh_restart(path: Path) -> dict[str, Any] | None:
    """The recorded config of a session directory that has no checkpoint at all."""
    import yaml

    ckpts = path / "checkpoints"
    if not (path.is_dir() and ckpts.is_dir()) or any(ckpts.glob("ckpt.*.pt")):
        return None
    latest = path / "config.latest.yaml"
    if not latest.is_file():
        return None
    return yaml.safe_load(latest.read_text()) or None


def load_newest_intact(path: Path, map_location: str | None = None
                       ) -> tuple[Path, dict[str, Any]]:
    """Load ``ckpt.latest.pt`` of a session (or the given file); when it is truncated or
    corrupted, fall back to the newest intact checkpoint of the session and say so.

    Raises:
        CheckpointError: No checkpoint can be loaded.
    """
    from thelper.checkpoint import find_checkpoint, load_checkpoint

    log = logging.getLogger("thelper")
    first = find_checkpoint(path, "latest")
    try:
        return first, load_checkpoint(first, map_location=map_location)
    except CheckpointError as exc:
        folder = first.parent
        candidates = sorted((p for p in folder.glob("ckpt.*.pt") if p != first
                             and p.name != "ckpt.best.pt"),
                            key=lambda p: p.stat().st_mtime, reverse=True)
        for candidate in candidates:
            try:
                data = load_checkpoint(candidate, map_location=map_location)
            except CheckpointError:
                log.warning("checkpoint %s is unreadable too", candidate)
                continue
            log.warning("%s; falling back to the newest intact checkpoint %s", exc, candidate)
            return candidate, data
        raise CheckpointError(f"{exc}; no intact checkpoint remains in {str(folder)!r}") \
            from None
