"""The plugin layer: an acyclic manager, built-ins blockable like any plugin, and CLI
commands whose names two plugins cannot both claim."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import thelper
import thelper.hookspecs
import thelper.plugins
from thelper.config import check_document, document_from_dict
from thelper.plugins import (
    BUILTIN_DISTRIBUTION,
    BUILTIN_PLUGINS,
    CORE_PLUGIN,
    ThelperPluginManager,
    hookimpl,
)

BUILTIN_MODULES = tuple(BUILTIN_PLUGINS.values())


def _python(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)


# ------------------------------------------------------------------ an acyclic manager
def test_importing_the_manager_imports_no_builtin_nor_torch_nor_pydantic():
    code = (
        "import sys\n"
        "import thelper.plugins\n"
        f"loaded = [m for m in {BUILTIN_MODULES + ('torch', 'pydantic')!r} if m in sys.modules]\n"
        "print('LOADED', loaded)\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert "LOADED []" in res.stdout


def test_the_manager_source_never_imports_what_it_registers():
    source = Path(thelper.plugins.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
    assert not imported & set(BUILTIN_MODULES)
    assert not {m for m in imported if m.startswith(("thelper.tools", "thelper.trackers"))}


def test_builtins_register_without_the_manager():
    res = _python("import sys\nimport thelper._builtins\n"
                  "print('MANAGER', 'thelper.plugins' in sys.modules)\n")
    assert res.returncode == 0, res.stderr
    assert "MANAGER False" in res.stdout


def test_hookimpl_lives_beside_the_specs_and_is_re_exported():
    assert thelper.plugins.hookimpl is thelper.hookspecs.hookimpl
    assert thelper.hookimpl is thelper.hookspecs.hookimpl
    assert hookimpl.project_name == thelper.hookspecs.PROJECT == "thelper"


def test_builtins_are_a_table_loaded_like_plugins():
    pm = ThelperPluginManager(autoload=False)
    assert list(pm.records) == list(BUILTIN_PLUGINS)
    assert {r.distribution for r in pm.records.values()} == {BUILTIN_DISTRIBUTION}
    assert pm.blocked_plugins == {} and pm.failures == []
    assert pm.registry.canonical("model", "mlp") == "mlp"
    assert pm.registry.get("model", "mlp").plugin == CORE_PLUGIN


# -------------------------------------------------------------------- blocking built-ins
def test_blocking_the_core_builtins_imports_nothing_of_them_and_is_reported(mlp_config):
    code = (
        "import sys\n"
        "from thelper.plugins import ThelperPluginManager\n"
        "pm = ThelperPluginManager(autoload=False, blocked=['core'])\n"
        "print('IMPORTED', 'thelper._builtins' in sys.modules)\n"
        "print('RECORDS', sorted(pm.records))\n"
        "print('BLOCKED', pm.blocked_plugins)\n"
        "print('MLP', pm.registry.canonical('model', 'mlp'))\n"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr
    assert "IMPORTED False" in res.stdout
    assert ("RECORDS ['core-commands', 'core-predict', 'run-record', 'runs-commands', "
            "'tensorboard', 'trackers']") in res.stdout
    assert "BLOCKED {'core': 'thelper-core'}" in res.stdout
    assert "MLP None" in res.stdout

    pm = ThelperPluginManager(autoload=False, blocked=["core"])
    assert pm.failures == []  # blocking is not a failure
    _, issues = check_document(document_from_dict(mlp_config), pm.registry)
    by_path = {i.path: i.message for i in issues}
    assert by_path["model.type"].startswith("'mlp' is not a registered model")
    assert "blocked plugins, not loaded: 'core' (thelper-core)" in by_path["model.type"]


def test_builtins_are_blocked_by_the_environment_too(monkeypatch):
    monkeypatch.setenv("THELPER_BLOCK_PLUGINS", "core-commands, tensorboard")
    pm = ThelperPluginManager(autoload=False)
    assert set(pm.records) == {"core", "run-record", "core-predict", "trackers",
                               "runs-commands"}
    assert pm.blocked_plugins == {"core-commands": "thelper-core",
                                  "tensorboard": "thelper-core"}
    app = typer.Typer()
    pm.add_commands(app)
    assert app.registered_commands == []  # split/export/infer come from core-commands


def test_cli_with_the_core_blocked_says_so(write_config, mlp_config):
    exe = Path(sys.executable).parent / "thelper"
    path = write_config(mlp_config)
    res = subprocess.run([str(exe), "-p", "no:core", "config", "validate", str(path),
                          "--format", "json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    by_path = {i["path"]: i["message"] for i in json.loads(res.stdout)["issues"]}
    assert "blocked plugins, not loaded: 'core' (thelper-core)" in by_path["model.type"]


def test_a_builtin_that_fails_to_import_is_isolated(monkeypatch):
    table = {**BUILTIN_PLUGINS, "broken-builtin": "thelper_no_such_module_for_tests"}
    monkeypatch.setattr(thelper.plugins, "BUILTIN_PLUGINS", table)
    pm = ThelperPluginManager(autoload=False)
    assert set(pm.records) == set(BUILTIN_PLUGINS)
    [failure] = pm.failures
    assert (failure.name, failure.distribution, failure.stage) == \
        ("broken-builtin", "thelper-core", "import")
    assert "ModuleNotFoundError" in failure.error
    assert pm.registry.canonical("model", "mlp") == "mlp"


# ---------------------------------------------------------------- duplicate CLI commands
class _Hello:
    def __init__(self, greeting: str, group: bool = False) -> None:
        self.greeting = greeting
        self.group = group

    @hookimpl
    def thelper_add_commands(self, app: typer.Typer) -> None:
        greeting = self.greeting

        def hello() -> None:
            typer.echo(greeting)

        if self.group:
            sub = typer.Typer()
            sub.command("say")(hello)
            sub.command("shout")(hello)
            app.add_typer(sub, name="hello")
        else:
            app.command("hello")(hello)


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.command("run")
    def run() -> None:
        """Stands in for the core CLI's own commands."""

    return app


@pytest.fixture
def pm() -> ThelperPluginManager:
    return ThelperPluginManager(autoload=False, blocked=["core-commands"])


def test_two_plugins_adding_one_command_name_is_an_error_naming_both(pm):
    pm.register(_Hello("from a"), name="plugin-a", distribution="dist-a")
    pm.register(_Hello("from b"), name="plugin-b", distribution="dist-b")
    app = _app()
    pm.add_commands(app)
    [failure] = pm.failures
    assert (failure.name, failure.distribution, failure.stage) == \
        ("plugin-b", "dist-b", "add commands")
    assert failure.error.startswith(
        "duplicate command 'hello': added by plugin 'plugin-a' (dist-a) and by plugin "
        "'plugin-b' (dist-b)")
    assert "-p no:<plugin>" in failure.error
    assert "plugin 'plugin-b' (from dist-b) failed to add commands" in failure.format()
    result = CliRunner().invoke(app, ["hello"])
    assert result.exit_code == 0 and result.output == "from a\n"  # the first one is kept


def test_a_plugin_command_cannot_take_a_core_command_name(pm):
    class Runner:
        @hookimpl
        def thelper_add_commands(self, app: typer.Typer) -> None:
            @app.command()
            def run() -> None:  # named from the function: 'run'
                typer.echo("hijacked")

    pm.register(Runner(), name="runner", distribution=None)
    app = _app()
    pm.add_commands(app)
    [failure] = pm.failures
    assert "duplicate command 'run': added by the thelper CLI itself and by plugin 'runner' " \
        "(registered in-process)" in failure.error
    [kept] = app.registered_commands
    assert kept.callback.__doc__.startswith("Stands in for the core CLI")


def test_duplicate_command_groups_and_commands_added_twice(pm):
    pm.register(_Hello("group", group=True), name="plugin-g", distribution="dist-g")
    pm.register(_Hello("single"), name="plugin-s", distribution="dist-s")

    class Twice:
        @hookimpl
        def thelper_add_commands(self, app: typer.Typer) -> None:
            app.command("again")(lambda: None)
            app.command("again")(lambda: None)

    pm.register(Twice(), name="twice", distribution=None)
    app = _app()
    pm.add_commands(app)
    errors = {f.name: f.error for f in pm.failures}
    assert set(errors) == {"plugin-s", "twice"}
    assert "duplicate command 'hello': added by plugin 'plugin-g' (dist-g) and by plugin " \
        "'plugin-s' (dist-s)" in errors["plugin-s"]
    assert "duplicate command 'again': added twice by plugin 'twice'" in errors["twice"]
    assert CliRunner().invoke(app, ["hello", "say"]).output == "group\n"


def test_the_core_commands_add_without_conflict():
    pm = ThelperPluginManager(autoload=False)
    app = _app()
    pm.add_commands(app)
    assert pm.failures == []
    assert {c.name for c in app.registered_commands} >= {"run", "split", "export", "infer"}
