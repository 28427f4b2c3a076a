"""Hook specifications of thelper (pluggy project ``"thelper"``).

A plugin is any module or object with functions named like the specs below, decorated with
:data:`hookimpl` (defined here, beside the specs; :mod:`thelper.plugins` and :mod:`thelper`
re-export it). Installed distributions expose their plugin module through the
``thelper.plugins`` entry-point group; the core registers its own built-ins through the same
plugin manager. Only :class:`thelper.plugins.ThelperPluginManager` calls these hooks.

Hooks fall in two families:

* **registration** (:func:`thelper_register_components`, :func:`thelper_add_commands`): called
  when the plugin manager loads, by every command; must stay cheap and must not import torch
  (nor pydantic: params models are lazy references too).
* **lifecycle** (``thelper_session_*``, ``thelper_epoch_end``, ``thelper_log_scalars``, ``thelper_checkpoint_saved``,
  ``thelper_log_figure``, ``thelper_evaluation_end``): called by the trainer while a session runs.
  Trackers such as the TensorBoard writer and the ``run.json`` record are implemented with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import typer

    from thelper.registry import ComponentInfo
    from thelper.session import Session

__all__ = ["hookspec", "hookimpl", "PROJECT"]

#: The pluggy project name: every hook is prefixed ``thelper_``.
PROJECT = "thelper"
#: Marks a hook specification (used in this module only).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a hook implementation in a plugin: decorate each ``thelper_*`` function with it.
#: Importable from here, from :mod:`thelper.plugins` and from :mod:`thelper`.
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def thelper_register_components() -> list[ComponentInfo]:
    """Return the components this plugin provides.

    Called once per plugin when the plugin manager builds its registry, before any config is
    read. Each :class:`~thelper.registry.ComponentInfo` names its kind, its ``type:`` name, a lazy
    ``"module:attr"`` factory reference and its params model, best as a lazy ``"module:Attr"``
    reference too (imported only when a config names the component). Must not import torch or
    the implementation modules, and should not import pydantic or the params modules: every
    command, ``thelper --help`` included, calls this hook.

    Returns:
        The plugin's components (an empty list is fine).
    """


@hookspec
def thelper_add_commands(app: typer.Typer) -> None:
    """Add sub-commands to the ``thelper`` CLI.

    Called once while the CLI is built, after the core commands exist.

    Args:
        app: The root Typer application; call ``app.command()`` or ``app.add_typer()`` on it.
    """


@hookspec
def thelper_session_start(session: Session) -> None:
    """A session starts (fresh or resumed), after its directory and logs exist.

    Args:
        session: The running session: name, directories, resolved config, task, seeds,
            ``start_epoch`` (1-based) and ``resumed``.
    """


@hookspec
def thelper_epoch_end(session: Session, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    """A training epoch (and its validation pass) finished.

    Args:
        session: The running session.
        epoch: 1-based number of the epoch that just finished.
        metrics: ``{split: {metric_name: value}}`` for ``train`` and (if any) ``valid``;
            always includes ``loss`` and, under ``train``, the learning rate ``lr``.
    """


@hookspec
def thelper_log_scalars(session: Session, split: str, step: int, values: dict[str, float]) -> None:
    """Per-step scalars, every ``trainer.log_every_n_steps`` optimizer steps (rank 0 only).

    Called for every optimizer step whose number is a multiple of ``log_every_n_steps``,
    in step order, at the end of each training epoch (also a stopped one): the losses stay on
    the device during the epoch and are read back in one transfer, so that the training step
    never waits for the device. The values are rank 0's: under DDP the other ranks' losses
    are not gathered for this (the per-epoch values of :func:`thelper_epoch_end` are reduced
    over every rank). The call is on the training thread: trackers should buffer.

    Args:
        session: The running session.
        split: ``"train"``.
        step: The global optimizer step (1-based, counted across epochs and resumes).
        values: ``{"loss": mean loss of the step's micro-batches (float), "lr": learning rate
            of the first parameter group, "epoch": 1-based epoch (as float)}``.
    """


@hookspec
def thelper_evaluation_end(
    session: Session, split: str, epoch: int, metrics: dict[str, float]
) -> None:
    """A stand-alone evaluation (the final test of the best model) finished.

    Args:
        session: The running session.
        split: The evaluated split (``"test"``, or ``"valid"`` when there is no test split).
        epoch: Epoch of the evaluated checkpoint (1-based).
        metrics: ``{metric_name: value}`` for every scalar metric.
    """


@hookspec
def thelper_log_figure(session: Session, split: str, epoch: int, tag: str, figure: Any) -> None:
    """A metric produced a figure (e.g. a confusion matrix) worth showing.

    The figure has already been written as PNG under the split's output directory.

    Args:
        session: The running session.
        split: ``train``, ``valid`` or ``test``.
        epoch: 1-based epoch number.
        tag: Name of the metric that produced the figure.
        figure: A ``matplotlib.figure.Figure``; do not close it.
    """


@hookspec
def thelper_checkpoint_saved(session: Session, path: Path, epoch: int, is_best: bool) -> None:
    """A checkpoint was written (atomically) to disk.

    Args:
        session: The running session.
        path: The checkpoint file (``ckpt.<epoch>.pt``, ``ckpt.latest.pt`` or ``ckpt.best.pt``).
        epoch: 1-based epoch number stored in the checkpoint.
        is_best: True when this epoch is the best one so far for the monitored metric.
    """


@hookspec
def thelper_session_end(session: Session, status: str, error: BaseException | None) -> None:
    """A session ends, successfully or not. Always called once per started session.

    Args:
        session: The session.
        status: ``"completed"``, ``"failed"`` or ``"interrupted"``.
        error: The exception that ended the session, if any.
    """
