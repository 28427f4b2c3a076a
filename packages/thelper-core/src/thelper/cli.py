"""The ``thelper`` command line.

Exit codes: 0 success, 1 runtime failure, 2 invalid config or usage, 3 training time limit
reached (``trainer.max_time``; resumable), 75 stopped for a requeue (SIGUSR1; resumable),
130 interrupted.
User mistakes print one ``error:`` line (no traceback unless ``--traceback``).
"""

from __future__ import annotations

import gc
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from thelper.cli_options import AllowImportOption, SetOption, allowed_imports

__all__ = ["app", "main"]

HELP = """\
thelper: config-driven PyTorch training sessions.

Describe a session (datasets, loaders, model, trainer) in YAML/JSON files (one, or several
merged in order, with bases and groups), check it with 'thelper config validate', then
train it with 'thelper run'.

Examples:

  thelper run examples/digits-classification/config.yaml

  thelper run cfg.yaml --save-dir runs --set trainer.epochs=5 --set trainer.device=cpu

  thelper run base.yaml data/coins.yaml --group model=unet   # several files, a group

  thelper config show cfg.yaml --sources    # the resolved config, each value's origin

  thelper resume runs/my-session            # continue from ckpt.latest.pt

  thelper config validate cfg.yaml          # exit 0 valid, 2 invalid

  thelper plugins list                      # every registered type: name

Block a plugin for one command with -p no:NAME before the command, or load a local
plugin module (my_models.py in the current directory or on PYTHONPATH) with -p MODULE
(both repeatable):

  thelper -p no:tensorboard run cfg.yaml

  thelper -p my_models run cfg.yaml
"""


class _FlagHelpMixin:
    """Give the automatic ``-h/--help`` flag a ``False`` default.

    Recent typer versions coerce every parameter value that is not already a bool through a
    pydantic ``TypeAdapter``. Their help flag defaults to ``None``, so every command (``plugins
    list`` included) would import pydantic, about 0.1 s, only to read an unset ``--help``.
    """

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None and option.default is None:
            option.default = False
        return option


class _Group(_FlagHelpMixin, TyperGroup):
    """Command group whose help flag reads without pydantic."""


class _Command(_FlagHelpMixin, TyperCommand):
    """Command whose help flag reads without pydantic."""


def _type_label(self: Any, ctx: Any) -> str | None:
    """An option's value placeholder in ``--help``: its metavar, or click's names (TEXT,
    PATH, INTEGER, [a|b]) instead of typer's Python annotations (``<list[Path]>``)."""
    if self.metavar is not None:
        return self.metavar
    import typing

    desc = self.type_descriptor
    if desc.is_choice:
        return "[" + "|".join(str(c) for c in desc.choices or ()) + "]"
    annotation = desc.annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    names = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN", Path: "PATH"}
    label = "PATH" if desc.is_path else names.get(annotation, "VALUE")
    return label + ("..." if self.nargs != 1 else "")


# Arguments show their name (CONFIG...), options a click-style placeholder.
typer.core.TyperArgument.display_type_rich = lambda self, ctx: None  # type: ignore[method-assign]
typer.core.TyperOption.display_type_rich = _type_label  # type: ignore[method-assign]

app = typer.Typer(help=HELP, no_args_is_help=True, add_completion=False, cls=_Group,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]})
config_app = typer.Typer(help="Check configs before a long job.", no_args_is_help=True,
                         cls=_Group)
plugins_app = typer.Typer(help="Inspect installed plugins and their components.", cls=_Group,
                          no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(plugins_app, name="plugins")

_STATE: dict[str, Any] = {"traceback": False, "blocked": []}



def _pm() -> Any:
    from thelper.plugins import get_plugin_manager

    local = _STATE.get("local") or ()
    if local and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # after PYTHONPATH and the installed packages
    if _STATE["blocked"] or local:
        return get_plugin_manager(blocked=_STATE["blocked"], local=local)
    return get_plugin_manager()


def _warn_failures(pm: Any) -> None:
    from thelper.logs import console

    for failure in pm.failures:
        console.print(f"warning: {failure.format()}", style="yellow", markup=False,
                      highlight=False)
        if _STATE["traceback"] and failure.details:
            console.print(failure.details, markup=False, highlight=False)


def _version_callback(value: bool) -> None:
    if value:
        from thelper import __version__

        typer.echo(f"thelper {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option(
        "--quiet", "-q", help="Only warnings and errors on the console; no progress bars "
        "(the session's log file still gets everything).")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Also debug messages, on the console and in the log file.")
    ] = False,
    traceback: Annotated[bool, typer.Option(
        "--traceback", help="Show full tracebacks for errors (for developers).")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version_callback, is_eager=True,
        help="Print the version and exit.")] = False,
    install_completion: Annotated[bool, typer.Option(
        "--install-completion", help="Install tab completion for your shell (bash, zsh, "
        "fish, powershell; detected, or named: --install-completion bash).")] = False,
    show_completion: Annotated[bool, typer.Option(
        "--show-completion", help="Print the completion script for your shell (or the "
        "shell named after it), to install it by hand.")] = False,
) -> None:
    # Only flags here: typer coerces every other option through pydantic, which would cost
    # every command ~0.1 s; '-p no:NAME' and the completion options (with their optional
    # SHELL) are taken out of the arguments by main().
    from thelper.logs import set_verbosity

    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose exclude each other",
                                 param_hint="'-q' / '-v'")
    _STATE["traceback"] = traceback
    set_verbosity(-1 if quiet else (1 if verbose else 0))


# ----------------------------------------------------------------------------- run
ConfigsArgument = Annotated[list[Path], typer.Argument(
    metavar="CONFIG",
    help="Session config (YAML or JSON), or several merged in order (later files win); "
         "each may name 'bases'. See docs/config/composition.md.")]
GroupOption = Annotated[list[str] | None, typer.Option(
    "--group", "-g", metavar="NAME=CHOICE",
    help="Merge NAME/CHOICE.yaml of a config root after the files (repeatable), e.g. "
         "--group model=cnn; 'thelper config groups CONFIG' lists them.")]
ConfigRootOption = Annotated[list[Path] | None, typer.Option(
    "--config-root", metavar="DIR",
    help="Also read bases and groups from DIR (repeatable); the directories of the config "
         "files named are always config roots, and no base is read outside them.")]
AllowEnvOption = Annotated[bool, typer.Option(
    "--allow-env",
    help="Let ${env:VAR} in the config read any environment variable, not only THELPER_* "
         "ones.")]


def _load(configs: list[Path], sets: list[str] | None, groups: list[str] | None,
          roots: list[Path] | None, allow_env: bool) -> Any:
    """Read and compose the config files (bases, groups, overrides, interpolations).

    Raises:
        ConfigError: See :func:`thelper.config.load_config`.
    """
    from thelper.config import load_config

    return load_config(configs, sets or [], groups=groups or (), roots=roots or (),
                       allow_env=allow_env)


def _compose_args(groups: list[str] | None, roots: list[Path] | None,
                  allow_env: bool) -> list[str]:
    """The composition options as arguments (for the ranks a launch starts)."""
    out: list[str] = []
    for g in groups or []:
        out += ["--group", g]
    for r in roots or []:
        out += ["--config-root", str(r)]
    return out + (["--allow-env"] if allow_env else [])


NprocOption = Annotated[int | None, typer.Option(
    "--nproc-per-node", min=1, metavar="N",
    help="Train with N DistributedDataParallel ranks on this machine (gloo on CPUs, nccl on "
         "GPUs; loaders.batch_size is per rank). device: cuda:all starts one rank per GPU. "
         "For several machines use 'torchrun ... -m thelper run CONFIG'.")]


def _worker_args(command: list[str], sets: list[str] | None,
                 allow: tuple[str, ...] = ()) -> list[str]:
    """The command line a launched rank runs (global flags first)."""
    head = ["--traceback"] if _STATE["traceback"] else []
    for name in sorted(_STATE["blocked"] or ()):
        head += ["-p", f"no:{name}"]
    for module in _STATE.get("local") or ():
        head += ["-p", module]
    tail: list[str] = []
    for item in sets or []:
        tail += ["--set", item]
    for module in allow:
        tail += ["--allow-import", module]
    return head + command + tail


def _launch_if_asked(nproc: int | None, device: str, command: list[str],
                     sets: list[str] | None, allow: tuple[str, ...] = ()) -> bool:
    """Start ``nproc`` ranks (or one per GPU for ``cuda:all``) and exit with their status;
    False when this process should run the session itself."""
    from thelper.launch import in_launched_job, launch_workers

    if in_launched_job():
        return False
    if nproc is None and device == "cuda:all":
        import torch

        nproc = torch.cuda.device_count() if torch.cuda.is_available() else None
    if not nproc or nproc < 2:
        return False
    code = launch_workers(nproc, _worker_args(command, sets, allow))
    raise typer.Exit(code)


def _run(configs: list[Path], save_dir: Path, sets: list[str] | None,
         nproc: int | None = None, allow_import: list[str] | None = None,
         groups: list[str] | None = None, roots: list[Path] | None = None,
         allow_env: bool = False) -> None:
    from thelper.config import validate_document
    from thelper.runner import run_session

    allow = allowed_imports(allow_import)
    pm = _pm()
    _warn_failures(pm)
    doc = _load(configs, sets, groups, roots, allow_env)
    # a bad config fails before any rank starts; run_session validates it again and logs
    # its warnings (once)
    cfg = validate_document(doc, pm.registry, allow_imports=allow, warnings=[])
    _launch_if_asked(nproc, cfg.trainer.device,
                     ["run", *map(str, configs), "--save-dir", str(save_dir),
                      *_compose_args(groups, roots, allow_env)], sets, allow)
    session = run_session(doc, save_dir, pm, allow_imports=allow)
    if getattr(session, "is_main", True):
        typer.echo(f"session {session.name}: {session.status}; results in "
                   f"{session.session_dir}")


@app.command("run", cls=_Command)
def run_cmd(
    config: ConfigsArgument,
    save_dir: Annotated[Path, typer.Option(
        "--save-dir", "-o", help="Where the session directory <name>/ is created.")
    ] = Path("sessions"),
    sets: SetOption = None,
    nproc_per_node: NprocOption = None,
    allow_import: AllowImportOption = None,
    group: GroupOption = None,
    config_root: ConfigRootOption = None,
    allow_env: AllowEnvOption = False,
) -> None:
    """Train, validate and test a session; writes SAVE_DIR/<name>/.

    Several config files are merged in order (with their bases), then the --group files,
    the THELPER_CONFIG__* environment and the --set overrides.

    The session directory holds checkpoints/ (ckpt.<epoch>.pt, ckpt.best.pt, ckpt.latest.pt),
    logs/, output/<name>/{train,valid,test}/ (TensorBoard events, reports), run.json,
    config.latest.yaml (the resolved config) and config.sources.yaml (the files as
    written). An existing session directory is never overwritten: resume it or choose
    another --save-dir or name.

    With --nproc-per-node N (or under torchrun) the session trains on N ranks; rank 0
    writes every file. See docs/distributed.md.

    Examples:

    \b
      thelper run examples/digits-classification/config.yaml
      thelper run cfg.yaml -o runs --set trainer.epochs=5 --set trainer.device=cpu
      thelper run base.yaml data/coins.yaml --group model=unet
      thelper run cfg.yaml --nproc-per-node 2          # DDP on 2 ranks
      thelper -q run cfg.yaml                          # warnings and errors only
    """
    _run(config, save_dir, sets, nproc_per_node, allow_import, group, config_root, allow_env)


@app.command("new", hidden=True, cls=_Command)
def new_cmd(
    config: Annotated[Path, typer.Argument(help="Session config (YAML or JSON).")],
    save_dir: Annotated[Path, typer.Argument(help="Where <name>/ is created.")
                        ] = Path("sessions"),
    sets: SetOption = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Alias of 'run' for thelper 0.6 users (save dir as second argument)."""
    _run([config], save_dir, sets, allow_import=allow_import)


@app.command("resume", cls=_Command)
def resume_cmd(
    path: Annotated[Path, typer.Argument(help="Session directory or checkpoint file.")],
    eval_only: Annotated[bool, typer.Option(
        "--eval-only", help="Only evaluate ckpt.best.pt on the test split.")] = False,
    map_location: Annotated[str | None, typer.Option(
        "--map-location", help="Load checkpoint tensors on this device (e.g. cpu) and train "
        "there.")] = None,
    sets: SetOption = None,
    nproc_per_node: NprocOption = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Continue a session from its latest checkpoint (model, optimizer, scheduler, RNG).

    Use --set to change the stored config, e.g. --set trainer.epochs=50 to train longer.
    With the world size of the original run the continuation is exact; with another one it
    works and the log says that the sample order changed.

    Examples:

    \b
      thelper resume sessions/digits-classification
      thelper resume sessions/digits-classification --set trainer.epochs=40
      thelper resume sessions/digits-classification --eval-only
    """
    from thelper.runner import resume_session

    allow = allowed_imports(allow_import)
    pm = _pm()
    _warn_failures(pm)
    command = ["resume", str(path)] + (["--eval-only"] if eval_only else []) + (
        ["--map-location", map_location] if map_location else [])
    _launch_if_asked(nproc_per_node, "", command, sets, allow)
    session = resume_session(path, sets or [], eval_only=eval_only, map_location=map_location,
                             pm=pm, allow_imports=allow)
    if not session.is_main:
        return
    if eval_only:
        typer.echo(json.dumps(session.test_metrics, indent=2))
    typer.echo(f"session {session.name}: {session.status}; results in {session.session_dir}")


# -------------------------------------------------------------------------- config
def _validate_output(config: str, cfg: Any, issues: list[Any], fmt: str,
                     depth: Any = None, warnings: list[Any] | None = None,
                     files: list[str] | None = None) -> None:
    if fmt == "json":
        out: dict[str, Any] = {"file": str(config), "valid": cfg is not None and not issues,
                               "issues": [i.to_dict() for i in issues]}
        if files and len(files) > 1:
            out["files"] = files
        if warnings:
            out["warnings"] = [w.to_dict() for w in warnings]
        if depth is not None:
            out["depth"] = depth.to_dict()
        typer.echo(json.dumps(out, indent=2))
        return
    for warning in warnings or ():
        typer.echo(f"warning: {warning.format()}", err=True)
    if depth is not None:
        for step in depth.steps:
            typer.echo(f"  {step.name}: {step.detail} ({step.seconds:.2f} s)")
        for warning in depth.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if cfg is not None and not issues:
        how = "" if depth is None else f"; {depth.level} on CPU passed in {depth.seconds:.1f} s"
        typer.echo(f"{config}: valid ({len(cfg.datasets)} dataset(s), model "
                   f"{cfg.model.type}, {cfg.trainer.epochs} epoch(s){how})")
        return
    for issue in issues:
        typer.echo(issue.format(), err=True)
    typer.echo(f"{config}: {len(issues)} problem(s) found", err=True)


@config_app.command("validate", cls=_Command)
def validate_cmd(
    config: ConfigsArgument,
    sets: SetOption = None,
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="Output format: text or json.")] = "text",
    build: Annotated[bool, typer.Option(
        "--build", help="Also instantiate every component on CPU (datasets, transforms, "
        "model, loss, optimizer, scheduler, metrics) and check the model's output against "
        "the task on one batch. Imports torch and the plugins' code.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Like --build, then run one batch of each split through "
        "training, validation, the test and a checkpoint round trip, in a temporary "
        "directory that is removed afterwards.")] = False,
    allow_import: AllowImportOption = None,
    group: GroupOption = None,
    config_root: ConfigRootOption = None,
    allow_env: AllowEnvOption = False,
) -> None:
    """Check a config against the installed plugins (schema depth: no torch import).

    Every problem is reported at once, one per line, as FILE:LINE:COL: PATH: MESSAGE,
    FILE being the file (base, group) that set the value, or as (--set)/(env).
    Exit code 0 when valid, 2 when invalid.

    Examples:

    \b
      thelper config validate cfg.yaml
      thelper config validate cfg.yaml --build       # also build every component
      thelper config validate cfg.yaml --dry-run     # one batch of each split
      thelper config validate cfg.yaml -f json
    """
    from thelper.config import check_document
    from thelper.exceptions import ConfigError

    if fmt not in ("text", "json"):
        raise typer.BadParameter("expected text or json", param_hint="--format")
    allow = allowed_imports(allow_import)
    pm = _pm()
    if pm.failures:
        _warn_failures(pm)
    doc = None
    warnings: list[Any] = []
    try:
        doc = _load(config, sets, group, config_root, allow_env)
        cfg, issues = check_document(doc, pm.registry, failures=pm.failures,
                                     allow_imports=allow, warnings=warnings)
    except ConfigError as exc:
        if not exc.issues:
            raise
        cfg, issues = None, exc.issues
    depth = None
    if cfg is not None and doc is not None and (build or dry_run):
        from thelper.config.depths import run_depth

        depth = run_depth(doc, cfg, pm, "dry-run" if dry_run else "build",
                          keep_traceback=_STATE["traceback"])
        issues = list(depth.issues)
    _validate_output(" + ".join(map(str, config)), cfg, issues, fmt, depth, warnings,
                     doc.files if doc is not None else None)
    if cfg is None or issues:
        raise typer.Exit(2)


@config_app.command("show", cls=_Command)
def show_cmd(
    config: ConfigsArgument,
    sets: SetOption = None,
    sources: Annotated[bool, typer.Option(
        "--sources", help="End each line with '# FILE:LINE' of the file that set the value "
        "(or --set, env, default).")] = False,
    allow_import: AllowImportOption = None,
    group: GroupOption = None,
    config_root: ConfigRootOption = None,
    allow_env: AllowEnvOption = False,
) -> None:
    """Print the resolved config as YAML: bases, files and groups merged, overrides and
    interpolations applied, defaults filled in (what 'thelper run' would train).

    An invalid config prints its problems like 'config validate' and exits with 2.

    Examples:

    \b
      thelper config show cfg.yaml
      thelper config show base.yaml --group model=unet --sources
    """
    from thelper.config import check_document
    from thelper.config.compose import resolved_yaml, value_sources
    from thelper.exceptions import ConfigError

    allow = allowed_imports(allow_import)
    pm = _pm()
    if pm.failures:
        _warn_failures(pm)
    doc = None
    try:
        doc = _load(config, sets, group, config_root, allow_env)
        cfg, issues = check_document(doc, pm.registry, failures=pm.failures,
                                     allow_imports=allow, warnings=[])
    except ConfigError as exc:
        if not exc.issues:
            raise
        cfg, issues = None, exc.issues
    if cfg is None or issues or doc is None:
        _validate_output(" + ".join(map(str, config)), None, issues, "text")
        raise typer.Exit(2)
    data = cfg.model_dump(mode="json", exclude_none=False)
    typer.echo(resolved_yaml(data, value_sources(doc, pm.registry) if sources else None),
               nl=False)


@config_app.command("groups", cls=_Command)
def groups_cmd(
    config: Annotated[list[Path] | None, typer.Argument(
        metavar="CONFIG", help="Config files whose directories are config roots.")
    ] = None,
    config_root: ConfigRootOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the config groups --group can pick: folders of partial configs in the config
    roots (the directories of CONFIG... and each --config-root), with their choices.

    Folders whose name starts with '_' or '.' (e.g. _bases/) are not groups.

    Examples:

    \b
      thelper config groups cfg.yaml
    """
    from thelper.config.compose import config_roots, list_groups
    from thelper.exceptions import ConfigError

    if not config and not config_root:
        raise typer.BadParameter("name a config file or give --config-root DIR",
                                 param_hint="CONFIG")
    for path in config or []:
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist; check the path")
    roots = config_roots(config or [], config_root or [])
    found = list_groups(roots)
    if as_json:
        typer.echo(json.dumps({"roots": [shown for _, shown in roots], "groups": found},
                              indent=2))
        return
    if not found:
        typer.echo("no groups in " + ", ".join(shown for _, shown in roots) + " (a group is "
                   "a folder of .yaml files, picked with --group NAME=CHOICE)")
        return
    for name, info in sorted(found.items()):
        typer.echo(f"{name}: {', '.join(info['choices'])}  ({info['dir']}/)")


@config_app.command("schema", cls=_Command)
def schema_cmd(
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Write the schema to this file instead of stdout.")] = None,
    partial: Annotated[bool, typer.Option(
        "--partial", help="The variant for partial files (bases, groups, files with "
        "'bases'): nothing required, 'bases' and '_delete_' allowed.")] = False,
) -> None:
    """Print the JSON Schema of session configs for the installed plugins.

    Field descriptions included; for editors (YAML language server: put
    '# yaml-language-server: $schema=PATH' on the first line of a config).
    THELPER_DISABLE_PLUGIN_AUTOLOAD=1 gives the core-only schema.

    Examples:

    \b
      thelper config schema > thelper.schema.json
      thelper config schema --partial
    """
    from thelper.config.schema import schema_text

    pm = _pm()
    if pm.failures:
        _warn_failures(pm)
    text = schema_text(pm.registry)
    if partial:
        from thelper.config.compose import partial_schema

        text = json.dumps(partial_schema(json.loads(text)), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    _write_text(output, text)
    typer.echo(f"wrote {output} ({len(pm.registry.components())} components)", err=True)


def _write_text(path: Path, text: str) -> None:
    from thelper.exceptions import ConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


@config_app.command("init", cls=_Command)
def init_cmd(
    template: Annotated[str | None, typer.Argument(
        help="Starter config: digits-mlp (default), digits-cnn, image-folder; see --list.")
    ] = None,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Config file to write (default: <template>.yaml); the "
        "session name is taken from its file name.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an existing config file.")] = False,
    schema: Annotated[str | None, typer.Option(
        "--schema", help="Schema path or URL for the '# yaml-language-server: $schema=' "
        "header. Default: write thelper-config.schema.json (installed plugins) beside the "
        "config and point to it.")] = None,
    list_templates: Annotated[bool, typer.Option(
        "--list", help="List the templates and exit.")] = False,
) -> None:
    """Write a commented starter config that validates with the installed plugins.

    Refuses to overwrite an existing file unless --force is given.

    Examples:

    \b
      thelper config init --list
      thelper config init classification -o my.yaml
    """
    from thelper.config.starter import (
        DEFAULT_TEMPLATE,
        SCHEMA_FILE,
        TEMPLATES,
        render,
        session_name,
    )
    from thelper.exceptions import ConfigError

    if list_templates:
        for t in TEMPLATES.values():
            needs = f" [needs {', '.join(t.requires)}]" if t.requires else ""
            typer.echo(f"{t.name:14s} {t.description}{needs}")
        return
    name = template or DEFAULT_TEMPLATE
    path = output if output is not None else Path(f"{name}.yaml")
    render(name, "check", "check")  # unknown template: fail before writing anything
    if path.exists() and not force:
        raise ConfigError(f"{str(path)!r} already exists; pass --force to overwrite it, or "
                          "choose another file with -o")
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory; give a file name with -o")
    pm = None
    if schema is None:
        from thelper.config.schema import SCHEMA_ID, schema_text

        pm = _pm()
        schema_path = path.parent / SCHEMA_FILE
        if not schema_path.exists() or SCHEMA_ID in schema_path.read_text(encoding="utf-8",
                                                                             errors="replace"):
            _write_text(schema_path, schema_text(pm.registry))
            typer.echo(f"wrote {schema_path}", err=True)
        schema = SCHEMA_FILE
    text = render(name, session_name(path), schema)
    _write_text(path, text)
    typer.echo(f"wrote {path} (template {name}); check it with: thelper config validate "
               f"{path}")
    missing = [d for d in TEMPLATES[name].requires
               if pm is not None and d not in {c.distribution for c in
                                               pm.registry.components()}]
    if missing:
        typer.echo(f"warning: template {name!r} uses components of {', '.join(missing)}, "
                   "which is not loaded here", err=True)


# ------------------------------------------------------------------------- plugins
@plugins_app.command("list", cls=_Command)
def plugins_list_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List plugins (name, distribution, version) and their components by kind.

    Plugins that failed to load are listed with their error, and blocked plugins (-p no:NAME,
    THELPER_BLOCK_PLUGINS) by name; exit code stays 0.

    Examples:

    \b
      thelper plugins list
      thelper plugins list --json
      thelper -p no:vision plugins list
    """
    pm = _pm()
    described = pm.describe()
    failures = [{"plugin": f.name, "distribution": f.distribution, "stage": f.stage,
                 "error": f.error} for f in pm.failures]
    blocked = [{"plugin": name, "distribution": dist}
               for name, dist in sorted(pm.blocked_plugins.items())]
    if as_json:
        typer.echo(json.dumps({"plugins": described, "failures": failures,
                               "blocked": blocked}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    out = Console(highlight=False)
    table = Table(title="thelper plugins", show_lines=True)
    for col in ("plugin", "distribution", "version", "components"):
        table.add_column(col, overflow="fold")
    for p in described:
        comps = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in
                          p["components"].items()) or "(lifecycle hooks only)"
        table.add_row(p["plugin"], p["distribution"] or "-", p["version"] or "-", comps)
    out.print(table)
    for f in failures:
        out.print(f"FAILED {f['plugin']} ({f['distribution'] or 'unknown distribution'}): "
                  f"{f['stage']}: {f['error']}", style="red", markup=False)
    for b in blocked:
        out.print(f"blocked {b['plugin']} ({b['distribution'] or 'unknown distribution'}): "
                  "not loaded", style="yellow", markup=False)


# ---------------------------------------------------------------------------- main
class _UsageError(Exception):
    """A malformed root option (exit code 2, reported like typer's usage errors)."""


def _split_blocked(argv: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Take the root ``-p`` options (before the command) out of ``argv``: ``-p no:NAME``
    blocks a plugin, ``-p MODULE`` loads a local plugin module (like ``pytest -p``).

    Returns:
        ``(arguments for typer, blocked plugin names, local plugin modules)``.

    Raises:
        _UsageError: ``-p`` without a value, or with an empty ``no:``.
    """
    rest: list[str] = []
    blocked: list[str] = []
    local: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):  # the command: root options end here
            rest += argv[i:]
            break
        if arg == "-p" or (arg.startswith("-p") and not arg.startswith("--")):
            value = arg[2:]
            if arg == "-p":
                if i + 1 >= len(argv):
                    raise _UsageError("Option '-p' requires an argument.")
                i += 1
                value = argv[i]
            if value.startswith("no:"):
                if len(value) <= 3:
                    raise _UsageError("Invalid value for -p: expected -p no:NAME to block a "
                                      "plugin or -p MODULE to load one, got 'no:'")
                blocked.append(value[3:])
            elif value and not value.startswith("-"):
                local.append(value)
            else:
                raise _UsageError(f"Invalid value for -p: expected -p no:NAME to block a "
                                  f"plugin or -p MODULE to load one, got {value!r}")
        else:
            rest.append(arg)
        i += 1
    return rest, blocked, local


#: Commands that finish in a moment; they run with the cyclic garbage collector paused.
SHORT_COMMANDS = frozenset({("config", "validate"), ("config", "schema"), ("config", "init"),
                            ("config", "show"), ("config", "groups"), ("plugins", "list")})


def _is_short(args: list[str]) -> bool:
    """Whether ``args`` ask for help, the version or one of :data:`SHORT_COMMANDS`."""
    if any(a in ("-h", "--help", "--version") for a in args):
        return True
    words = tuple(a for a in args if not a.startswith("-"))[:2]
    return not words or words in SHORT_COMMANDS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``thelper`` console script; returns the exit code.

    Start-up (plugin loading, typer, pydantic's validators) creates many objects that live
    until the process ends, and the cyclic garbage collector kept walking them: pausing it
    saves about 0.07 s of the 0.45 s of ``config validate`` (benchmarks/README.md). It is
    paused while the CLI starts and for the commands of :data:`SHORT_COMMANDS`, and turned
    back on before any other command runs (training, tools, plugin commands).
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _main(list(sys.argv[1:] if argv is None else argv), gc_was_enabled)
    finally:
        if gc_was_enabled:
            gc.enable()


#: Shells that typer's completion supports.
SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _completion(args: list[str]) -> int | None:
    """Handle ``--show-completion [SHELL]`` / ``--install-completion [SHELL]`` given before
    the command (typer's own options would import pydantic for every command)."""
    roots = [a for a in args if a in ("--show-completion", "--install-completion")]
    if not roots:
        return None
    i = args.index(roots[0])
    shell = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else None
    from typer._completion_shared import _get_shell_name, get_completion_script, install

    shell = shell or _get_shell_name()
    if shell not in SHELLS:
        typer.echo(f"error: cannot {'show' if roots[0] == '--show-completion' else 'install'} "
                   f"completion for shell {shell!r}: name one of {', '.join(SHELLS)}, e.g. "
                   f"thelper {roots[0]} bash", err=True)
        return 2
    if roots[0] == "--show-completion":
        typer.echo(get_completion_script(prog_name="thelper", complete_var="_THELPER_COMPLETE",
                                         shell=shell))
        return 0
    shell, path = install(shell=shell, prog_name="thelper", complete_var="_THELPER_COMPLETE")
    typer.echo(f"{shell} completion installed in {path}; it takes effect in a new shell")
    return 0


def _main(args: list[str], enable_gc: bool) -> int:
    from thelper.exceptions import ThelperError
    from thelper.logs import set_verbosity

    set_verbosity(0)  # -q/-v hold for one invocation
    try:
        args, _STATE["blocked"], _STATE["local"] = _split_blocked(args)
    except _UsageError as exc:
        typer.echo("Usage: thelper [OPTIONS] COMMAND [ARGS]...\nTry 'thelper -h' for help.\n\n"
                   f"Error: {exc}", err=True)  # as click words its usage errors
        return 2
    if os.environ.get("_THELPER_COMPLETE"):  # the shell asks for completions (typer's classes)
        from typer._completion_classes import completion_init

        completion_init()
    done = _completion(args[:1] + args[1:2])  # only as the first root option
    if done is not None:
        return done
    try:
        pm = _pm()
    except ThelperError as exc:  # a local plugin module (-p MODULE) that does not load
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    if _STATE.get("commands_of") != id(pm):
        # the core's own commands, before any plugin added its: another plugin manager in
        # this process (tests, -p options) starts again from them, never adds twice
        core = _STATE.setdefault("core_commands", (list(app.registered_commands),
                                                   list(app.registered_groups)))
        app.registered_commands[:] = core[0]
        app.registered_groups[:] = core[1]
        _STATE["commands_of"] = id(pm)
        try:
            pm.add_commands(app)
        except Exception:  # noqa: BLE001 - never let a plugin break the CLI
            pass
    if enable_gc and not _is_short(args):
        gc.enable()
    try:
        app(args=args, prog_name="thelper", standalone_mode=True)
        return 0
    except SystemExit as exc:  # typer/click: usage errors exit 2, --help exits 0
        stop = _stop_of(exc)  # typer turns a KeyboardInterrupt into exit 130
        if stop is not None:
            return _stop_code(stop)
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except ThelperError as exc:
        if _STATE["traceback"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _stop_code(exc)
    except Exception as exc:  # unexpected failures: one line unless --traceback
        if _STATE["traceback"]:
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --traceback "
                   "for details)", err=True)
        return 1


def _stop_of(exc: BaseException) -> BaseException | None:
    """The stop (a ``KeyboardInterrupt`` that carries an ``exit_code``, e.g. the trainer's
    ``TimeLimitReached``) behind the ``SystemExit`` that typer made of it, if any."""
    seen = exc.__cause__ or exc.__context__
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, KeyboardInterrupt) and hasattr(seen, "exit_code"):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _stop_code(exc: BaseException) -> int:
    """Exit code of a stop: 130 (interrupted), or the ``exit_code`` that a
    ``thelper.train.trainer.StopRequested`` carries: 3 (time limit), 75 (requeue)."""
    typer.echo(getattr(exc, "summary", "interrupted"), err=True)
    code = getattr(exc, "exit_code", 130)
    return code if isinstance(code, int) else 130


def entry() -> None:  # pragma: no cover - console script
    """The ``thelper`` console script: run :func:`main` and exit with its code."""
    code = main()
    if "torch" not in sys.modules:
        # A short command (help, plugins list, config validate, ...): every object alive now
        # lives until the process ends, and freezing them spares the interpreter's final
        # garbage collections a walk over all of them (pydantic's models and validators above
        # all), 0.03-0.1 s. Not after torch: the bindings of triton (imported by torch) report
        # the objects that the final collection skips as leaks, and a command that imported
        # torch does not need these milliseconds.
        gc.freeze()
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
        # a rank of a multi-process job: its work is saved; the interpreter's teardown is
        # where gloo's threads could abort it (thelper.launch.exit_now)
        from thelper.launch import exit_now

        exit_now(code, collect=True)
    sys.exit(code)

