"""``thelper runs upload``: publish finished sessions to an MLflow tracking server.

A session's identity is its ``config_hash`` (tag ``thelper.config_hash`` on the MLflow run).
For each session directory:

1. When ``run.json``'s ``mlflow`` record names a run on this tracking URI (the live MLflow
   tracker created it, or an earlier upload did) and that run still exists, belongs to the
   chosen experiment and carries the record's ``thelper.config_hash`` tag, the missing
   values are **appended** to it: params not logged yet, metric values whose ``(key, step)``
   the server does not have, artifacts it does not list with the same size, and the final
   status. This is not a conflict.
2. Otherwise the experiment is searched for runs with the same ``config_hash``; if there is
   one, ``on_conflict`` decides (the strategies of the experiment-management seed):
   ``skip`` (leave it, upload nothing), ``error`` (stop with an error), ``new`` (upload as
   another run named ``<name>-<n>``), ``replace`` (delete the existing runs, then upload).
3. Otherwise a new run is created.

``run.json``'s ``mlflow`` record then names the run (so a second upload appends nothing
and reports ``up to date``). The session's lock is held while uploading: a session that is
still training is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from thelper.exceptions import ThelperError

__all__ = ["CONFLICT_STRATEGIES", "UploadConflictError", "UploadError", "upload_session"]

#: The ``--on-conflict`` strategies.
CONFLICT_STRATEGIES = ("skip", "error", "new", "replace")


class UploadError(ThelperError):
    """The tracking server refused or could not be reached (the message says which)."""


class UploadConflictError(UploadError):
    """``--on-conflict error`` and the experiment already has a run of this config_hash."""


def _normal(uri: str) -> str:
    """A tracking URI as stored in ``run.json`` and compared: no credentials, no end ``/``."""
    from thelper.records import redact_uri

    return redact_uri(uri).rstrip("/")


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """MLflow's INFO lines ("Creating initial MLflow database tables...") held back in the
    block, unless ``MLFLOW_LOGGING_LEVEL`` says otherwise; warnings still show."""
    import logging
    import os

    try:  # its import sets its loggers' levels: before ours
        import mlflow  # noqa: F401
    except ImportError:  # _client says what to install
        installed = False
    else:
        installed = True
    if not installed or os.environ.get("MLFLOW_LOGGING_LEVEL"):
        yield
        return
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(logger.getEffectiveLevel(), logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _client(uri: str) -> Any:
    import os

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise UploadError("thelper runs upload needs the MLflow client: pip install "
                          "'thelper-core[mlflow]'") from None
    return MlflowClient(tracking_uri=uri)


def _experiment(client: Any, name: str, uri: str) -> str:
    from thelper.trackers.mlflow import artifact_root

    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_root(uri))


def _existing_run(client: Any, run_id: str | None, experiment_id: str,
                  config_hash: str) -> Any:
    """The run ``run.json`` names, when it is still active, in ``experiment_id`` and tagged
    with this ``config_hash``; else ``None`` (the record is not trusted blindly: a run of
    another experiment or config is never appended to)."""
    from mlflow.exceptions import MlflowException

    if not run_id or not isinstance(run_id, str):
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or str(run.info.experiment_id) != str(experiment_id):
        return None
    if (run.data.tags.get("thelper.config_hash") or "") != config_hash:
        return None
    return run


def _remote_files(client: Any, run_id: str, path: str | None = None) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            out.update(_remote_files(client, run_id, f.path))
        else:
            out[f.path] = f.file_size
    return out


def upload_session(session_dir: str | Path, tracking_uri: str, on_conflict: str = "error", *,
                   experiment: str | None = None, parent_run_id: str | None = None,
                   log_artifacts: bool = True, client: Any = None,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Upload one session directory to an MLflow tracking server.

    Args:
        session_dir: The session directory (holding ``run.json``).
        tracking_uri: MLflow tracking URI (``http://host:5000``, ``sqlite:///...``).
        on_conflict: ``skip``, ``error``, ``new`` or ``replace`` (see the module's text).
        experiment: Experiment name; default: the one the session's MLflow tracker used,
            else ``thelper``.
        parent_run_id: Make a newly created run the child of this run.
        log_artifacts: Upload the config files, the best checkpoint, exports, reports and
            figures.
        client: An ``MlflowClient`` for ``tracking_uri`` (default: a new one).
        progress: Called with a short message at each stage.

    Returns:
        ``{"session", "action" ("created", "appended", "up to date", "new", "replaced",
        "skipped"), "run_id", "experiment_id", "metrics", "params", "artifacts"}``
        (counts sent).

    Raises:
        RecordError: No ``run.json`` in ``session_dir``, or its ``config_hash`` is not a
            SHA-256 (64 lowercase hex digits).
        SessionError: The session is in use (training).
        UploadConflictError: ``on_conflict="error"`` and a run of this config exists.
        UploadError: The server failed; what was sent stays sent, a new upload resumes.
    """
    from thelper.records import load_record
    from thelper.session import SessionLock

    if on_conflict not in CONFLICT_STRATEGIES:
        from thelper.exceptions import ConfigError

        raise ConfigError(f"--on-conflict {on_conflict!r}: use one of "
                          f"{', '.join(CONFLICT_STRATEGIES)}")
    session_dir = Path(session_dir)
    say = progress or (lambda _msg: None)
    record = load_record(session_dir)
    _check_hash(session_dir, record)
    uri = tracking_uri.rstrip("/")  # with its credentials, for the client only
    shown = _normal(tracking_uri)  # what is stored, compared and printed
    entries = [e for e in record.get("mlflow") or [] if isinstance(e, dict)]
    mine = next((e for e in entries if _normal(str(e.get("tracking_uri"))) == shown), None)
    if experiment is None:
        experiment = (mine or {}).get("experiment") or _configured_experiment(record)
    with SessionLock(session_dir):
        record = load_record(session_dir)  # as of now that nobody else writes it
        _check_hash(session_dir, record)
        try:
            return _upload(session_dir, record, uri, on_conflict, experiment, parent_run_id,
                           log_artifacts, client, mine, entries, say)
        except ThelperError:
            raise
        except Exception as exc:
            raise UploadError(f"uploading {str(session_dir)!r} to {shown} failed: "
                              f"{type(exc).__name__}: {_first_line(exc)}; what was sent "
                              "stays sent, run the upload again to complete it") from None


def _upload(session_dir: Path, record: dict[str, Any], uri: str, on_conflict: str,
            experiment: str, parent_run_id: str | None, log_artifacts: bool, client: Any,
            mine: dict[str, Any] | None, entries: list[dict[str, Any]],
            say: Callable[[str], None]) -> dict[str, Any]:
    from mlflow.entities import Metric, Param, RunTag

    from thelper.records import metric_points, read_steps
    from thelper.session import now, write_json
    from thelper.trackers.mlflow import (
        BATCH,
        PARAM_BATCH,
        STATUS,
        live_artifacts,
        params_of,
        tags_of,
    )

    client = client or _client(uri)
    exp_id = _experiment(client, experiment, uri)
    shown = _normal(uri)
    name = str(record.get("name") or session_dir.name)
    chash = str(record.get("config_hash") or "")
    run = _existing_run(client, (mine or {}).get("run_id"), exp_id, chash)
    action = "appended"
    if run is None:
        found = []
        if chash:
            found = client.search_runs(
                [exp_id], filter_string=f"tags.`thelper.config_hash` = '{chash}'",
                max_results=1000)
        run_name = name
        if found:
            if on_conflict == "skip":
                say(f"{name}: skipped (run {found[0].info.run_id} has config_hash "
                    f"{chash[:12]})")
                return {"session": str(session_dir), "action": "skipped",
                        "run_id": found[0].info.run_id, "experiment_id": exp_id,
                        "metrics": 0, "params": 0, "artifacts": 0}
            if on_conflict == "error":
                raise UploadConflictError(
                    f"experiment {experiment!r} on {shown} already has run "
                    f"{found[0].info.run_id} with config_hash {chash[:12]}... (the same "
                    f"config as {str(session_dir)!r}); choose --on-conflict skip, new or "
                    "replace")
            if on_conflict == "replace":
                for r in found:
                    client.delete_run(r.info.run_id)
                action = "replaced"
            else:  # new: the seed's "alternative name"
                taken = {r.info.run_name for r in found}
                n = 2
                while f"{name}-{n}" in taken:
                    n += 1
                run_name, action = f"{name}-{n}", "new"
        else:
            action = "created"
        tags = tags_of(record, session_dir)
        parent = parent_run_id or (mine or {}).get("parent_run_id")
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = client.create_run(exp_id, run_name=run_name, tags=tags,
                                start_time=_start_ms(record))
        fresh = True
    else:
        fresh = False
    run_id = run.info.run_id
    say(f"{name}: {action} run {run_id}")
    # params: only those the run does not have (MLflow params cannot change)
    have = {} if fresh else dict(run.data.params)
    params = [Param(k, v) for k, v in params_of(record.get("hparams") or {}).items()
              if k not in have]
    for i in range(0, len(params), PARAM_BATCH):
        client.log_batch(run_id, params=params[i:i + PARAM_BATCH])
    tags = tags_of(record, session_dir)
    if not fresh:
        tags = {k: v for k, v in tags.items() if run.data.tags.get(k) != v}
    if tags:
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    # metrics: every (key, step) the server does not have
    points = metric_points(record, read_steps(session_dir))
    if not fresh:
        known: dict[str, set[int]] = {}
        for key in {p[0] for p in points}:
            known[key] = {m.step for m in client.get_metric_history(run_id, key)}
        points = [p for p in points if p[2] not in known.get(p[0], ())]
    for i in range(0, len(points), BATCH):
        client.log_batch(run_id, metrics=[Metric(k, v, t, s) for k, v, s, t in
                                          points[i:i + BATCH]])
    # artifacts: those the server does not list with the same size
    sent_files = []
    if log_artifacts:
        remote = {} if fresh else _remote_files(client, run_id)
        for art in live_artifacts(session_dir, with_exports=True):
            if remote.get(art["path"]) == art["size"]:
                continue
            parent_dir = str(Path(art["path"]).parent)
            client.log_artifact(run_id, str(session_dir / art["path"]),
                                None if parent_dir == "." else parent_dir)
            sent_files.append(art["path"])
    status = STATUS.get(str(record.get("status")), "FAILED")
    if status == "RUNNING":  # recorded as running but not locked: the process died
        status = "KILLED"
    import contextlib
    import sys

    with contextlib.redirect_stdout(sys.stderr):  # MLflow prints the run's link: not on stdout
        client.set_terminated(run_id, status=status, end_time=_end_ms(record))
    if action == "appended" and not (params or tags or points or sent_files):
        action = "up to date"
    say(f"{name}: {len(points)} metric values, {len(params)} params, {len(sent_files)} "
        f"artifacts sent")
    entry = {**(mine or {}), "tracking_uri": shown, "experiment": experiment,
             "experiment_id": exp_id, "run_id": run_id,
             "delivered": {"metrics": len(metric_points(record, read_steps(session_dir))),
                           "params": len(record.get("hparams") or {}),
                           "artifacts": sorted({*((mine or {}).get("delivered") or {}).get(
                               "artifacts", []), *sent_files})},
             "pending": {"metrics": 0, "params": 0, "tags": 0, "artifacts": [],
                         "status": False},
             "last_error": None, "updated_at": now(), "uploaded_at": now()}
    record["mlflow"] = [e for e in entries if _normal(str(e.get("tracking_uri"))) != shown] \
        + [entry]
    write_json(session_dir / "run.json", record)
    return {"session": str(session_dir), "action": action, "run_id": run_id,
            "experiment_id": exp_id, "metrics": len(points), "params": len(params),
            "artifacts": len(sent_files)}


def _check_hash(session_dir: Path, record: dict[str, Any]) -> None:
    """Refuse a ``config_hash`` that is not a SHA-256 (it goes into a search filter)."""
    import re

    from thelper.records import RecordError

    chash = record.get("config_hash")
    if chash in (None, ""):
        return
    if not isinstance(chash, str) or not re.fullmatch(r"[0-9a-f]{64}", chash):
        raise RecordError(f"{str(session_dir / 'run.json')!r}: config_hash {str(chash)[:80]!r} "
                          "is not a SHA-256 (64 lowercase hex digits); restore the value "
                          "written by 'thelper run'")


def _configured_experiment(record: dict[str, Any]) -> str:
    for spec in (record.get("config") or {}).get("trackers") or []:
        if isinstance(spec, dict) and spec.get("type") == "mlflow":
            name = (spec.get("params") or {}).get("experiment")
            if name:
                return str(name)
    return "thelper"


def _start_ms(record: dict[str, Any]) -> int | None:
    from thelper.records import timestamp_ms

    value = timestamp_ms(record.get("started_at"), -1)
    return None if value < 0 else value


def _end_ms(record: dict[str, Any]) -> int | None:
    from thelper.records import timestamp_ms

    value = timestamp_ms(record.get("ended_at"), -1)
    return None if value < 0 else value


def _first_line(exc: BaseException) -> str:
    from thelper.records import redact_uri

    lines = redact_uri(str(exc)).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
