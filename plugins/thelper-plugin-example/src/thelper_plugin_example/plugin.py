"""Entry point of the example plugin (``[project.entry-points."thelper.plugins"]``).

This module is imported by every ``thelper`` command (``--help`` included), so it only
*describes* components, with lazy ``"module:attr"`` strings: the factories (torch code) are
imported when a component is built, and the params models (pydantic, in the torch-free
:mod:`thelper_plugin_example.params`) when a config names the component. Importing this
module imports neither torch nor pydantic, which keeps every command fast.

Components:
    dataset ``example_moons``, model ``example_rbf_net``, metric
    ``example_balanced_accuracy``.

Lifecycle hook:
    :func:`thelper_epoch_end` appends one row per split and epoch to
    ``<session_dir>/output/<name>/example-epochs.csv`` for sessions that use one of the
    components above.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo
from thelper_plugin_example import PLUGIN_PACKAGE

__all__ = ["thelper_register_components", "thelper_epoch_end", "EPOCHS_CSV"]

#: File written by :func:`thelper_epoch_end` under the session's ``output/<name>/``.
EPOCHS_CSV = "example-epochs.csv"


@hookimpl
def thelper_register_components() -> list[ComponentInfo]:
    """The example's dataset, model and metric (data only: nothing is imported here)."""
    return [
        ComponentInfo(
            kind="dataset",
            name="example_moons",
            factory="thelper_plugin_example.datasets:TwoMoons",
            params="thelper_plugin_example.params:MoonsParams",
            description="two interleaving half circles (scikit-learn make_moons), 2 classes",
            metadata={"provides_task": True},
        ),
        ComponentInfo(
            kind="model",
            name="example_rbf_net",
            factory="thelper_plugin_example.models:RBFNet",
            params="thelper_plugin_example.params:RBFNetParams",
            description="radial basis function network with learned centres and widths",
        ),
        ComponentInfo(
            kind="metric",
            name="example_balanced_accuracy",
            factory="thelper_plugin_example.metrics:BalancedAccuracy",
            params="thelper_plugin_example.params:BalancedAccuracyParams",
            description="mean per-class recall, in [0, 1] (robust to class imbalance)",
            metadata={"goal": "max"},
        ),
    ]


def _uses_this_plugin(session: Any) -> bool:
    """True when the session's config names one of this plugin's components.

    Lifecycle hooks run for *every* session once a plugin is installed; a plugin that writes
    files should only do so where the user asked for it.
    """
    registry = session.plugins.registry
    cfg = session.cfg
    slots = [("dataset", d.type) for d in cfg.datasets.values()]
    slots.append(("model", cfg.model.type))
    slots += [("metric", m.type) for m in cfg.trainer.metrics.values()]
    slots += [("metric", m.type) for m in cfg.trainer.test_metrics.values()]
    for kind, name in slots:
        canonical = registry.canonical(kind, name)
        if canonical is not None and registry.get(kind, canonical).factory.startswith(
            PLUGIN_PACKAGE + "."
        ):
            return True
    return False


def _header(path: Path, metrics: dict[str, dict[str, float]]) -> list[str]:
    """Columns of the CSV: the existing header (resumed sessions) or one built from the
    first epoch's metric names, ``loss`` first."""
    if path.is_file():
        with path.open(newline="") as f:
            first = next(csv.reader(f), None)
        if first:
            return first
    names = sorted({k for values in metrics.values() for k in values})
    names.sort(key=lambda k: (k != "loss", k == "lr"))
    return ["epoch", "split", *names]


@hookimpl
def thelper_epoch_end(session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    """Append ``epoch,split,<metric values>`` rows to ``output/<name>/example-epochs.csv``.

    One row per split (``train``, then ``valid`` when there is one). Metrics missing from a
    split (``lr`` under ``valid``) are left empty.
    """
    if not _uses_this_plugin(session):
        return
    path = session.output_dir / EPOCHS_CSV
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = _header(path, metrics)
    new = not path.is_file()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, restval="", extrasaction="ignore")
        if new:
            writer.writeheader()
        for split, values in metrics.items():
            writer.writerow(
                {"epoch": epoch, "split": split, **{k: f"{v:.6g}" for k, v in values.items()}}
            )
