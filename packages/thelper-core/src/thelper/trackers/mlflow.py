"""MLflow tracker: a session's params, metrics, tags and artifacts in an MLflow run.

Configured in the ``trackers:`` section (see :mod:`thelper.trackers.configured`)::

    trackers:
      - type: mlflow
        params: {tracking_uri: http://127.0.0.1:5000, experiment: digits}

Nothing talks to the server in the training process: the hooks append to a buffer that is
written, without blocking, to a child process (:mod:`thelper.trackers._mlflow_sender`) which
creates the run and sends the values with ``MlflowClient.log_batch`` (up to 1000 metrics a
request; one request per value costs 17-60 ms on a local server). In a thread of the
training process, the client's CPU work held the GIL against the training (epochs 1.01-1.18x
slower); in its own process it costs the training nothing but a pipe. When the server fails
or is slow, the sender warns once, keeps buffering and retries with an exponential backoff
(0.5 s doubling to 30 s); when the session ends the tracker waits at most ``flush_timeout``
seconds, then lists what was not delivered in ``run.json``'s ``mlflow`` record, from which
``thelper runs upload`` completes the same run later.

Metric keys (shared with ``thelper runs upload``, see :func:`thelper.records.metric_points`):
``<split>/<metric>`` at step = epoch (``train/loss``, ``train/lr``, ``valid/accuracy``),
``step/loss`` and ``step/lr`` at the optimizer step (``trainer.params.log_every_n_steps``),
``test/<metric>`` for the final evaluation of the best model.

The client side needs ``mlflow-skinny`` (and SQLAlchemy and Alembic for the default local
``sqlite:`` store): ``pip install 'thelper-core[mlflow]'``. Unless they are set already, the
sender process gets ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=10``
in its environment: it retries by itself instead of MLflow's blocking retries of several
minutes; and ``MLFLOW_LOGGING_LEVEL=WARNING``: MLflow's INFO lines stay out of the console.
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
    """Logs one session to one MLflow run, from a child process.

    Built by :mod:`thelper.trackers.configured` from the ``trackers:`` section; the
    constructor arguments are :class:`thelper.builtin_params.trackers.MlflowTrackerParams`.
    The hooks only append to a buffer that is written, without blocking, to the standard
    input of the sender process (:mod:`thelper.trackers._mlflow_sender`) at each epoch's
    end; a thread reads the sender's reports (run id, what was delivered, its warnings).

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
        self.experiment_id: str | None = None
        self._lock = threading.Lock()
        # the sender's last report, and what it has not seen yet (by sequence number)
        self._state: dict[str, Any] = {
            "delivered": {"metrics": 0, "params": 0, "artifacts": []},
            "pending": {"metrics": 0, "params": 0, "tags": 0, "artifacts": [],
                        "status": True},
            "last_error": None, "seen": 0}
        self._unseen: deque[tuple[int, dict[str, Any]]] = deque()
        self._seq = 0
        self._points: list[list[Any]] = []  # metric points not yet put in a message
        self._out = bytearray()  # messages not yet written to the pipe
        self._proc: Any = None
        self._fd: int | None = None
        self._reader: threading.Thread | None = None
        self._previous: list[dict[str, Any]] = []
        self._logger: Any = None

    # ------------------------------------------------------------------ hooks
    def session_start(self, session: Any) -> None:
        from thelper.records import RecordError, load_record, redact_uri

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
        config = {"tracking_uri": self.tracking_uri, "shown_uri": self._shown_uri,
                  "experiment": self.experiment, "run_name": self.run_name,
                  "run_id": self.run_id, "experiment_id": self.experiment_id,
                  "session_dir": str(self.session_dir)}
        params = params_of(session.hparams)
        self._start_sender()
        self._message({"op": "start", "config": config, "params": params, "tags": tags},
                      {"params": len(params), "tags": len(tags)})

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
        self._flush_points()
        self._message({"op": "close", "artifacts": artifacts,
                       "tags": {"thelper.status": status},
                       "status": STATUS.get(status, "FAILED")},
                      {"tags": 1, "artifacts": [a["path"] for a in artifacts], "status": True})
        self._finish_sender(time.monotonic() + self.flush_timeout)
        pending = self._pending()
        if any(pending.values()):
            self._logger.warning(
                "MLflow tracker: not delivered to %s: %s (%s); send them with 'thelper runs "
                "upload %s --to %s'", self._shown_uri, _describe(pending),
                self._state.get("last_error") or "the flush timed out", self.session_dir,
                self._shown_uri)
        elif self.run_id:
            self._logger.info("MLflow run %s in %s (experiment %r)", self.run_id,
                              self._shown_uri, self.experiment)

    # ------------------------------------------------------------------ state
    def record(self) -> list[dict[str, Any]]:
        """``run.json["mlflow"]``: one entry per tracking URI this session was sent to,
        ``{tracking_uri, experiment, experiment_id, run_id, parent_run_id, delivered:
        {metrics, params, artifacts}, pending: {metrics, params, tags, artifacts, status},
        last_error, updated_at}`` (counts, and artifact paths). ``pending`` counts what
        the sender process has not delivered and what it has not received yet."""
        from thelper.session import now

        with self._lock:
            state = self._state
            entry = {"tracking_uri": self._shown_uri, "experiment": self.experiment,
                     "experiment_id": self.experiment_id, "run_id": self.run_id,
                     "parent_run_id": self.parent_run_id,
                     "delivered": {"metrics": state["delivered"]["metrics"],
                                   "params": state["delivered"]["params"],
                                   "artifacts": list(state["delivered"]["artifacts"])},
                     "pending": self._pending_unlocked(), "last_error": state["last_error"],
                     "updated_at": now()}
        others = [e for e in self._previous
                  if _shown(e.get("tracking_uri")) != self._shown_uri]
        return [*others, entry]

    def _pending_unlocked(self) -> dict[str, Any]:
        p = self._state["pending"]
        pending = {"metrics": p["metrics"] + len(self._points), "params": p["params"],
                   "tags": p["tags"], "artifacts": list(p["artifacts"]),
                   "status": bool(p["status"])}
        for _, contrib in self._unseen:
            for key in ("metrics", "params", "tags"):
                pending[key] += contrib.get(key, 0)
            pending["artifacts"] += contrib.get("artifacts", [])
            pending["status"] = pending["status"] or contrib.get("status", False)
        return pending

    def _pending(self) -> dict[str, Any]:
        with self._lock:
            return self._pending_unlocked()

    # ------------------------------------------------------------------ the sender process
    def _start_sender(self) -> None:
        import subprocess
        import sys

        env = dict(os.environ)
        for var, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0"),
                           ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10"),
                           # MLflow's INFO lines ("Creating initial MLflow database
                           # tables...") would land in the training's console
                           ("MLFLOW_LOGGING_LEVEL", "WARNING")):
            env.setdefault(var, value)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "thelper.trackers._mlflow_sender"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True)
        except OSError as exc:
            self._state["last_error"] = f"cannot start the sender process: {exc}"
            self._logger.warning("MLflow tracker: %s; nothing is sent, 'thelper runs upload' "
                                 "can send the session later", self._state["last_error"])
            return
        self._fd = self._proc.stdin.fileno()
        os.set_blocking(self._fd, False)
        self._reader = threading.Thread(target=self._read_reports, name="thelper-mlflow",
                                        daemon=True)
        self._reader.start()

    def _read_reports(self) -> None:
        import json

        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("op") == "log":
                getattr(self._logger, msg.get("level", "warning"), self._logger.warning)(
                    "%s", msg.get("msg", ""))
            elif msg.get("op") == "state":
                with self._lock:
                    self._state = msg
                    # the sender's word: it may have dropped a resumed run that is gone
                    self.run_id = msg.get("run_id")
                    self.experiment_id = msg.get("experiment_id")
                    while self._unseen and self._unseen[0][0] <= msg.get("seen", 0):
                        self._unseen.popleft()

    def _add(self, points: list[tuple[str, Any, int, int]], notify: bool = True) -> None:
        import math

        good = [[k, float(v), int(s), t] for k, v, s, t in points
                if isinstance(v, int | float) and not isinstance(v, bool)
                and math.isfinite(float(v))]
        with self._lock:
            self._points.extend(good)
        if notify or len(self._points) >= BATCH:
            self._flush_points()

    def _flush_points(self) -> None:
        with self._lock:
            points, self._points = self._points, []
        if points:
            self._message({"op": "metrics", "points": points}, {"metrics": len(points)})

    def _message(self, msg: dict[str, Any], contrib: dict[str, Any]) -> None:
        """Queues one message for the sender and writes what the pipe takes now."""
        import json

        with self._lock:
            self._seq += 1
            msg["seq"] = self._seq
            self._unseen.append((self._seq, contrib))
            if self._fd is not None:
                self._out += (json.dumps(msg) + "\n").encode()
        self._write()

    def _write(self) -> bool:
        """Writes the queued bytes to the sender's pipe without blocking; True when all
        were written."""
        with self._lock:
            while self._out and self._fd is not None:
                try:
                    n = os.write(self._fd, self._out)
                except BlockingIOError:
                    return False
                except OSError:  # the sender died; its reports say what it delivered
                    self._out.clear()
                    self._fd = None
                    return False
                del self._out[:n]
            return not self._out

    def _finish_sender(self, deadline: float) -> None:
        """Writes the rest, closes the sender's input and waits until ``deadline`` for it to
        deliver everything; a sender still running then is killed."""
        import select
        import subprocess

        if self._proc is None:
            return
        while not self._write() and self._fd is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            select.select([], [self._fd], [], left)
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._fd = None
        killed = False
        try:
            self._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # what it has not delivered stays pending
            self._proc.kill()
            self._proc.wait()
            killed = True
        if self._reader is not None:
            self._reader.join(5.0)
        self._proc.stdout.close()
        if self._proc.returncode != 0 and not killed:
            with self._lock:
                self._state["last_error"] = self._state.get("last_error") or \
                    f"the sender process ended with exit code {self._proc.returncode}"


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
