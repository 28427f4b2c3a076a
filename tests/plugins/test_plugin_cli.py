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
from plugin_test_helpers import GOOD_PLUGIN, IMPORT_ERROR_PLUGIN, MOONS_CONFIG, FakeSite, squash

RunCli = Callable[..., subprocess.CompletedProcess[str]]
CORE_PLUGINS = {"core", "core-commands", "run-record", "tensorboard"}


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
        "for info in infos:\n"
        "    info.params()\n"
        "heavy = sorted(m for m in ('torch', 'sklearn', 'numpy') if m in sys.modules)\n"
        "print(len(infos), heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["3", "[]"]
