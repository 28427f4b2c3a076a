"""``thelper runs``: list, show, compare and upload session records (``run.json``).

Added through the ``thelper_add_commands`` hook like any plugin's commands. Imported by every
``thelper`` command: typer only here; rich, the records and MLflow inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from thelper.hookspecs import hookimpl

__all__ = ["runs_app"]

runs_app = typer.Typer(
    help="Session records (run.json): list, show, compare, upload to MLflow. See "
         "docs/tracking.md.", no_args_is_help=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _e(value: Any, digits: int = 4) -> str:
    """A record value as table text: formatted, with rich markup (``[/]``) escaped."""
    from rich.markup import escape

    return escape(_fmt(value, digits))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _print(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _out() -> Any:
    """A console on stdout; 160 columns when it is not a terminal (files, pipes, tests)."""
    from rich.console import Console

    console = Console(soft_wrap=False)
    return console if console.is_terminal else Console(soft_wrap=False, width=160)


@runs_app.command("list")
def list_cmd(
    directory: Annotated[Path, typer.Argument(
        help="A save directory (searched 4 levels deep) or a session directory.")
    ] = Path("."),
    as_json: JsonOption = False,
) -> None:
    """Sessions under DIRECTORY: status, monitored metric, best epoch, test value, duration."""
    from thelper.records import iter_records, summarize

    rows, problems = [], []
    for d, rec, err in iter_records(directory):
        if rec is None:
            problems.append({"path": str(d), "error": err})
            continue
        try:
            rows.append(summarize(d, rec))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:  # a malformed record
            problems.append({"path": str(d), "error": f"{str(d / 'run.json')!r} is not a "
                             f"valid run record ({type(exc).__name__}: {exc})"})
    if as_json:
        _print({"runs": rows, "unreadable": problems})
        return
    from rich.table import Table

    table = Table(title=f"sessions in {_e(directory)}", title_justify="left")
    for col in ("name", "status", "epochs", "monitor", "best (epoch)", "test", "duration",
                "labels", "path"):
        table.add_column(col, justify="right" if col in ("epochs", "best (epoch)", "test",
                                                         "duration") else "left",
                         no_wrap=col in ("name", "status"), overflow="fold")
    colors = {"completed": "green", "failed": "red", "interrupted": "yellow",
              "running": "cyan"}
    for r in rows:
        status = str(r["status"])
        stopped = r["stopped_reason"]
        if stopped and stopped not in (status, "completed", "failed", "interrupted"):
            status = f"{status} ({stopped})"
        table.add_row(_e(r["name"]),
                      f"[{colors.get(str(r['status']), 'white')}]{_e(status)}[/]",
                      _e(r["epochs"]), _e(r["monitor"]),
                      f"{_e(r['best'])} ({_e(r['best_epoch'])})", _e(r["test"]),
                      _duration(r["duration_s"]), _e(",".join(r["labels"])), _e(r["path"]))
    out = _out()
    out.print(table)
    for p in problems:
        out.print(f"[red]unreadable[/]: {_e(p['error'])}")
    if not rows and not problems:
        out.print(f"no session (no run.json) under {_e(directory)}")


@runs_app.command("show")
def show_cmd(
    run: Annotated[Path, typer.Argument(help="Session directory (or its run.json).")],
    as_json: JsonOption = False,
) -> None:
    """One session's record: status, times, best and test metrics, per-epoch metrics and
    durations, platform, git, versions, artifacts and MLflow delivery."""
    from thelper.records import duration_s, load_record

    rec = load_record(run)
    if as_json:
        _print(rec)
        return
    from rich.table import Table

    out = _out()
    head = Table(show_header=False, title=f"{_e(rec.get('name'))} ({_e(run)})",
                 title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    best = _dict(rec.get("best"))
    test = _dict(rec.get("test"))
    git = _dict(rec.get("git"))
    plat = _dict(rec.get("platform"))
    lines = [
        ("description", rec.get("description")),
        ("labels", ", ".join(map(str, _list(rec.get("labels")))) or None),
        ("status", f"{rec.get('status')} ({rec.get('stopped_reason')})"
         + (", early stopping" if rec.get("early_stopping") else "")),
        ("error", rec.get("error")),
        ("started / ended", f"{rec.get('started_at')} / {rec.get('ended_at')}"),
        ("duration", _duration(duration_s(rec))),
        ("config_hash", rec.get("config_hash")),
        ("best", f"{best.get('split')}/{best.get('metric')} {_fmt(best.get('value'))} at "
                 f"epoch {best.get('epoch')}" if best else None),
        ("test", " ".join(f"{k} {_fmt(v)}" for k, v in test.items()
                          if k not in ("split", "epoch")) if test else None),
        ("seeds", " ".join(f"{k}={v}" for k, v in _dict(rec.get("seeds")).items())),
        ("platform", f"{plat.get('host')}, {plat.get('os')}, Python {plat.get('python')}, "
                     f"torch {plat.get('torch')}, CUDA {plat.get('cuda')}, device "
                     f"{plat.get('device')}" if plat else None),
        ("git", f"{str(git.get('commit') or '')[:12]}{' (dirty)' if git.get('dirty') else ''} "
                f"{git.get('branch') or ''} {git.get('remote') or ''}".strip() if git else None),
        ("thelper", _dict(rec.get("versions")).get("thelper")),
    ]
    for key, value in lines:
        if value not in (None, ""):
            head.add_row(key, _e(value))
    out.print(head)
    # every entry type-checked: a hand-edited or foreign record must not crash the table
    metrics = {s: [r for r in _list(rows) if isinstance(r, dict) and isinstance(
        r.get("epoch"), int)] for s, rows in _dict(rec.get("metrics")).items()}
    durations = {e.get("epoch"): e.get("duration_s") for e in _list(rec.get("epochs"))
                 if isinstance(e, dict)}
    epochs = sorted({r["epoch"] for rows in metrics.values() for r in rows})
    if epochs:
        cols = [(s, k) for s, rows in metrics.items() for k in dict.fromkeys(
            k for r in rows for k in r if k != "epoch")]
        table = Table(title="epochs", title_justify="left")
        table.add_column("epoch", justify="right")
        for s, k in cols:
            table.add_column(_e(f"{s} {k}"), justify="right")
        table.add_column("duration", justify="right")
        by = {(s, r["epoch"]): r for s, rows in metrics.items() for r in rows}
        for e in epochs:
            d = durations.get(e)
            table.add_row(str(e), *[_e(by.get((s, e), {}).get(k)) for s, k in cols],
                          _e(d, 3) + ("s" if isinstance(d, int | float) else ""))
        out.print(table)
    arts = [a for a in _list(rec.get("artifacts")) if isinstance(a, dict)]
    if arts:
        table = Table(title="artifacts", title_justify="left")
        for col in ("path", "kind", "size", "sha256"):
            table.add_column(col, justify="right" if col == "size" else "left")
        for a in arts:
            if a.get("kind") in ("log", "events"):
                continue
            size, sha = a.get("size"), a.get("sha256")
            table.add_row(_e(a.get("path")), _e(a.get("kind")),
                          f"{size:,}" if isinstance(size, int) else _e(size),
                          _e(sha[:16] if isinstance(sha, str) else sha))
        out.print(table)
    from thelper.records import redact_uri

    for entry in _list(rec.get("mlflow")):
        if not isinstance(entry, dict):
            continue
        pending = _dict(entry.get("pending"))
        arts_left = pending.get("artifacts")
        left = [f"{v} {k}" for k, v in pending.items() if k in ("metrics", "params", "tags")
                and v] + ([f"{len(arts_left)} artifacts"]
                          if isinstance(arts_left, list) and arts_left else [])
        out.print(f"MLflow: run {_e(entry.get('run_id'))} in "
                  f"{_e(redact_uri(str(entry.get('tracking_uri'))))} "
                  f"(experiment {_e(repr(entry.get('experiment')))}); "
                  + (f"[yellow]not delivered: {_e(', '.join(left))}[/]" if left
                     else "[green]everything delivered[/]"))


@runs_app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Two or more session directories.")],
    show_all: Annotated[bool, typer.Option(
        "--all", help="Show every hyperparameter, not only those that differ.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Side by side: hyperparameters that differ (highlighted) and the last epoch's and
    test metrics (the best value of each row in green)."""
    from thelper.exceptions import ConfigError
    from thelper.records import flat_metrics, load_record, summarize

    if len(runs) < 2:
        raise ConfigError("thelper runs compare needs two or more session directories")
    recs = [load_record(r) for r in runs]
    names = [str(r.get("name") or p.name) for r, p in zip(recs, runs, strict=True)]
    hps = [_dict(r.get("hparams")) for r in recs]
    if len(set(names)) < len(names):
        names = [f"{n} ({p})" for n, p in zip(names, runs, strict=True)]
    hkeys = list(dict.fromkeys(k for h in hps for k in h))
    hparams = {k: [h.get(k) for h in hps] for k in hkeys}
    differs = [k for k, vs in hparams.items()
               if len({json.dumps(v, default=str) for v in vs}) > 1]
    flat = [flat_metrics(r) for r in recs]
    mkeys = list(dict.fromkeys(k for f in flat for k in f))
    metrics = {k: [f.get(k) for f in flat] for k in mkeys}
    summary = [summarize(p, r) for p, r in zip(runs, recs, strict=True)]
    if as_json:
        _print({"runs": names, "summary": summary, "hparams": hparams, "differs": differs,
                "metrics": metrics})
        return
    from rich.table import Table

    from thelper.records import duration_s

    table = Table(title="compare", title_justify="left")
    table.add_column("")
    for n in names:
        table.add_column(_e(n), justify="right")
    table.add_row("[bold]status[/]", *[_e(r.get("status")) for r in recs])
    table.add_row("[bold]best epoch[/]", *[_e(s["best_epoch"]) for s in summary])
    table.add_row("[bold]duration[/]", *[_duration(duration_s(r)) for r in recs])
    table.add_section()
    for k in hkeys if show_all else differs:
        style = "bold yellow" if k in differs else ""
        table.add_row(_e(k), *[f"[{style}]{_e(v)}[/]" if style else _e(v)
                               for v in hparams[k]])
    if not differs and not show_all:
        table.add_row("[dim]hyperparameters[/]", *["[dim]identical[/]"] * len(recs))
    table.add_section()
    for k in mkeys:
        vals = metrics[k]
        best = _best(k, vals, recs)
        table.add_row(_e(k), *[f"[bold green]{_e(v)}[/]" if best is not None and v == best
                               and vals.count(v) < len(vals) else _e(v) for v in vals])
    _out().print(table)


def _best(key: str, values: list[Any], recs: list[dict[str, Any]]) -> float | None:
    """The best of a row: the lowest for losses and error metrics, else the highest."""
    nums = [v for v in values if isinstance(v, int | float)]
    if not nums:
        return None
    name = key.rsplit("/", 1)[-1]
    lower = name in ("loss", "lr", "mse", "mae", "rmse") or "loss" in name or "error" in name
    return min(nums) if lower else max(nums)


@runs_app.command("upload")
def upload_cmd(
    directory: Annotated[Path, typer.Argument(
        help="A session directory, or a folder of sessions (each one is uploaded).")],
    to: Annotated[str, typer.Option(
        "--to", help="MLflow tracking URI (http://host:5000, sqlite:///path/mlflow.db).")],
    on_conflict: Annotated[str, typer.Option(
        "--on-conflict",
        help="When the experiment already has a run with the same config_hash: skip, "
             "error, new (another run, named NAME-2, ...) or replace (delete it first).")
    ] = "error",
    experiment: Annotated[str | None, typer.Option(
        help="Experiment name (default: the session's MLflow tracker's, else 'thelper').")
    ] = None,
    parent_run_id: Annotated[str | None, typer.Option(
        "--parent-run-id", help="Make the new runs children of this MLflow run.")] = None,
    no_artifacts: Annotated[bool, typer.Option(
        "--no-artifacts", help="Params, tags and metrics only.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Upload finished sessions to MLflow (a session's identity is its config_hash).

    A session that the MLflow tracker (or an earlier upload) logged to the same URI gets
    what is missing appended to the same run; otherwise --on-conflict decides. In a folder
    of sessions, one that cannot be uploaded (unreadable run.json, still training, a
    conflict with --on-conflict error) is reported and the others are still uploaded; the
    exit code is then that of the first failure. A server failure stops the upload (what was
    sent stays sent: run it again to complete it).
    """
    from thelper.builtin_params.trackers import check_tracking_uri
    from thelper.exceptions import ConfigError, ThelperError
    from thelper.records import find_sessions, redact_uri
    from thelper.trackers.upload import (
        CONFLICT_STRATEGIES,
        UploadConflictError,
        UploadError,
        _client,
        quiet_mlflow,
        upload_session,
    )

    if on_conflict not in CONFLICT_STRATEGIES:
        raise ConfigError(f"--on-conflict {on_conflict!r}: use one of "
                          f"{', '.join(CONFLICT_STRATEGIES)}")
    try:
        check_tracking_uri(to)
    except ValueError as exc:
        raise ConfigError(f"--to {redact_uri(to)!r}: {exc}") from None
    sessions = find_sessions(directory)
    if not sessions:
        raise ConfigError(f"no session (no run.json) in {str(directory)!r}; give a session "
                          "directory or a folder of them")
    results: list[dict[str, Any]] = []
    failures: list[ThelperError] = []
    with quiet_mlflow():
        client = _client(to)
        for d in sessions:
            try:
                results.append(upload_session(
                    d, to, on_conflict, experiment=experiment, parent_run_id=parent_run_id,
                    log_artifacts=not no_artifacts, client=client,
                    progress=None if as_json else typer.echo))
            except ThelperError as exc:
                if len(sessions) == 1:
                    raise
                failures.append(exc)
                results.append({"session": str(d), "action": "failed", "error": str(exc)})
                typer.echo(f"error: {exc}", err=True)
                if isinstance(exc, UploadError) and not isinstance(exc, UploadConflictError):
                    break  # the server failed: the next sessions would fail the same way
    if as_json:
        _print({"tracking_uri": redact_uri(to), "results": results})
    if failures:
        done = sum(r["action"] != "failed" for r in results)
        error = ThelperError(
            f"{len(failures)} of {len(sessions)} sessions in {str(directory)!r} not uploaded "
            f"({done} done{'' if len(results) == len(sessions) else ', the rest not tried'}); "
            "see the errors above, mend them and upload again (done ones are up to date)")
        error.exit_code = failures[0].exit_code
        raise error


@hookimpl
def thelper_add_commands(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
