"""Level 1: plugins registered in-process with ``ThelperPluginManager.register``."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import typer
from plugin_test_helpers import MOONS_CONFIG, core_config
from pydantic import ValidationError
from typer.testing import CliRunner

import thelper_plugin_example.plugin as example_plugin
from thelper.config import check_document, document_from_dict, load_config
from thelper.exceptions import PluginError
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.runner import run_session
from thelper_plugin_example.params import BalancedAccuracyParams, MoonsParams, RBFNetParams

EXAMPLE_COMPONENTS = {
    ("dataset", "example_moons"): MoonsParams,
    ("model", "example_rbf_net"): RBFNetParams,
    ("metric", "example_balanced_accuracy"): BalancedAccuracyParams,
}


@pytest.fixture
def pm(clean_thelper_env: None) -> ThelperPluginManager:
    """Core plugins plus the example plugin registered in-process (no entry points)."""
    manager = ThelperPluginManager(autoload=False, blocked=["tensorboard"])
    manager.register(example_plugin, name="example-inproc", distribution=None)
    return manager


class Recorder:
    """A plugin object recording every lifecycle hook call, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    @hookimpl
    def thelper_session_start(self, session: Any) -> None:
        self.calls.append(("session_start", {"name": session.name, "task": session.task.to_dict()}))

    @hookimpl
    def thelper_epoch_end(
        self, session: Any, epoch: int, metrics: dict[str, dict[str, float]]
    ) -> None:
        self.calls.append(("epoch_end", {"epoch": epoch, "metrics": metrics}))

    @hookimpl
    def thelper_checkpoint_saved(self, session: Any, path: Path, epoch: int, is_best: bool) -> None:
        self.calls.append(("checkpoint_saved", {"path": path, "epoch": epoch, "is_best": is_best}))

    @hookimpl
    def thelper_evaluation_end(
        self, session: Any, split: str, epoch: int, metrics: dict[str, float]
    ) -> None:
        self.calls.append(("evaluation_end", {"split": split, "metrics": metrics}))

    @hookimpl
    def thelper_session_end(self, session: Any, status: str, error: BaseException | None) -> None:
        self.calls.append(("session_end", {"status": status, "error": error}))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [args for n, args in self.calls if n == name]


# --------------------------------------------------------------------------- registry
def test_register_adds_components_stamped_with_plugin(pm: ThelperPluginManager) -> None:
    registry = pm.registry
    for (kind, name), params in EXAMPLE_COMPONENTS.items():
        info = registry.get(kind, name)
        assert info.plugin == "example-inproc"
        assert info.distribution is None
        assert info.params_model is params
        assert info.factory.startswith("thelper_plugin_example.")
        assert info.description
    assert registry.get("dataset", "example_moons").metadata["provides_task"] is True
    assert registry.get("metric", "example_balanced_accuracy").metadata["goal"] == "max"
    record = pm.records["example-inproc"]
    assert (record.distribution, record.version) == (None, None)
    assert {(c.kind, c.name) for c in record.components} == set(EXAMPLE_COMPONENTS)
    described = {p["plugin"]: p for p in pm.describe()}
    assert described["example-inproc"]["components"] == {
        "dataset": ["example_moons"],
        "model": ["example_rbf_net"],
        "metric": ["example_balanced_accuracy"],
    }
    assert pm.failures == []


def test_register_twice_under_one_name_is_an_error(pm: ThelperPluginManager) -> None:
    with pytest.raises(PluginError, match="example-inproc"):
        pm.register(Recorder(), name="example-inproc")


def test_unregister_removes_components(pm: ThelperPluginManager) -> None:
    assert pm.registry.canonical("model", "example_rbf_net") == "example_rbf_net"
    pm.unregister("example-inproc")
    assert pm.registry.canonical("model", "example_rbf_net") is None
    assert "example-inproc" not in pm.records


# ----------------------------------------------------------------------------- params
def test_params_defaults_and_bounds() -> None:
    assert MoonsParams().model_dump() == {"n_samples": 1000, "noise": 0.2, "seed": 0}
    assert RBFNetParams(num_centers=4).num_centers == 4
    assert BalancedAccuracyParams().adjusted is False
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        MoonsParams(noise=-0.1)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        RBFNetParams(num_centers=0)


@pytest.mark.parametrize("params", list(EXAMPLE_COMPONENTS.values()))
def test_params_forbid_unknown_keys_and_document_every_field(params: type) -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        params.model_validate({"not_a_field": 1})
    schema = params.model_json_schema()
    assert schema.get("description")
    for field, prop in schema["properties"].items():
        assert prop.get("description"), f"{params.__name__}.{field} has no docstring"


# ----------------------------------------------------------------------------- config
def test_example_config_validates(pm: ThelperPluginManager) -> None:
    cfg, issues = check_document(load_config(MOONS_CONFIG), pm.registry)
    assert issues == []
    assert cfg is not None
    assert cfg.datasets["moons"].type == "example_moons"
    assert isinstance(cfg.datasets["moons"].params, MoonsParams)
    assert isinstance(cfg.model.params, RBFNetParams)
    assert cfg.trainer.metrics["balanced_accuracy"].type == "example_balanced_accuracy"


def test_config_mistakes_in_plugin_params_are_reported(pm: ThelperPluginManager) -> None:
    data = core_config(
        datasets={"moons": {"type": "example_moons", "params": {"noize": 0.1, "n_samples": 1}}}
    )
    data["loaders"] = {"train_split": {"moons": 0.8}}
    data["model"] = {"type": "example_rbf_nett"}
    cfg, issues = check_document(document_from_dict(data), pm.registry)
    assert cfg is None
    by_path = {i.path: i.message for i in issues}
    assert "did you mean 'noise'" in by_path["datasets.moons.params.noize"]
    assert "greater than or equal to 2" in by_path["datasets.moons.params.n_samples"]
    assert "did you mean 'example_rbf_net'" in by_path["model.type"]


def test_config_using_the_plugin_needs_the_plugin(clean_thelper_env: None) -> None:
    without = ThelperPluginManager(autoload=False)
    cfg, issues = check_document(load_config(MOONS_CONFIG), without.registry)
    assert cfg is None
    assert any(
        i.path == "datasets.moons.type" and "'example_moons' is not a registered" in i.message
        for i in issues
    )


# ------------------------------------------------------------------------------ build
def test_registry_builds_each_component(pm: ThelperPluginManager) -> None:
    import torch

    registry = pm.registry
    ds = registry.build("dataset", "example_moons", {"n_samples": 20, "seed": 3})
    assert ds.task.class_names == ["upper", "lower"]
    model = registry.build("model", "example_rbf_net", {"num_centers": 4}, task=ds.task)
    metric = registry.build("metric", "example_balanced_accuracy", None, task=ds.task)
    batch = torch.stack([ds[i]["input"] for i in range(5)])
    logits = model(batch)
    assert logits.shape == (5, 2)
    metric.update(logits.detach(), torch.stack([ds[i]["label"] for i in range(5)]))
    assert 0.0 <= metric.compute() <= 1.0


# ------------------------------------------------------------------- lifecycle hooks
def test_lifecycle_hooks_are_called_during_a_session(
    pm: ThelperPluginManager, tmp_path: Path, one_thread: None
) -> None:
    recorder = Recorder()
    pm.register(recorder, name="recorder")
    session = run_session(document_from_dict(core_config()), tmp_path, pm)
    assert session.status == "completed"

    names = recorder.names()
    assert names[0] == "session_start" and names[-1] == "session_end"
    assert names.count("epoch_end") == 2
    assert names.count("evaluation_end") == 1
    assert recorder.of("session_start")[0]["task"]["type"] == "classification"

    epochs = [c["epoch"] for c in recorder.of("epoch_end")]
    assert epochs == [row["epoch"] for row in session.history["train"]]
    assert epochs[1] == epochs[0] + 1
    for call in recorder.of("epoch_end"):
        assert set(call["metrics"]) == {"train", "valid"}
        assert {"loss", "lr", "accuracy"} <= set(call["metrics"]["train"])
        assert {"loss", "accuracy"} <= set(call["metrics"]["valid"])

    saved = recorder.of("checkpoint_saved")
    assert {c["path"].name for c in saved} >= {"ckpt.latest.pt", "ckpt.best.pt"}
    assert all(c["path"].is_file() for c in saved)
    # the final evaluation comes after the last checkpoint and before the end
    assert names.index("evaluation_end") > max(
        i for i, n in enumerate(names) if n == "checkpoint_saved"
    )
    test = recorder.of("evaluation_end")[0]
    assert test["split"] == "test" and test["metrics"]["accuracy"] > 0.5
    assert recorder.of("session_end")[0] == {"status": "completed", "error": None}

    # run.json (the core's run-record tracker, a plugin too) agrees with what we saw
    record = json.loads((session.session_dir / "run.json").read_text())
    assert record["test"]["accuracy"] == test["metrics"]["accuracy"]
    # the example plugin's hook only writes for sessions that use its components
    assert not (session.output_dir / example_plugin.EPOCHS_CSV).exists()


def test_example_epoch_hook_writes_csv(
    pm: ThelperPluginManager, tmp_path: Path, one_thread: None
) -> None:
    data = core_config()
    data["trainer"]["metrics"]["balanced"] = {"type": "example_balanced_accuracy"}
    session = run_session(document_from_dict(data), tmp_path, pm)
    path = session.output_dir / example_plugin.EPOCHS_CSV
    assert path == tmp_path / "tiny-digits" / "output" / "tiny-digits" / "example-epochs.csv"
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "split", "loss", "accuracy", "balanced", "lr"]
    assert [(r["epoch"], r["split"]) for r in rows] == [
        (str(e), s) for e in (1, 2) for s in ("train", "valid")
    ]
    history = session.history["valid"][-1]
    assert float(rows[-1]["balanced"]) == pytest.approx(history["balanced"], rel=1e-5)
    assert rows[-1]["lr"] == "" and float(rows[-2]["lr"]) == pytest.approx(0.01)


# -------------------------------------------------------------------------- commands
class CommandPlugin:
    @hookimpl
    def thelper_add_commands(self, app: typer.Typer) -> None:
        @app.command("moons-info")
        def moons_info(n: int = 4) -> None:
            """Print the first points of the example's two moons."""
            from thelper_plugin_example.datasets import TwoMoons

            ds = TwoMoons(n_samples=n)
            for i in range(len(ds)):
                typer.echo(f"{ds.task.class_names[ds.targets[i]]}")


class BrokenCommandPlugin:
    @hookimpl
    def thelper_add_commands(self, app: typer.Typer) -> None:
        raise RuntimeError("cannot add my command")


def test_plugins_add_cli_commands(pm: ThelperPluginManager) -> None:
    pm.register(CommandPlugin(), name="commands", distribution=None)
    pm.register(BrokenCommandPlugin(), name="broken-commands", distribution=None)
    app = typer.Typer()

    @app.command("core")
    def core() -> None:  # a second command keeps typer in multi-command mode
        """A stand-in for the core's commands."""

    pm.add_commands(app)
    result = CliRunner().invoke(app, ["moons-info", "--n", "4"])
    assert result.exit_code == 0, result.output
    assert sorted(result.output.split()) == ["lower", "lower", "upper", "upper"]
    failure = next(f for f in pm.failures if f.name == "broken-commands")
    assert failure.stage == "add commands" and "cannot add my command" in failure.error
