"""The ``thelper grid`` commands, added through the ``thelper_add_commands`` hook.

Imported by every ``thelper`` command: typer only here, everything else inside the
commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from thelper.cli_options import AllowImportOption, SetOption, allowed_imports

__all__ = ["add_commands", "grid_app"]

grid_app = typer.Typer(
    help="Grids of experiments: vary a base config, run every experiment as a session on a "
         "pool of warm workers (or Ray), report them in one CSV. See docs/commands/grid.md.",
    no_args_is_help=True)

GridArgument = Annotated[Path, typer.Argument(metavar="GRID", help="Grid file (YAML/JSON).")]
SaveDirOption = Annotated[Path, typer.Option(
    "--save-dir", "-o", help="Where the grid directory <name>/ is (created).")]


def _pm() -> Any:
    from thelper import cli

    return cli._pm()


def _plan(grid: Path, save_dir: Path, sets: list[str] | None, allow: tuple[str, ...]) -> Any:
    from thelper.grid.params import GridFile  # noqa: F401 - pydantic before the plan
    from thelper.grid.plan import load_grid, plan_grid

    pm = _pm()
    spec, _ = load_grid(grid, pm.registry)
    name = spec.name or grid.stem
    return plan_grid(grid, pm.registry, grid_dir=save_dir / name, sets=sets or [],
                     allow_imports=allow, failures=pm.failures), save_dir / name


@grid_app.command("plan")
def plan_cmd(
    grid: GridArgument,
    save_dir: SaveDirOption = Path("grids"),
    sets: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the plan as JSON.")] = False,
    allow_import: AllowImportOption = None,
) -> None:
    """Print the experiments of a grid (and what a run would do with each) without running
    anything. Invalid configs are reported like 'grid validate' (exit code 2)."""
    import json

    from thelper.grid.run import decide

    plan, grid_dir = _plan(grid, save_dir, sets, allowed_imports(allow_import))
    actions = {e.id: decide(grid_dir / e.id, False) for e in plan.experiments}
    if as_json:
        record = plan.record()
        record["grid_dir"] = str(grid_dir)
        record["seed_source"] = plan.seed_source
        for e in record["experiments"]:
            e["action"] = actions[e["id"]]
        typer.echo(json.dumps(record, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"grid {plan.name}: {len(plan.experiments)} experiment(s) in "
                        f"{grid_dir}", show_edge=False)
    table.add_column("experiment")
    for p in plan.varied:
        table.add_column(p.rsplit(".", 1)[-1], overflow="fold")
    table.add_column("repeat")
    table.add_column("seeds (split, torch)")
    table.add_column("on run")
    words = {"run": "run", "skip": "skip (completed)", "skip-failed": "skip (failed)",
             "resume": "resume", "restart": "start over", "rerun": "run again"}
    for e in plan.experiments:
        table.add_row(e.id, *(json.dumps(e.params.get(p)) if not isinstance(
            e.params.get(p), float) else f"{e.params[p]:.4g}" for p in plan.varied),
            str(e.repeat), f"{e.seeds['split']}, {e.seeds['torch']}",
            words.get(actions[e.id], actions[e.id]))
    Console(highlight=False).print(table)
    how = {"file": "from the grid file", "recorded": f"recorded in {grid_dir}/grid.json",
           "drawn": "drawn now: set 'seed:' in the grid file to keep these experiments"}
    typer.echo(f"grid seed {plan.seed} ({how[plan.seed_source]})")


@grid_app.command("validate")
def validate_cmd(
    grid: GridArgument,
    save_dir: SaveDirOption = Path("grids"),
    sets: SetOption = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Check the grid file and every expanded config (schema depth, no torch import); every
    problem at once, each naming the file and line that set the value. Exit code 0 when
    valid, 2 when not."""
    from thelper.exceptions import ConfigError

    try:
        plan, _ = _plan(grid, save_dir, sets, allowed_imports(allow_import))
    except ConfigError as exc:
        if not exc.issues:
            raise
        for issue in exc.issues:
            typer.echo(issue.format(), err=True)
        typer.echo(f"{grid}: {len(exc.issues)} problem(s) found", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{grid}: valid ({len(plan.experiments)} experiment(s), executor "
               f"{plan.spec.executor.type})")


@grid_app.command("run")
def run_cmd(
    grid: GridArgument,
    save_dir: SaveDirOption = Path("grids"),
    sets: SetOption = None,
    rerun_failed: Annotated[bool, typer.Option(
        "--rerun-failed", help="Run failed experiments again, from the start (their old "
        "directory moves to <grid dir>/.failed/).")] = False,
    max_concurrent: Annotated[int | None, typer.Option(
        "--max-concurrent", min=1, help="Most experiments at once (overrides the file).")
    ] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", min=1, help="torch threads per worker (overrides the file).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", metavar="ADDRESS", help="Join this Ray cluster: confirms the grid "
        "file's executor.params.address (which is refused without it), or gives it.")
    ] = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Run every experiment of a grid that is not done yet.

    Completed experiments are skipped, interrupted ones resume from their latest checkpoint,
    failed ones are skipped unless --rerun-failed. Ctrl-C stops every running experiment
    with a final checkpoint (exit code 130); run the command again to continue. Exit code 1
    when an experiment failed.
    """
    from thelper import cli
    from thelper.exceptions import ThelperError
    from thelper.grid.executors import confirm_executor
    from thelper.grid.run import run_grid

    allow = allowed_imports(allow_import)
    plan, grid_dir = _plan(grid, save_dir, sets, allow)
    pm = _pm()
    executor = plan.spec.executor.build(pm.registry)
    confirm_executor(executor, grid, grid_dir, ray_address)
    outcome = run_grid(plan, grid_dir, executor, rerun_failed=rerun_failed,
                       max_concurrent=max_concurrent, threads=threads,
                       blocked=list(cli._STATE.get("blocked") or []), allow_imports=allow,
                       local=list(cli._STATE.get("local") or []),
                       echo=typer.echo)
    n = len(outcome.rows)
    parts = [f"{outcome.count(s)} {s}" for s in ("completed", "skipped", "failed",
                                                  "interrupted", "not started")
             if outcome.count(s)]
    typer.echo(f"grid {plan.name}: {n} experiment(s): {', '.join(parts)}; results in "
               f"{grid_dir} (thelper grid report {grid_dir})")
    if outcome.interrupted:
        stop = KeyboardInterrupt("grid interrupted")
        stop.summary = (f"grid interrupted: every running experiment stopped with a "  # type: ignore[attr-defined]
                        f"checkpoint; continue with 'thelper grid run {grid}'")
        raise stop
    if outcome.count("failed"):
        raise ThelperError(f"{outcome.count('failed')} experiment(s) failed; see "
                           f"'thelper grid report {grid_dir}', and run them again with "
                           "--rerun-failed")


@grid_app.command("test")
def test_cmd(
    grid_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Grid directory.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Evaluate on the datasets/loaders of this config instead of "
        "each experiment's own test split (its top-level sections replace the "
        "experiment's).")] = None,
    sets: SetOption = None,
    max_concurrent: Annotated[int | None, typer.Option("--max-concurrent", min=1)] = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Evaluate the best checkpoint of every completed experiment (resume --eval-only), on
    its own test split or on another config's data; appended to each run.json's
    'evaluations' (see the 'eval.*' columns of 'thelper grid report')."""
    from thelper import cli
    from thelper.grid.test import test_grid

    allow = allowed_imports(allow_import)
    outcome = test_grid(grid_dir, config, list(sets or []), _pm(),
                        max_concurrent=max_concurrent, allow_imports=allow,
                        blocked=list(cli._STATE.get("blocked") or []),
                        local=list(cli._STATE.get("local") or []), echo=typer.echo)
    typer.echo(f"evaluated {outcome['completed']} experiment(s) of {grid_dir}"
               + (f"; {outcome['failed']} failed" if outcome["failed"] else ""))
    if outcome["interrupted"]:
        raise KeyboardInterrupt("grid test interrupted")
    if outcome["failed"]:
        raise typer.Exit(1)


@grid_app.command("report")
def report_cmd(
    grid_dir: Annotated[Path, typer.Argument(metavar="DIR", help="Grid directory.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="CSV to write (default: DIR/results.csv); the PNGs go beside "
        "it.")] = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Also write PNGs.")
                     ] = True,
) -> None:
    """One CSV row per experiment: varied parameters, status, seeds, best epoch, final
    train/valid/test metrics, duration (missing fields blank); plus a PNG of the monitored
    metric per experiment and one of the best value against numeric varied parameters."""
    from thelper.grid.report import write_report

    result = write_report(grid_dir, out, plots=plots)
    typer.echo(f"wrote {result.csv_path} ({result.rows} experiment(s))"
               + "".join(f"; {p}" for p in result.plots))


def add_commands(app: typer.Typer) -> None:
    """Add ``thelper grid`` to the root app."""
    app.add_typer(grid_app, name="grid")
