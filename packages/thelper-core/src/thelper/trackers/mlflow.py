"""MLflow tracker: a session's params, metrics, tags and artifacts in an MLflow run.

Configured in the ``trackers:`` section (see :mod:`thelper.trackers.configured`)::

    trackers:
      - type: mlflow
        params: {tracking_uri: http://127.0.0.1:5000, experiment: digits}

Nothing talks to the server on the training thread: the hooks append to a buffer, and one
background thread creates the run and sends the buffer with ``MlflowClient.log_batch`` (up
to 1000 metrics a request; one request per value costs 17-60 ms on a local server). When
the server fails or is slow, the thread warns once, keeps buffering and retries with an
exponential backoff (0.5 s doubling to 30 s); when the session ends it waits at most
``flush_timeout`` seconds, then lists what was not delivered in ``run.json``'s ``mlflow``
record, from which ``thelper runs upload`` completes the same run later.

Metric keys (shared with ``thelper runs upload``, see :func:`thelper.records.metric_points`):
``<split>/<metric>`` at step = epoch (``train/loss``, ``train/lr``, ``valid/accuracy``),
``step/loss`` and ``step/lr`` at the optimizer step (``trainer.params.log_every_n_steps``),
``test/<metric>`` for the final evaluation of the best model.

The client side needs ``mlflow-skinny`` (and SQLAlchemy and Alembic for the default local
``sqlite:`` store): ``pip install 'thelper-core[mlflow]'``. Unless they are set already, the
tracker sets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=10`` in
the environment: it retries by itself, off the training thread, instead of MLflow's
blocking retries of several minutes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

__all__ = ["MlflowTracker", "default_tracking_uri", "PARENT_ENV", "params_of", "tags_of",
           "live_artifacts", "STATUS"]

#: Environment variable naming the parent run of every MLflow run started in this process
#: (the ``parent_run_id`` param wins over it).
PARENT_ENV = "THELPER_MLFLOW_PARENT_RUN_ID"
#: MLflow run status of each ``run.json`` status.
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED",
          "running": "RUNNING"}
#: Metrics per ``log_batch`` request (MLflow's limit is 1000).
BATCH = 1000
#: Params per ``log_batch`` request (MLflow's limit is 100).
PARAM_BATCH = 100
#: MLflow's longest param value (characters); longer values are cut.
MAX_PARAM = 6000
MAX_BACKOFF = 30.0


def default_tracking_uri(save_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<save_dir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path(save_dir).resolve() / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``<folder of the db>/mlartifacts`` for a
    local ``sqlite:`` store (MLflow's default would be the current directory), else the
    server's choice (``None``)."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    return None


def params_of(hparams: dict[str, Any]) -> dict[str, str]:
    """MLflow params (strings of at most :data:`MAX_PARAM` characters) of ``hparams``."""
    return {str(k)[:250]: str(v)[:MAX_PARAM] for k, v in hparams.items()}


def tags_of(record: dict[str, Any], session_dir: Path, extra: dict[str, str] | None = None
            ) -> dict[str, str]:
    """MLflow tags of a run record: ``thelper.config_hash`` (the run's identity),
    ``thelper.session``, ``thelper.session_dir``, ``thelper.status``, the description
    (``mlflow.note.content``), one ``label.<label>`` per label, git's commit, remote and
    dirty flag (``mlflow.source.git.commit``, ``mlflow.source.git.repoURL``,
    ``thelper.git.dirty``), then ``extra``."""
    tags = {"thelper.config_hash": str(record.get("config_hash") or ""),
            "thelper.session": str(record.get("name") or ""),
            "thelper.session_dir": str(Path(session_dir).resolve()),
            "thelper.status": str(record.get("status") or "")}
    if record.get("description"):
        tags["mlflow.note.content"] = str(record["description"])
    for label in record.get("labels") or []:
        tags[f"label.{label}"] = "true"
    git = record.get("git") if isinstance(record.get("git"), dict) else {}
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = git["commit"]
    if git.get("remote"):
        tags["mlflow.source.git.repoURL"] = _shown(git["remote"])
    if "dirty" in git:
        tags["thelper.git.dirty"] = str(bool(git["dirty"])).lower()
    tags.update(extra or {})
    return tags


def live_artifacts(session_dir: Path, *, with_exports: bool = False) -> list[dict[str, Any]]:
    """The files a run gets as artifacts: the config files (``config.latest.yaml``,
    ``config.sources.yaml``), the best checkpoint, the reports and figures of ``output/``
    (TensorBoard events left out) and, with ``with_exports``, ``export/``. Entries as in
    :func:`thelper.records.collect_artifacts`."""
    from thelper.records import collect_artifacts

    keep = []
    for a in collect_artifacts(session_dir):
        kind, path = a["kind"], a["path"]
        if (kind == "config" and not path.startswith("logs/")) \
                or (kind == "checkpoint" and path == "checkpoints/ckpt.best.pt") \
                or kind in ("report", "figure") or (with_exports and kind == "export"):
            keep.append(a)
    return keep


class MlflowTracker:
    """Logs one session to one MLflow run, off the training thread.

    Built by :mod:`thelper.trackers.configured` from the ``trackers:`` section; the
    constructor arguments are :class:`thelper.builtin_params.trackers.MlflowTrackerParams`.

    Attributes:
        record_key: ``"mlflow"``: ``run.json["mlflow"]`` is :meth:`record`.
    """

    record_key = "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str = "thelper",
                 run_name: str | None = None, tags: dict[str, str] | None = None,
                 log_artifacts: bool = True, parent_run_id: str | None = None,
                 flush_timeout: float = 30.0) -> None:
        self.tracking_uri = tracking_uri
        self._shown_uri = _shown(tracking_uri) if tracking_uri else None
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.log_artifacts = log_artifacts
        self.parent_run_id = parent_run_id or os.environ.get(PARENT_ENV) or None
        self.flush_timeout = flush_timeout
        self.run_id: str | None = None
        self._run_ready = False  # the run exists (created, or resumed and checked)
        self.experiment_id: str | None = None
        self._lock = threading.Condition()
        self._metrics: deque[tuple[str, float, int, int]] = deque()
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._artifacts: list[dict[str, Any]] = []
        self._status: str | None = None
        self._sent = {"metrics": 0, "params": 0, "artifacts": []}
        self._closing = False
        self._stop = False
        self._failures = 0
        self._last_error: str | None = None
        self._warned = False
        self._thread: threading.Thread | None = None
        self._previous: list[dict[str, Any]] = []
        self._logger: Any = None

    # ------------------------------------------------------------------ hooks
    def session_start(self, session: Any) -> None:
        from thelper.records import RecordError, load_record, redact_uri

        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
            os.environ.setdefault(var, value)
        self._logger = session.logger
        self.session_dir = Path(session.session_dir)
        self.tracking_uri = self.tracking_uri or default_tracking_uri(self.session_dir.parent)
        # run.json, the logs and the console get the URI without user:password@
        self._shown_uri = redact_uri(self.tracking_uri).rstrip("/")
        try:  # a resume continues the run the record names
            previous = load_record(self.session_dir).get("mlflow") if session.resumed else None
        except RecordError:
            previous = None
        self._previous = [e for e in previous or [] if isinstance(e, dict)]
        for entry in self._previous:
            if _shown(entry.get("tracking_uri")) == self._shown_uri and entry.get("run_id"):
                self.run_id = entry["run_id"]
                self.experiment_id = entry.get("experiment_id")
        record = {"config_hash": _hash(session.config), "name": session.name,
                  "description": session.config.get("description"),
                  "labels": session.config.get("labels"), "status": "running",
                  "git": _git(session)}
        tags = tags_of(record, self.session_dir, self.tags)
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        with self._lock:
            self._params.update(params_of(session.hparams))
            self._tags.update(tags)
        self._thread = threading.Thread(target=self._run, name="thelper-mlflow", daemon=True)
        self._thread.start()

    def epoch_end(self, session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
        ts = int(time.time() * 1000)
        self._add([(f"{split}/{k}", v, epoch, ts) for split, values in metrics.items()
                   for k, v in values.items()])

    def log_scalars(self, session: Any, split: str, step: int, values: dict[str, float]) -> None:
        ts = int(time.time() * 1000)
        self._add([(f"step/{k}", v, step, ts) for k, v in values.items() if k != "epoch"],
                  notify=False)

    def evaluation_end(self, session: Any, split: str, epoch: int,
                       metrics: dict[str, float]) -> None:
        prefix = "test" if split == "test" else f"final/{split}"
        ts = int(time.time() * 1000)
        self._add([(f"{prefix}/{k}", v, epoch, ts) for k, v in metrics.items()])

    def session_end(self, session: Any, status: str, error: BaseException | None) -> None:
        artifacts = []
        if self.log_artifacts:
            try:
                artifacts = live_artifacts(self.session_dir)
            except OSError as exc:
                self._logger.warning("MLflow tracker: cannot list the artifacts: %s", exc)
        with self._lock:
            self._artifacts.extend(artifacts)
            self._tags["thelper.status"] = status
            self._status = STATUS.get(status, "FAILED")
            self._closing = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(self.flush_timeout)
        with self._lock:
            self._stop = True  # a slow request still running: the record says pending
            self._lock.notify_all()
        pending = self._pending()
        if any(pending.values()):
            self._logger.warning(
                "MLflow tracker: not delivered to %s: %s (%s); send them with 'thelper runs "
                "upload %s --to %s'", self._shown_uri, _describe(pending),
                self._last_error or "the flush timed out", self.session_dir, self._shown_uri)
        elif self.run_id:
            self._logger.info("MLflow run %s in %s (experiment %r)", self.run_id,
                              self._shown_uri, self.experiment)

    # ------------------------------------------------------------------ state
    def record(self) -> list[dict[str, Any]]:
        """``run.json["mlflow"]``: one entry per tracking URI this session was sent to,
        ``{tracking_uri, experiment, experiment_id, run_id, parent_run_id, delivered:
        {metrics, params, artifacts}, pending: {metrics, params, tags, artifacts, status},
        last_error, updated_at}`` (counts, and artifact paths)."""
        from thelper.session import now

        with self._lock:
            entry = {"tracking_uri": self._shown_uri, "experiment": self.experiment,
                     "experiment_id": self.experiment_id, "run_id": self.run_id,
                     "parent_run_id": self.parent_run_id,
                     "delivered": {"metrics": self._sent["metrics"],
                                   "params": self._sent["params"],
                                   "artifacts": list(self._sent["artifacts"])},
                     "pending": self._pending_unlocked(), "last_error": self._last_error,
                     "updated_at": now()}
        others = [e for e in self._previous
                  if _shown(e.get("tracking_uri")) != self._shown_uri]
        return [*others, entry]

    def _pending_unlocked(self) -> dict[str, Any]:
        return {"metrics": len(self._metrics), "params": len(self._params),
                "tags": len(self._tags), "artifacts": [a["path"] for a in self._artifacts],
                "status": self._status is not None or not self._closing}

    def _pending(self) -> dict[str, Any]:
        with self._lock:
            p = self._pending_unlocked()
        p["status"] = self._status is not None
        return p

    def _add(self, points: list[tuple[str, Any, int, int]], notify: bool = True) -> None:
        import math

        good = [(k, float(v), int(s), t) for k, v, s, t in points
                if isinstance(v, int | float) and not isinstance(v, bool)
                and math.isfinite(float(v))]
        with self._lock:
            self._metrics.extend(good)
            if notify or len(self._metrics) >= BATCH:
                self._lock.notify_all()

    # ------------------------------------------------------------------ sender thread
    def _run(self) -> None:
        client = None
        delay = 0.0
        while True:
            with self._lock:
                if self._stop:
                    return
                if delay:
                    self._lock.wait(delay)
                elif not self._closing:
                    self._lock.wait(1.0)
                if self._stop:
                    return
            try:
                if client is None:
                    from mlflow import MlflowClient

                    client = MlflowClient(tracking_uri=self.tracking_uri)
                self._send(client)
            except Exception as exc:  # the server is down, slow or refuses: retry later
                self._failures += 1
                self._last_error = f"{type(exc).__name__}: {_short(exc)}"
                delay = min(MAX_BACKOFF, 0.5 * 2 ** (self._failures - 1))
                if not self._warned:
                    self._warned = True
                    self._logger.warning(
                        "MLflow tracker: cannot log to %s (%s); the values are kept and sent "
                        "again later, the training goes on", self._shown_uri,
                        self._last_error)
                continue
            if self._failures:
                self._logger.info("MLflow tracker: %s reachable again", self._shown_uri)
            self._failures, delay = 0, 0.0
            with self._lock:
                if self._closing and self._status is None and not self._metrics \
                        and not self._params and not self._tags and not self._artifacts:
                    return

    def _send(self, client: Any) -> None:
        from mlflow.entities import Metric, RunTag

        if not self._run_ready:  # a new run, or the resumed one checked once
            self._create_run(client)
            self._run_ready = True
        with self._lock:
            params = dict(self._params)
            tags = dict(self._tags)
        if params:
            self._log_params(client, params)
            with self._lock:
                for k in params:
                    self._params.pop(k, None)
                self._sent["params"] += len(params)
        if tags:
            client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            with self._lock:
                for k, v in tags.items():
                    if self._tags.get(k) == v:
                        self._tags.pop(k)
        while True:
            with self._lock:
                batch = [self._metrics[i] for i in range(min(BATCH, len(self._metrics)))]
            if not batch:
                break
            client.log_batch(self.run_id, metrics=[Metric(k, v, t, s) for k, v, s, t in batch])
            with self._lock:
                for _ in batch:
                    self._metrics.popleft()
                self._sent["metrics"] += len(batch)
        while True:
            with self._lock:
                if not self._artifacts:
                    break
                art = self._artifacts[0]
            parent = str(Path(art["path"]).parent)
            client.log_artifact(self.run_id, str(self.session_dir / art["path"]),
                                None if parent == "." else parent)
            with self._lock:
                self._artifacts.pop(0)
                self._sent["artifacts"].append(art["path"])
        with self._lock:
            status = self._status if self._closing else None
        if status is not None:
            client.set_terminated(self.run_id, status=status)
            with self._lock:
                self._status = None

    def _create_run(self, client: Any) -> None:
        if self.experiment_id is None:
            exp = client.get_experiment_by_name(self.experiment)
            if exp is None:
                self.experiment_id = client.create_experiment(
                    self.experiment, artifact_location=artifact_root(self.tracking_uri))
            else:
                self.experiment_id = exp.experiment_id
        if self.run_id is not None and self._resumed_run_matches(client):
            return
        with self._lock:
            tags = dict(self._tags)
        run = client.create_run(self.experiment_id, run_name=self.run_name or tags.get(
            "thelper.session"), tags=tags)
        self.run_id = run.info.run_id

    def _resumed_run_matches(self, client: Any) -> bool:
        """True when the run that ``run.json`` names (a resume) still exists on the server,
        is not deleted, and is this session's: its ``thelper.session`` tag and experiment
        match. Otherwise (a copied or edited session folder, a run deleted since, another
        server at the same address) the run id is dropped with a warning and a new run is
        created, instead of logging into someone else's run. A server error is raised (the
        sending loop retries it)."""
        from mlflow.exceptions import MlflowException

        try:
            run = client.get_run(self.run_id)
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
            run = None
        with self._lock:
            name = self._tags.get("thelper.session")
        why = None
        if run is None:
            why = "no longer exists"
        elif run.info.lifecycle_stage != "active":
            why = "was deleted"
        elif run.data.tags.get("thelper.session") != name:
            why = f"belongs to session {run.data.tags.get('thelper.session')!r}"
        elif client.get_experiment(run.info.experiment_id).name != self.experiment:
            why = "is in another experiment"
        if why is None:
            self.experiment_id = run.info.experiment_id
            return True
        self._logger.warning("MLflow tracker: run %s named in run.json %s on %s; logging to a "
                             "new run", self.run_id, why, self._shown_uri)
        self.run_id = None
        exp = client.get_experiment_by_name(self.experiment)
        self.experiment_id = exp.experiment_id if exp is not None else \
            client.create_experiment(self.experiment,
                                     artifact_location=artifact_root(self.tracking_uri))
        return False

    def _log_params(self, client: Any, params: dict[str, str]) -> None:
        """Params in batches of 100; a param that exists with another value (a resume
        with a changed setting) is kept as the run first had it, with a warning."""
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        items = list(params.items())
        for i in range(0, len(items), PARAM_BATCH):
            chunk = items[i:i + PARAM_BATCH]
            try:
                client.log_batch(self.run_id, params=[Param(k, v) for k, v in chunk])
            except MlflowException as exc:
                if getattr(exc, "error_code", "") != "INVALID_PARAMETER_VALUE":
                    raise
                existing = client.get_run(self.run_id).data.params
                fresh = [Param(k, v) for k, v in chunk if k not in existing]
                changed = [k for k, v in chunk if k in existing and existing[k] != v]
                if fresh:
                    client.log_batch(self.run_id, params=fresh)
                if changed:
                    self._logger.warning("MLflow tracker: params %s changed since the run "
                                         "was created; MLflow keeps the first values",
                                         ", ".join(changed[:5]))


def _hash(config: dict[str, Any]) -> str:
    from thelper.config import config_hash

    return config_hash(config)


def _git(session: Any) -> dict[str, Any] | None:
    """The run record's git state (its ``session_start`` ran before the trackers')."""
    git = (session.extras.get("run-record") or {}).get("git")
    return git if isinstance(git, dict) else None


def _shown(uri: Any) -> str:
    """A tracking URI as stored in ``run.json``: no ``user:password@``, no end ``/``."""
    from thelper.records import redact_uri

    return redact_uri(str(uri)).rstrip("/")


def _short(exc: BaseException) -> str:
    from thelper.records import redact_uri

    text = redact_uri(str(exc)).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _describe(pending: dict[str, Any]) -> str:
    parts = []
    if pending.get("metrics"):
        parts.append(f"{pending['metrics']} metric values")
    if pending.get("params"):
        parts.append(f"{pending['params']} params")
    if pending.get("tags"):
        parts.append(f"{pending['tags']} tags")
    if pending.get("artifacts"):
        parts.append(f"{len(pending['artifacts'])} artifacts")
    if pending.get("status"):
        parts.append("the final status")
    return ", ".join(parts) or "nothing"
