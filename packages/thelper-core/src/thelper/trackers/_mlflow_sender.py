"""The MLflow tracker's sender: a child process that owns the ``MlflowClient``.

:class:`thelper.trackers.mlflow.MlflowTracker` starts ``python -P -m
thelper.trackers._mlflow_sender`` at the start of a session and writes JSON lines to its
standard input; this process buffers them and sends them with ``MlflowClient.log_batch``,
retrying with a backoff while the server fails, and reports its state (run id, what was
delivered, what is pending, the last error) and its log messages as JSON lines on the
standard output it had when it started (anything MLflow prints goes to standard error).

Why a process: the client's work (SQLAlchemy for a local store, HTTP and JSON for a server:
about 25 ms of CPU an epoch for a hundred values) in a thread of the training process holds
the GIL against the training thread; measured, the epoch time varied 1.01-1.18x. In its
own process it shares nothing with the training but a pipe, and it runs at the lowest
priority (nice 19 and, on Linux, ``SCHED_IDLE``): its start-up (importing MLflow, creating a
local store's tables: about 2 s of CPU) and its sends take the CPU time the training leaves
idle. When the training keeps every core busy, the values wait in the buffer; the session's
end (the training process waiting) gives the sender the CPU to deliver them.

Messages from the tracker (each with a sequence number ``seq``, echoed back as ``seen``):

* ``{"op": "start", "config": {...}, "params": {...}, "tags": {...}}``
* ``{"op": "metrics", "points": [[key, value, step, timestamp_ms], ...]}``
* ``{"op": "close", "artifacts": [...], "tags": {...}, "status": "FINISHED"}``

The process ends once everything is delivered after ``close``, at once when its standard
input ends without a ``close`` (the tracker's process died), or when the tracker kills it
after its ``flush_timeout``. It ignores SIGINT and SIGTERM: a Ctrl-C in the terminal reaches
the whole process group, and the training process decides when the session ends.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections import deque
from pathlib import Path
from typing import Any, TextIO

from thelper.trackers.mlflow import BATCH, MAX_BACKOFF, PARAM_BATCH, _short, artifact_root

__all__ = ["Sender", "main"]


class _Reporter:
    """Writes JSON lines to the tracker (thread-safe); a logger-like ``warning``/``info``."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        line = json.dumps(message)
        with self._lock:
            try:
                self._out.write(line + "\n")
                self._out.flush()
            except (OSError, ValueError):  # the tracker is gone
                os._exit(0)

    def warning(self, msg: str, *args: Any) -> None:
        self.send({"op": "log", "level": "warning", "msg": msg % args if args else msg})

    def info(self, msg: str, *args: Any) -> None:
        self.send({"op": "log", "level": "info", "msg": msg % args if args else msg})


class Sender:
    """Buffers what the tracker sends and delivers it to MLflow (in this child process)."""

    def __init__(self, reporter: _Reporter) -> None:
        self._logger = reporter
        self._lock = threading.Condition()
        self._metrics: deque[tuple[str, float, int, int]] = deque()
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._artifacts: list[dict[str, Any]] = []
        self._status: str | None = None
        self._sent: dict[str, Any] = {"metrics": 0, "params": 0, "artifacts": []}
        self._started = False
        self._closing = False
        self._stop = False
        self._seen = 0
        self._failures = 0
        self._last_error: str | None = None
        self._warned = False
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._run_ready = False
        self._reported: dict[str, Any] | None = None

    # ------------------------------------------------------------------ input
    def receive(self, stream: TextIO) -> None:
        """Reads the tracker's messages until the end of ``stream`` (a thread)."""
        for line in stream:
            msg = json.loads(line)
            with self._lock:
                self._apply(msg)
                self._seen = int(msg.get("seq", self._seen))
                if msg.get("notify", True) or len(self._metrics) >= BATCH:
                    self._lock.notify_all()
        with self._lock:
            if not self._closing:  # the tracker's process ended without closing: stop now
                self._stop = True
            self._lock.notify_all()

    def _apply(self, msg: dict[str, Any]) -> None:
        op = msg.get("op")
        if op == "start":
            cfg = msg["config"]
            self.tracking_uri = cfg["tracking_uri"]
            self.shown_uri = cfg["shown_uri"]
            self.experiment = cfg["experiment"]
            self.run_name = cfg.get("run_name")
            self.run_id = cfg.get("run_id")
            self.experiment_id = cfg.get("experiment_id")
            self.session_dir = Path(cfg["session_dir"])
            self._started = True
        elif op == "close":
            self._artifacts.extend(msg.get("artifacts") or [])
            self._status = msg.get("status")
            self._closing = True
        self._params.update(msg.get("params") or {})
        self._tags.update(msg.get("tags") or {})
        self._metrics.extend(tuple(p) for p in msg.get("points") or [])

    # ------------------------------------------------------------------ state
    def report(self) -> None:
        """Sends this process's state to the tracker when it changed since the last one."""
        with self._lock:
            state = {"op": "state", "seen": self._seen, "run_id": self.run_id,
                     "experiment_id": self.experiment_id,
                     "delivered": {"metrics": self._sent["metrics"],
                                   "params": self._sent["params"],
                                   "artifacts": list(self._sent["artifacts"])},
                     "pending": {"metrics": len(self._metrics), "params": len(self._params),
                                 "tags": len(self._tags),
                                 "artifacts": [a["path"] for a in self._artifacts],
                                 "status": self._status is not None or not self._closing},
                     "last_error": self._last_error}
        if state != self._reported:
            self._reported = state
            self._logger.send(state)

    def _done(self) -> bool:
        return self._closing and self._status is None and not self._metrics \
            and not self._params and not self._tags and not self._artifacts

    # ------------------------------------------------------------------ sending loop
    def run(self) -> None:
        """Sends until everything is delivered after ``close``, or until told to stop."""
        client = None
        delay = 0.0
        while True:
            with self._lock:
                if self._stop:
                    return
                if delay:
                    self._lock.wait(delay)
                elif not self._closing or not self._started:
                    self._lock.wait(1.0)
                if self._stop:
                    return
                if not self._started:
                    continue
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
                        "again later, the training goes on", self.shown_uri,
                        self._last_error)
                self.report()
                continue
            if self._failures:
                self._logger.info("MLflow tracker: %s reachable again", self.shown_uri)
            self._failures, delay = 0, 0.0
            self.report()
            with self._lock:
                if self._done():
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
                             "new run", self.run_id, why, self.shown_uri)
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


def main() -> None:
    """Entry point of the child process (see the module's docstring)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    try:  # the training's threads come first: this process takes the idle CPU time
        os.nice(19)
        if hasattr(os, "sched_setscheduler"):  # Linux: run only when a CPU would idle
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # what MLflow prints goes to stderr
    reporter = _Reporter(out)
    sender = Sender(reporter)
    reader = threading.Thread(target=sender.receive, args=(sys.stdin,), daemon=True,
                              name="thelper-mlflow-input")
    reader.start()
    try:
        sender.run()
        sender.report()
    except Exception as exc:  # a bug here must not go unseen: the tracker logs it
        reporter.warning("MLflow tracker: the sender process failed: %s: %s",
                         type(exc).__name__, _short(exc))
        out.flush()
        os._exit(1)
    finally:
        out.flush()
        os._exit(0)  # no interpreter teardown: nothing is left to save


if __name__ == "__main__":
    main()
