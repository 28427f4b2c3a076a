"""Params models of the ``trackers:`` and ``labels:`` config sections and of the MLflow tracker.

Torch-free and MLflow-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

import re
from typing import Literal

from pydantic import Field, RootModel, field_validator

from thelper.config.slots import Slot
from thelper.params import Params

__all__ = ["TrackersSection", "LabelsSection", "MlflowTrackerParams", "URI_SCHEMES"]

#: Tracking URI schemes the MLflow tracker accepts (a plain path is a local ``file:`` store).
URI_SCHEMES = ("http", "https", "sqlite", "file", "postgresql", "mysql", "mssql",
               "databricks")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


class TrackersSection(RootModel[list[Slot[Literal["tracker"]]]]):
    """Where the session is also recorded, besides ``run.json`` and TensorBoard: a list of
    registered trackers, ``[{type: mlflow, params: {...}}]``."""


class LabelsSection(RootModel[list[str]]):
    """Free labels of the session (``run.json``'s ``labels``, MLflow tags ``label.<name>``),
    e.g. ``[baseline, digits]``."""


def check_tracking_uri(value: str | None) -> str | None:
    """Refuse a tracking URI whose scheme MLflow would hand to an arbitrary plugin.

    Raises:
        ValueError: The scheme is not one of :data:`URI_SCHEMES`.
    """
    if value is None:
        return None
    m = _SCHEME.match(value)
    scheme = m.group(1).split("+")[0].lower() if m else None
    if scheme is not None and len(scheme) > 1 and scheme not in URI_SCHEMES:
        raise ValueError(f"unsupported tracking URI scheme {scheme!r}; use one of "
                         f"{', '.join(URI_SCHEMES)} (e.g. http://127.0.0.1:5000 or "
                         "sqlite:///mlflow.db), or a local folder")
    return value


class MlflowTrackerParams(Params):
    """Log the session to an MLflow tracking server or a local MLflow store."""

    tracking_uri: str | None = None
    """MLflow tracking URI (``http://host:5000``, ``sqlite:///path/mlflow.db``, a folder).
    Default: the ``MLFLOW_TRACKING_URI`` environment variable when set, else
    ``sqlite:///<save_dir>/mlflow.db``, a local store beside the session directories (no
    server needed; its artifacts go to ``<save_dir>/mlartifacts``)."""
    experiment: str = Field("thelper", min_length=1, max_length=500)
    """MLflow experiment name (created when missing)."""
    run_name: str | None = Field(None, max_length=250)
    """MLflow run name; default: the session name."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra MLflow tags of the run (``{team: vision}``)."""
    log_artifacts: bool = True
    """Upload the config files, the best checkpoint, the reports and the figures when the
    session ends."""
    parent_run_id: str | None = Field(None, pattern=r"^[0-9a-zA-Z_-]{1,64}$")
    """Make the run a child of this MLflow run (tag ``mlflow.parentRunId``), as the runs of a
    grid under their parent. Default: the ``THELPER_MLFLOW_PARENT_RUN_ID`` environment
    variable when set."""
    flush_timeout: float = Field(30.0, ge=0)
    """Seconds the end of the session waits for undelivered values to reach the server;
    what is still undelivered then is listed in ``run.json`` (``thelper runs upload``
    sends it later)."""

    _uri = field_validator("tracking_uri")(classmethod(
        lambda cls, v: check_tracking_uri(v)))
