"""Config reading, overrides and schema-depth validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from thelper.config import check_document, document_from_dict, load_config, validate_document
from thelper.exceptions import ConfigError
from thelper.plugins import ThelperPluginManager

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry():
    return ThelperPluginManager().registry


def issues_of(data, registry, sets=()):
    cfg, issues = check_document(document_from_dict(data, list(sets)), registry)
    return cfg, {i.path: i.message for i in issues}


def test_valid_config_gives_typed_model(mlp_config, registry):
    cfg, issues = issues_of(mlp_config, registry)
    assert issues == {}
    assert cfg.trainer.optimization.optimizer.params.lr == 0.005
    assert cfg.trainer.metrics["accuracy"].params.top_k == 1
    assert cfg.loaders.batch_size_for("valid") == 64


def test_wrong_type_names_path_and_value(mlp_config, registry):
    mlp_config["trainer"]["optimization"]["optimizer"]["params"]["lr"] = "fast"
    mlp_config["trainer"]["epochs"] = "three"
    _, issues = issues_of(mlp_config, registry)
    assert "got 'fast'" in issues["trainer.optimization.optimizer.params.lr"]
    assert "valid integer" in issues["trainer.epochs"]


def test_unknown_keys_get_did_you_mean(mlp_config, registry):
    mlp_config["loaders"]["bach_size"] = 3
    mlp_config["trainer"]["metrics"]["accuracy"]["params"] = {"top k": 3}
    _, issues = issues_of(mlp_config, registry)
    assert issues["loaders.bach_size"] == "unknown key 'bach_size'; did you mean 'batch_size'?"
    assert "did you mean 'top_k'" in issues["trainer.metrics.accuracy.params.top k"]


def test_unknown_type_names_suggest_registered_ones(mlp_config, registry):
    mlp_config["model"]["type"] = "mlpp"
    mlp_config["trainer"]["optimization"]["optimizer"]["type"] = "adamm"
    _, issues = issues_of(mlp_config, registry)
    assert issues["model.type"].startswith("'mlpp' is not a registered model; did you mean 'mlp'")
    assert "(thelper-core)" in issues["model.type"]
    assert "did you mean 'adam'" in issues["trainer.optimization.optimizer.type"]


def test_all_problems_reported_at_once(mlp_config, registry):
    mlp_config["model"]["type"] = "nope"
    mlp_config["loaders"]["batch_size"] = 0
    mlp_config["trainer"]["monitor"] = "acc"
    mlp_config["loaders"]["valid_split"] = {"digitz": 0.1}
    _, issues = issues_of(mlp_config, registry)
    assert {"model.type", "loaders.batch_size", "trainer.monitor",
            "loaders.valid_split.digitz"} <= set(issues)
    assert "did you mean 'accuracy'" in issues["trainer.monitor"]


def test_cross_field_rules(mlp_config, registry):
    mlp_config["loaders"]["test_split"] = {"digits": 0.5}
    mlp_config["trainer"]["monitor"] = "confmat"
    mlp_config["trainer"]["optimization"]["scheduler"]["step_metric"] = "f1"
    _, issues = issues_of(mlp_config, registry)
    assert "sum to 1.4 > 1" in issues["loaders"]
    assert "no min/max goal" in issues["trainer.monitor"]
    assert "'f1' is not defined" in issues["trainer.optimization.scheduler.step_metric"]


def test_dataset_without_task_needs_task_block(mlp_config, registry):
    mlp_config["datasets"]["fake"] = {
        "type": "torch_dataset",
        "params": {"class_path": "torchvision.datasets.FakeData"},
    }
    _, issues = issues_of(mlp_config, registry)
    assert "does not define a task" in issues["datasets.fake"]


def test_thelper06_names_and_spellings_validate(mlp_config, registry):
    trainer = mlp_config["trainer"]
    trainer["optimization"]["loss"] = {"type": "torch.nn.CrossEntropyLoss"}
    trainer["optimization"]["optimizer"] = {"type": "torch.optim.RMSprop",
                                            "params": {"lr": 0.01, "weight_decay": 4e-5}}
    trainer["optimization"]["scheduler"] = {
        "type": "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "params": {"mode": "max", "factor": 0.1, "patience": 3}, "step metric": "accuracy"}
    trainer["metrics"] = {"accuracy": {"type": "thelper.optim.Accuracy"},
                          "confmat": {"type": "thelper.train.ConfusionMatrix"}}
    mlp_config["loaders"]["batch size"] = mlp_config["loaders"].pop("batch_size")
    cfg, issues = issues_of(mlp_config, registry)
    assert issues == {}
    assert cfg.loaders.batch_size == 64
    assert cfg.trainer.optimization.scheduler.step_metric == "accuracy"


def test_file_positions_and_overrides(tmp_path, mlp_config, write_config, registry):
    mlp_config["trainer"]["epochs"] = 0
    path = write_config(mlp_config)
    doc = load_config(path, sets=["loaders.batch_size=oops"])
    _, issues = check_document(doc, registry)
    by_path = {i.path: i for i in issues}
    epochs = by_path["trainer.epochs"]
    assert epochs.file == str(path) and epochs.line is not None
    line = path.read_text().splitlines()[epochs.line - 1]
    assert line.strip().startswith("epochs:")
    assert by_path["loaders.batch_size"].source == "--set"
    assert by_path["loaders.batch_size"].format().startswith("(--set) loaders.batch_size")


def test_json_configs_keep_positions(mlp_config, write_config, registry):
    mlp_config["model"]["type"] = "mlpp"
    path = write_config(mlp_config, "config.json")
    _, issues = check_document(load_config(path), registry)
    (issue,) = issues
    assert issue.path == "model.type" and issue.line is not None
    assert '"mlpp"' in path.read_text().splitlines()[issue.line - 1]


def test_set_and_env_overrides(mlp_config, write_config, registry):
    path = write_config(mlp_config)
    doc = load_config(path, sets=["trainer.epochs=7", "loaders.valid_split.digits=0.05"],
                      environ={"THELPER_CONFIG__TRAINER__DEVICE": "cuda",
                               "THELPER_CONFIG__TRAINER__EPOCHS": "5"})
    cfg = validate_document(doc, registry)
    assert cfg.trainer.epochs == 7  # --set wins over the environment
    assert cfg.trainer.device == "cuda"
    assert cfg.loaders.valid_split == {"digits": 0.05}


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected 'dotted.path=value'"):
        document_from_dict({}, ["trainer.epochs"])


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrainer: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: cannot parse"):
        load_config(bad)


def _thelper(*args: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "thelper"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


def test_cli_validate_exit_codes_and_json(mlp_config, write_config):
    good = write_config(mlp_config, "good.yaml")
    res = _thelper("config", "validate", str(good))
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout
    mlp_config["model"]["params"]["hidden"] = "wide"
    mlp_config["trainer"]["optimization"]["optimizer"]["type"] = "adamm"
    bad = write_config(mlp_config, "bad.yaml")
    res = _thelper("config", "validate", str(bad))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if "bad.yaml:" in ln and ": " in ln]
    assert any("model.params.hidden: Input should be a valid list" in ln for ln in lines)
    assert any("trainer.optimization.optimizer.type: 'adamm'" in ln for ln in lines)
    res = _thelper("config", "validate", str(bad), "--format", "json")
    assert res.returncode == 2
    data = json.loads(res.stdout)
    assert data["valid"] is False
    assert {i["path"] for i in data["issues"]} >= {"model.params.hidden",
                                                    "trainer.optimization.optimizer.type"}


def test_validate_does_not_import_torch(write_config, mlp_config):
    path = write_config(mlp_config)
    example = ROOT / "examples" / "digits-classification" / "config.yaml"
    code = (
        "import sys\n"
        "from thelper.cli import main\n"
        f"assert main(['config', 'validate', {str(path)!r}]) == 0\n"
        f"assert main(['config', 'validate', {str(example)!r}]) == 0\n"
        "heavy = [m for m in ('torch', 'torchvision', 'sklearn', 'matplotlib', 'thelper_vision.models',"
        " 'thelper_vision.transforms', 'thelper_vision.datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "HEAVY []" in res.stdout
