"""The trackers a config names in its ``trackers:`` section, driven by the lifecycle hooks.

A config lists trackers like any other component::

    trackers:
      - type: mlflow
        params: {experiment: digits}

Each entry is a registered component of kind ``tracker`` (its params validated with the
rest of the config, see :class:`thelper.builtin_params.trackers.TrackersSection`). When a
session starts, this plugin builds each one (its factory receives ``session`` when its
signature names it) and then forwards every lifecycle hook to the objects that define a
method of the hook's name without the ``thelper_`` prefix, with the hook's arguments:
``session_start(session)``, ``epoch_end(session, epoch, metrics)``,
``log_scalars(session, split, step, values)``, ``evaluation_end(session, split, epoch,
metrics)``, ``log_figure(session, split, epoch, tag, figure)``,
``checkpoint_saved(session, path, epoch, is_best)`` and ``session_end(session, status,
error)``. A tracker that also has ``record_key`` (a string) and ``record()`` (returning
plain data) gets ``run.json[record_key] = record()`` each time the run record is written.

A tracker never fails a session: an exception it raises is logged (once per tracker and
hook) and the training goes on. Lifecycle hooks run on rank 0 only, so trackers see one
session under DDP too. The built objects are in ``session.extras["trackers"]``.
"""

from __future__ import annotations

from typing import Any

from thelper.hookspecs import hookimpl

KEY = "trackers"
_WARNED = "trackers-warned"


def _trackers(session: Any) -> list[Any]:
    return session.extras.get(KEY) or []


def _call(session: Any, method: str, *args: Any) -> None:
    for tracker in _trackers(session):
        fn = getattr(tracker, method, None)
        if fn is None:
            continue
        try:
            fn(session, *args)
        except Exception as exc:
            warned = session.extras.setdefault(_WARNED, set())
            key = (id(tracker), method)
            if key not in warned:
                warned.add(key)
                session.logger.warning("tracker %s failed in %s (the session goes on; "
                                       "further failures of this hook are not logged): %s: %s",
                                       type(tracker).__name__, method, type(exc).__name__, exc)


@hookimpl(trylast=True)  # after the run record's, whose git state and record they read
def thelper_session_start(session: Any) -> None:
    section = getattr(session.cfg, "trackers", None)
    specs = list(getattr(section, "root", None) or [])
    built = []
    for spec in specs:
        try:
            built.append(spec.build(session.plugins.registry, session=session))
        except Exception as exc:
            session.logger.warning("tracker %r cannot start (the session goes on without "
                                   "it): %s", spec.type, exc)
    session.extras[KEY] = built
    _call(session, "session_start")


@hookimpl
def thelper_epoch_end(session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    _call(session, "epoch_end", epoch, metrics)


@hookimpl
def thelper_log_scalars(session: Any, split: str, step: int, values: dict[str, float]) -> None:
    _call(session, "log_scalars", split, step, values)


@hookimpl
def thelper_evaluation_end(session: Any, split: str, epoch: int, metrics: dict[str, float]) -> None:
    _call(session, "evaluation_end", split, epoch, metrics)


@hookimpl
def thelper_log_figure(session: Any, split: str, epoch: int, tag: str, figure: Any) -> None:
    _call(session, "log_figure", split, epoch, tag, figure)


@hookimpl
def thelper_checkpoint_saved(session: Any, path: Any, epoch: int, is_best: bool) -> None:
    _call(session, "checkpoint_saved", path, epoch, is_best)


@hookimpl
def thelper_session_end(session: Any, status: str, error: BaseException | None) -> None:
    _call(session, "session_end", status, error)
    # kept until the run record's own session_end (trylast) has written their state
