"""Level 3: the ``thelper`` console script in subprocesses, with fake distributions on
PYTHONPATH."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from plugin_test_helpers import (
    BAD_PARAMS_PLUGIN,
    CORE_CONFIG,
    GOOD_PLUGIN,
    IMPORT_ERROR_PLUGIN,
    MOONS_CONFIG,
    ROOT,
    FakeSite,
    core_config,
    squash,
)

RunCli = Callable[..., subprocess.CompletedProcess[str]]
CORE_PLUGINS = {"core", "core-commands", "core-predict", "run-record", "tensorboard",
                "trackers", "runs-commands"}


@pytest.fixture
def site(fake_site: FakeSite) -> FakeSite:
    """A working fake plugin and one that fails to import."""
    fake_site.add("fakeplug", "1.0", "fake", "fake_cli_thelper_plugin", GOOD_PLUGIN)
    fake_site.add("brokenplug", "0.3", "broken", "broken_cli_thelper_plugin", IMPORT_ERROR_PLUGIN)
    return fake_site


def _json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plugins_list_json(run_cli: RunCli, site: FakeSite) -> None:
    data = _json(run_cli("plugins", "list", "--json", pythonpath=site.path))
    plugins = {p["plugin"]: p for p in data["plugins"]}
    assert CORE_PLUGINS <= set(plugins)
    assert plugins["example"] == {
        "plugin": "example",
        "distribution": "thelper-plugin-example",
        "version": "0.1.0",
        "components": {
            "dataset": ["example_moons"],
            "model": ["example_rbf_net"],
            "metric": ["example_balanced_accuracy"],
        },
    }
    assert plugins["fake"]["distribution"] == "fakeplug"
    assert plugins["fake"]["version"] == "1.0"
    assert plugins["fake"]["components"] == {"metric": ["fake_count"]}
    assert data["failures"] == [
        {
            "plugin": "broken",
            "distribution": "brokenplug",
            "stage": "import",
            "error": "ImportError: this plugin needs the 'unobtainium' package",
        }
    ]


def test_plugins_list_text_names_failures(run_cli: RunCli, site: FakeSite) -> None:
    result = run_cli("plugins", "list", pythonpath=site.path)
    assert result.returncode == 0, result.stderr
    out = squash(result.stdout)
    assert "example_balanced_accuracy" in out and "thelper-plugin-example" in out
    assert "FAILED broken (brokenplug): import: ImportError" in out


def test_block_a_plugin_with_p_no(run_cli: RunCli, site: FakeSite) -> None:
    data = _json(
        run_cli(
            "-p", "no:example", "-p", "no:broken", "plugins", "list", "--json", pythonpath=site.path
        )
    )
    plugins = {p["plugin"] for p in data["plugins"]}
    assert "example" not in plugins and "fake" in plugins
    assert data["failures"] == []  # a blocked plugin is never imported
    assert {b["plugin"] for b in data["blocked"]} == {"example", "broken"}


def test_disable_autoload_leaves_only_core_plugins(run_cli: RunCli, site: FakeSite) -> None:
    data = _json(
        run_cli(
            "plugins",
            "list",
            "--json",
            pythonpath=site.path,
            env={"THELPER_DISABLE_PLUGIN_AUTOLOAD": "1"},
        )
    )
    assert {p["plugin"] for p in data["plugins"]} == CORE_PLUGINS
    assert {p["distribution"] for p in data["plugins"]} == {"thelper-core"}
    assert data["failures"] == []


def test_validate_succeeds_despite_a_broken_plugin(run_cli: RunCli, site: FakeSite) -> None:
    result = run_cli("config", "validate", str(MOONS_CONFIG), pythonpath=site.path)
    assert result.returncode == 0, result.stderr
    assert "valid (1 dataset(s), model example_rbf_net, 10 epoch(s))" in result.stdout
    warning = squash(result.stderr)
    assert "plugin 'broken' (from brokenplug) failed to import" in warning


def test_validate_fails_when_the_plugin_is_blocked(run_cli: RunCli, tmp_path: Path) -> None:
    result = run_cli(
        "-p", "no:example", "config", "validate", str(MOONS_CONFIG), "--format", "json"
    )
    assert result.returncode == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    by_path = {i["path"]: i for i in report["issues"]}
    issue = by_path["datasets.moons.type"]
    assert "'example_moons' is not a registered dataset" in issue["message"]
    assert issue["file"] == str(MOONS_CONFIG) and issue["line"] is not None


def test_validate_reports_plugin_param_errors(run_cli: RunCli) -> None:
    result = run_cli(
        "config",
        "validate",
        str(MOONS_CONFIG),
        "--set",
        "model.params.num_centres=8",
        "--set",
        "trainer.metrics.balanced_accuracy.params.adjusted=maybe",
    )
    assert result.returncode == 2
    err = squash(result.stderr)
    assert "model.params.num_centres: unknown key 'num_centres'; did you mean 'num_centers'?" in err
    assert "trainer.metrics.balanced_accuracy.params.adjusted" in err
    assert "2 problem(s) found" in err


def test_plugin_module_does_not_import_torch(clean_thelper_env: None) -> None:
    code = (
        "import sys\n"
        "import thelper_plugin_example.plugin as p\n"
        "infos = p.thelper_register_components()\n"
        "assert 'pydantic' not in sys.modules, 'registering imported pydantic'\n"
        "for info in infos:\n"
        "    info.params_model()\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'numpy') if m in sys.modules)\n"
        "print(len(infos), heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "[]"]


# ------------------------------------------------------------------- start-up cost
#: Modules that ``--help`` and ``plugins list`` must never import: pydantic and torch are the
#: heavy ones (issue 7); the params modules are needed only to validate a config.
PARAMS_MODULES = (
    "thelper.builtin_params",
    "thelper.tasks",
    "thelper_vision.params",
    "thelper_vision.transform_params",
    "thelper_vision.dense_params",
    "thelper_vision.seg_params",
    "thelper_vision.det_params",
    "thelper_vision.image_params",
    "thelper_plugin_example.params",
)
DIGITS_CONFIG = ROOT / "examples" / "digits-classification" / "config.yaml"


def _imported_by(argv: list[str], watch: tuple[str, ...]) -> tuple[int, list[str]]:
    """Exit code of ``thelper ARGV`` run in a fresh interpreter, and which of ``watch`` it
    imported."""
    code = (
        "import sys\n"
        "from thelper.cli import main\n"
        f"rc = main({argv!r})\n"
        f"print('IMPORTED', rc, ','.join(m for m in {watch!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    marker = result.stdout.splitlines()[-1].split(" ", 2)
    assert marker[0] == "IMPORTED", result.stdout
    return int(marker[1]), [m for m in marker[2].split(",") if m] if len(marker) > 2 else []


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["plugins", "list"], ["plugins", "list", "--json"], ["config", "--help"]],
    ids=" ".join,
)
def test_help_and_plugins_list_import_neither_pydantic_nor_torch(
    argv: list[str], clean_thelper_env: None
) -> None:
    watch = ("pydantic", "torch", "yaml", "thelper.session", *PARAMS_MODULES)
    rc, imported = _imported_by(argv, watch)
    assert rc == 0
    assert imported == [], f"'thelper {' '.join(argv)}' imported {imported}"


def test_validate_imports_only_the_params_modules_it_needs(clean_thelper_env: None) -> None:
    core = [f"thelper.builtin_params.{m}" for m in
            ("tasks", "data", "models", "losses", "optim", "metrics", "trainer", "misc")]
    watch = ("torch", "torchvision", "thelper.tasks", *core, "thelper_vision.params",
             "thelper_vision.transform_params", "thelper_vision.seg_params",
             "thelper_vision.det_params", "thelper_vision.image_params",
             "thelper_plugin_example.params")
    rc, imported = _imported_by(["config", "validate", str(DIGITS_CONFIG)], watch)
    assert rc == 0
    # the digits example: sklearn dataset, simple_cnn, random_affine, cross_entropy, adam,
    # reduce_lr_on_plateau, accuracy/confusion matrix, the default trainer
    assert imported == ["thelper.builtin_params.data", "thelper.builtin_params.losses",
                        "thelper.builtin_params.optim", "thelper.builtin_params.metrics",
                        "thelper.builtin_params.trainer", "thelper_vision.params",
                        "thelper_vision.transform_params"]
    sr = ROOT / "examples" / "super-resolution" / "config.yaml"
    rc, imported = _imported_by(["config", "validate", str(sr)], watch)
    assert rc == 0
    assert imported == ["thelper.builtin_params.optim", "thelper.builtin_params.trainer",
                        "thelper_vision.transform_params", "thelper_vision.image_params"]


@pytest.fixture
def bad_params_site(fake_site: FakeSite) -> FakeSite:
    """A plugin with a misspelled params module and a misspelled params attribute."""
    fake_site.add("badparamsplug", "2.0", "badparams", "badparams_cli_thelper_plugin",
                  BAD_PARAMS_PLUGIN)
    return fake_site


def test_plugins_list_names_a_missing_params_module(
    run_cli: RunCli, bad_params_site: FakeSite
) -> None:
    data = _json(run_cli("plugins", "list", "--json", pythonpath=bad_params_site.path))
    plugins = {p["plugin"]: p for p in data["plugins"]}
    # the missing attribute is only found when a config names the component
    assert plugins["badparams"]["components"] == {"metric": ["fake_good", "fake_noattr"]}
    (failure,) = data["failures"]
    assert (failure["plugin"], failure["distribution"], failure["stage"]) == (
        "badparams", "badparamsplug", "register")
    assert "metric 'fake_nomodule' from badparamsplug" in failure["error"]
    assert "'badparams_cli_thelper_plugin_params_typo:CountParams'" in failure["error"]
    assert "-p no:badparams" in failure["error"]

    text = run_cli("plugins", "list", pythonpath=bad_params_site.path)
    assert text.returncode == 0, text.stderr
    assert "Traceback" not in text.stdout + text.stderr
    assert ("FAILED badparams (badparamsplug): register: metric 'fake_nomodule' from "
            "badparamsplug: the module of its params model") in squash(text.stdout)


def test_validate_names_bad_params_references(
    run_cli: RunCli, bad_params_site: FakeSite, tmp_path: Path
) -> None:
    trainer = {**CORE_CONFIG["trainer"], "metrics": {
        "noattr": {"type": "fake_noattr"},
        "nomodule": {"type": "fake_nomodule_alias"},
        "good": {"type": "fake_good"},
        "accuracy": {"type": "accuracy"},
    }}
    path = tmp_path / "bad-params.json"
    path.write_text(json.dumps(core_config(trainer=trainer)))
    result = run_cli("config", "validate", str(path), "--format", "json",
                     pythonpath=bad_params_site.path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    issues = {i["path"]: i["message"] for i in json.loads(result.stdout)["issues"]}
    assert set(issues) == {"trainer.metrics.noattr.type", "trainer.metrics.nomodule.type"}
    noattr = issues["trainer.metrics.noattr.type"]
    assert "metric 'fake_noattr' from badparamsplug: cannot import its params model " \
           "'badparams_cli_thelper_plugin:NoSuchParams': AttributeError" in noattr
    assert "-p no:badparams" in noattr
    nomodule = issues["trainer.metrics.nomodule.type"]
    assert "'fake_nomodule_alias' is not a registered metric" in nomodule
    assert "plugin 'badparams' (badparamsplug) registers it, but it was refused" in nomodule
    assert "'badparams_cli_thelper_plugin_params_typo:CountParams'" in nomodule
    warning = squash(result.stderr)
    assert "plugin 'badparams' (from badparamsplug) failed to register" in warning


@pytest.mark.parametrize(("argv", "message"), [
    (["-p"], "Error: Option '-p' requires an argument."),
    # a name is a local plugin module (like pytest -p): it must import
    (["-p", "no_such_local_module", "plugins", "list"],
     "error: -p no_such_local_module: cannot import local plugin module"),
    (["-pno:", "plugins", "list"], "Error: Invalid value for -p: expected -p no:NAME to block "
     "a plugin or -p MODULE to load one, got 'no:'"),
])
def test_malformed_p_option_is_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from thelper.cli import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err
