"""Rebuild a trained model, its task and its data from a session or checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from thelper.checkpoint import evaluated_weights, load_checkpoint
from thelper.exceptions import CheckpointError

__all__ = ["Trained", "load_trained", "session_data", "resolve_checkpoint"]


@dataclass
class Trained:
    """A model restored from a checkpoint.

    Attributes:
        model: The model in eval mode (on the CPU unless ``map_location`` says otherwise).
        task: The task it was trained for.
        checkpoint: The checkpoint dict (config, seeds, ...).
        path: The checkpoint file.
    """

    model: torch.nn.Module
    task: Any
    checkpoint: dict[str, Any]
    path: Path


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a session directory's ``ckpt.best.pt`` (else ``ckpt.latest.pt``).

    Raises:
        CheckpointError: Nothing loadable there.
    """
    p = Path(path)
    if p.is_file():
        return p
    for name in ("ckpt.best.pt", "ckpt.latest.pt"):
        candidate = p / "checkpoints" / name
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{str(p)!r} is neither a checkpoint file nor a session directory "
                          "with checkpoints/ckpt.best.pt")


def load_trained(path: str | Path, map_location: str = "cpu") -> Trained:
    """Rebuild the model of a checkpoint with its registered type and params, and load it
    with the weights the session evaluated (the EMA of the weights with ``trainer.ema``).

    Raises:
        CheckpointError: The checkpoint is unreadable or lacks the model description.
    """
    from thelper.plugins import get_plugin_manager
    from thelper.tasks import task_from_dict

    ckpt_path = resolve_checkpoint(path)
    ckpt = load_checkpoint(ckpt_path, map_location=map_location)
    if not ckpt.get("model_type") or not ckpt.get("task"):
        raise CheckpointError(f"{str(ckpt_path)!r} does not describe its model (model_type, "
                              "task); was it written by 'thelper run'?")
    registry = get_plugin_manager().registry
    task = task_from_dict(ckpt["task"])
    model = registry.build("model", ckpt["model_type"], dict(ckpt.get("model_params") or {}),
                           task=task)
    weights, _ = evaluated_weights(ckpt)  # the EMA when the session evaluated it
    model.load_state_dict(weights)
    model.eval()
    return Trained(model, task, ckpt, ckpt_path)


def session_data(ckpt: dict[str, Any], sets: tuple[str, ...] = (), pm: Any = None,
                 allow_imports: tuple[str, ...] = ()) -> Any:
    """Rebuild the datasets, splits and loaders of a checkpoint's session (same seeds).

    Args:
        ckpt: A loaded checkpoint (its ``config`` and ``seeds``).
        sets: ``--set`` overrides of the stored config.
        pm: Plugin manager (default: the process's).
        allow_imports: Modules the command line allows (``--allow-import``); the stored
            config's ``imports.allow`` counts only where they confirm it.

    Raises:
        ConfigError: The stored config is invalid or imports what this call does not allow.
    """
    from thelper.build import assemble
    from thelper.config import document_from_dict, validate_document

    if pm is None:
        from thelper.plugins import get_plugin_manager

        pm = get_plugin_manager()
    config = dict(ckpt["config"])
    cfg = validate_document(document_from_dict(config, list(sets)), pm.registry,
                            allow_imports=allow_imports)
    seeds = {k: int(v) for k, v in (ckpt.get("seeds") or config["seeds"]).items()}
    return assemble(cfg, seeds, pm.registry, model=False,
                    logger=logging.getLogger("thelper.tools")).data
