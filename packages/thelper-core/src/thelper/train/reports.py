"""Metric reports, figures and training curves, written off the training thread.

Rendering a confusion matrix with matplotlib costs about as much as a small model's epoch;
doing it on the training thread made the digits example slower than the same job in
Lightning. The trainer hands each report to a :class:`ReportWorker`: a snapshot of the
metrics (their states are small: counts, sums) rendered on one background thread while the
training goes on. A newer report of the same split replaces one still waiting (the files have
the same names: the newer would overwrite them anyway), so a slow figure never queues up.
:meth:`ReportWorker.flush` waits for everything submitted (end of training, of the test, and
on interrupts: nothing submitted is lost).

The training curves (``output/<name>/curves.csv`` each epoch, ``curves.png`` at the end of a
training, also an interrupted one) are written here too.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("thelper.reports")

#: Columns of ``curves.csv`` that come first, in this order (metrics follow, sorted).
FIRST_COLUMNS = ("epoch", "split", "loss", "lr")


class ReportWorker:
    """One background thread rendering reports; newest job per key wins while queued.

    The thread exists only while there is work: it ends once the queue is empty, and the
    next :meth:`submit` starts another (a session's worker leaves no thread behind, in a
    process that runs many sessions: a grid worker, a test suite, a notebook).

    Plugins' ``thelper_log_figure`` hooks are called from this thread (one at a time).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: dict[str, Callable[[], None]] = {}
        self._order: list[str] = []
        self._busy = False
        self._thread: threading.Thread | None = None

    def submit(self, key: str, job: Callable[[], None]) -> None:
        """Queue ``job`` under ``key``, replacing a job of the same key not yet started."""
        with self._cond:
            if key not in self._pending:
                self._order.append(key)
            self._pending[key] = job
            # under the lock: a thread set here has not decided to end yet; one not alive
            # (a forked child's copy of this worker) is replaced
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="thelper-reports",
                                                daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._order:  # idle: end; the next submit starts another thread
                    self._thread = None
                    self._cond.notify_all()
                    return
                key = self._order.pop(0)
                job = self._pending.pop(key)
                self._busy = True
            try:
                job()
            except BaseException:  # a figure never fails the training (nor ends this
                # thread: a plugin hook's sys.exit would leave the queue without a worker)
                log.exception("writing the report %s failed", key)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def flush(self) -> None:
        """Wait until every submitted job has run."""
        with self._cond:
            while self._order or self._busy:
                self._cond.wait()

    def close(self) -> None:
        """Wait until every submitted job has run and the thread has ended."""
        with self._cond:
            while self._thread is not None and self._thread.is_alive():
                self._cond.wait()


def snapshot(metrics: dict[str, Any]) -> dict[str, Any]:
    """A copy of the metrics whose states the next epoch's updates do not touch."""
    return {name: copy.deepcopy(m) for name, m in metrics.items()}


def write_curves_csv(path: Path, history: dict[str, list[dict[str, Any]]]) -> None:
    """Write every epoch's values of every split as ``curves.csv`` (atomically).

    Args:
        path: The CSV file.
        history: ``{split: [{"epoch": int, "loss": float, ...}, ...]}`` (``session.history``).
    """
    from thelper.session import write_text

    rows = sorted(((int(r["epoch"]), split, r) for split, entries in history.items()
                   for r in entries), key=lambda x: (x[0], 0 if x[1] == "train" else 1, x[1]))
    names = sorted({k for _, _, r in rows for k in r} - set(FIRST_COLUMNS))
    columns = [*FIRST_COLUMNS, *names]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for epoch, split, r in rows:
        w.writerow({**{k: v for k, v in r.items() if k in columns}, "epoch": epoch,
                    "split": split})
    write_text(path, buf.getvalue())


def render_curves(path: Path, history: dict[str, list[dict[str, Any]]], monitor: str | None,
                  title: str) -> Any:
    """Render the loss, the monitored metric and the learning rate per epoch as a PNG.

    Args:
        path: The PNG file.
        history: As for :func:`write_curves_csv`.
        monitor: The monitored metric (a panel of its own when it is not the loss).
        title: The figure's title (the session's name).

    Returns:
        The ``matplotlib.figure.Figure`` (not attached to pyplot; thread-safe to render).
    """
    from thelper.metrics import new_figure, render_figure

    panels = ["loss"]
    if monitor and monitor != "loss":
        panels.append(monitor)
    if any("lr" in r for rows in history.values() for r in rows):
        panels.append("lr")
    fig = new_figure(4.2 * len(panels), 3.4)
    for i, name in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for split, rows in sorted(history.items()):
            pts = [(r["epoch"], r[name]) for r in rows if r.get(name) is not None]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=split)
        ax.set_xlabel("epoch")
        ax.set_title("learning rate" if name == "lr" else name)
        if name == "lr":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title)
    fig.tight_layout()
    render_figure(fig, path)
    return fig
