"""Configs that validated and then let a long (GPU) job start and die (issue #13).

Each case breaks one key of a valid config and checks that ``thelper config validate``
refuses it with exit code 2 at the config path (or, where the validating machine may not be
the one that runs, accepts it with exit code 0 and a warning naming the path).
"""

from __future__ import annotations

import copy
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from thelper.cli import main
from thelper.config import check_document, document_from_dict
from thelper.config.models import MAX_BATCH_SIZE, MAX_EPOCHS, MAX_SEED
from thelper.exceptions import ConfigError
from thelper.plugins import ThelperPluginManager, get_plugin_manager
from thelper.registry import ComponentInfo

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


def _validate(capsys, path: Path, *args: str) -> tuple[int, str]:
    code = main(["config", "validate", str(path), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def _issues(data, registry=None, sets=()) -> dict[str, str]:
    registry = registry or get_plugin_manager().registry
    cfg, issues = check_document(document_from_dict(data, list(sets)), registry)
    assert (cfg is None) == bool(issues)
    return {i.path: i.message for i in issues}


@pytest.fixture
def warnings_of():
    """Collect the warnings that validation logs on ``thelper.config``."""
    records: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("thelper.config")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


# ------------------------------------------------------------ 1. numbers and bounds
OPT = "trainer.optimization.optimizer.params"
NUMBER_CASES = {
    "epochs_true": (["trainer.epochs=true"], "trainer.epochs", "not a boolean"),
    "epochs_float_1e26": (["trainer.epochs=1.0e+26"], "trainer.epochs", "whole number"),
    "epochs_too_many": ([f"trainer.epochs={MAX_EPOCHS + 1}"], "trainer.epochs",
                        f"less than or equal to {MAX_EPOCHS}"),
    "batch_size_1e20": (["loaders.batch_size=1.0e+20"], "loaders.batch_size", "whole number"),
    "batch_size_huge": ([f"loaders.batch_size={MAX_BATCH_SIZE + 1}"], "loaders.batch_size",
                        f"less than or equal to {MAX_BATCH_SIZE}"),
    "test_batch_size_true": (["loaders.test_batch_size=yes"], "loaders.test_batch_size",
                             "not a boolean"),
    "lr_inf": ([f"{OPT}.lr=.inf"], f"{OPT}.lr", "not a finite number"),
    "lr_true": ([f"{OPT}.lr=true"], f"{OPT}.lr", "got the boolean true"),
    "weight_decay_inf": ([f"{OPT}.weight_decay=.inf"], f"{OPT}.weight_decay",
                         "not a finite number"),
    "betas_nan": ([f"{OPT}.betas=[0.9, .nan]"], f"{OPT}.betas.1", "not a finite number"),
    "scheduler_threshold_inf": (["trainer.optimization.scheduler.params.threshold=.inf"],
                                "trainer.optimization.scheduler.params.threshold",
                                "not a finite number"),
    "loss_weight_inf": (["trainer.optimization.loss.params={weight: [1.0, .inf]}"],
                        "trainer.optimization.loss.params.weight.1", "not a finite number"),
    "seed_2_64": ([f"seeds.torch={2**64}"], "seeds.torch", f"less than or equal to {MAX_SEED}"),
    "seed_2_32": ([f"seeds.worker={2**32}"], "seeds.worker", f"less than or equal to {MAX_SEED}"),
    "seed_true": (["seeds.split=true"], "seeds.split", "not a boolean"),
    "split_ratio_true": (["loaders.train_split.digits=true"], "loaders.train_split.digits",
                         "not a boolean"),
    "min_delta_inf": (["trainer.early_stopping={patience: 2, min_delta: .inf}"],
                      "trainer.early_stopping.min_delta", "finite number"),
}


@pytest.mark.parametrize("case", NUMBER_CASES, ids=str)
def test_bad_numbers_are_refused_through_set(case, mlp_config, write_config, capsys):
    sets, path, text = NUMBER_CASES[case]
    config = write_config(mlp_config)
    code, out = _validate(capsys, config, *[a for s in sets for a in ("--set", s)])
    assert code == 2, out
    line = next((x for x in out.splitlines() if x.startswith(f"(--set) {path}: ")), None)
    assert line is not None, out
    assert text in line, line


def test_bad_numbers_in_the_file_are_refused(mlp_config, write_config, capsys):
    mlp_config["trainer"]["epochs"] = 1e26  # JSON: a float
    mlp_config["loaders"]["batch_size"] = 1e20
    mlp_config["trainer"]["optimization"]["optimizer"]["params"]["lr"] = float("inf")
    mlp_config["seeds"]["torch"] = 2**64
    config = write_config(mlp_config, "config.json")
    config.write_text(json.dumps(mlp_config).replace("Infinity", "1e999"))
    code, out = _validate(capsys, config)
    assert code == 2, out
    for path in ("trainer.epochs", "loaders.batch_size", f"{OPT}.lr", "seeds.torch"):
        assert f": {path}: " in out, (path, out)


def test_environment_overrides_are_checked_too(mlp_config, write_config, capsys,
                                                monkeypatch):
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__EPOCHS", "true")
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__OPTIMIZATION__OPTIMIZER__PARAMS__LR", ".inf")
    code, out = _validate(capsys, write_config(mlp_config))
    assert code == 2, out
    assert "(env) trainer.epochs: Input should be a whole number, not a boolean" in out
    assert f"(env) {OPT}.lr: .inf is not a finite number" in out


def test_the_bounds_themselves_are_accepted(mlp_config):
    mlp_config["trainer"]["epochs"] = MAX_EPOCHS
    mlp_config["loaders"]["batch_size"] = MAX_BATCH_SIZE
    mlp_config["seeds"] = {k: MAX_SEED for k in ("split", "torch", "numpy", "random", "worker")}
    mlp_config["trainer"]["optimization"]["optimizer"]["params"]["amsgrad"] = True  # a bool
    assert _issues(mlp_config) == {}


def test_nan_reported_once_where_the_schema_already_refuses_it(mlp_config):
    mlp_config["trainer"]["optimization"]["optimizer"]["params"]["lr"] = float("nan")
    cfg, issues = check_document(document_from_dict(mlp_config), get_plugin_manager().registry)
    assert [i.path for i in issues] == [f"{OPT}.lr"]


def test_seeds_up_to_the_bound_seed_numpy():
    """The seed bound is what numpy's global seeding (loader workers) accepts."""
    np = pytest.importorskip("numpy")
    np.random.seed(MAX_SEED)
    with pytest.raises(ValueError):
        np.random.seed(MAX_SEED + 1)


# ------------------------------------------------------------ 2. components vs the task
def test_detection_metric_on_classification_is_refused(mlp_config, write_config, capsys,
                                                        registry):
    if registry.canonical("metric", "mean_average_precision") is None:
        pytest.skip("needs thelper-vision")
    mlp_config["trainer"]["metrics"]["map"] = {"type": "mean_average_precision"}
    code, out = _validate(capsys, write_config(mlp_config))
    assert code == 2, out
    assert "trainer.metrics.map.type: metric 'mean_average_precision' does not fit the " \
           "'classification' task (it fits: detection)" in out
    assert "accuracy" in out  # what fits instead


def test_regression_loss_on_classification_is_blamed_on_the_loss(mlp_config, write_config,
                                                                  capsys):
    mlp_config["trainer"]["optimization"]["loss"] = {"type": "mse"}
    mlp_config["trainer"]["test_metrics"]["err"] = {"type": "mae"}
    code, out = _validate(capsys, write_config(mlp_config))
    assert code == 2, out
    assert "trainer.optimization.loss.type: loss 'mse' does not fit the 'classification' " \
           "task (it fits: regression, super_resolution, autoencoding); use a loss made for " \
           "classification: cross_entropy, nll" in out
    assert "trainer.test_metrics.err.type: metric 'mae' does not fit" in out
    assert "model" not in [x.split(": ")[1] for x in out.splitlines() if ": " in x]


def test_task_block_decides_the_task(mlp_config):
    mlp_config["datasets"]["digits"]["task"] = {
        "type": "regression", "params": {"target_shape": [1]}}
    mlp_config["trainer"]["optimization"]["loss"] = {"type": "cross_entropy"}
    issues = _issues(mlp_config)
    assert "does not fit the 'regression' task" in \
        issues["trainer.optimization.loss.type"]
    assert "does not fit the 'regression' task" in issues["trainer.metrics.accuracy.type"]


def test_examples_fit_their_tasks():
    for path in sorted((ROOT / "examples").glob("*/config.yaml")):
        from thelper.config import load_config

        _, issues = check_document(load_config(path), get_plugin_manager().registry)
        assert not [i for i in issues if "does not fit" in i.message], (path, issues)


def test_undeclared_components_and_tasks_stay_accepted(mlp_config):
    pm = ThelperPluginManager()
    registry = pm.registry
    registry.add(ComponentInfo("metric", "anything", "thelper.metrics:Accuracy",
                               "thelper.builtin_params.metrics:AccuracyParams",
                               metadata={"goal": "max"}))
    mlp_config["trainer"]["metrics"]["any"] = {"type": "anything"}
    assert _issues(mlp_config, registry) == {}
    # a task that no loss or metric declares (a plugin's own): nothing is checked
    registry.add(ComponentInfo("task", "my_task", "thelper.tasks:Classification",
                               "thelper.builtin_params.tasks:ClassificationParams"))
    mlp_config["datasets"]["digits"]["task"] = {
        "type": "my_task", "params": {"class_names": [str(i) for i in range(10)]}}
    mlp_config["trainer"]["optimization"]["loss"] = {"type": "mse"}
    assert _issues(mlp_config, registry) == {}


# ------------------------------------------------------------ 3. split leakage
def _twins(mlp_config):
    mlp_config["datasets"]["again"] = copy.deepcopy(mlp_config["datasets"]["digits"])
    mlp_config["loaders"]["valid_split"] = {}
    return mlp_config


def test_test_split_of_the_same_data_as_training_is_refused(mlp_config, write_config, capsys):
    config = _twins(mlp_config)
    config["loaders"]["train_split"] = {"digits": 0.8}
    config["loaders"]["test_split"] = {"again": 0.8}
    code, out = _validate(capsys, write_config(config))
    assert code == 2, out
    assert "loaders.test_split.again: dataset 'again' holds the same data as 'digits'" in out
    assert "every test sample of 'again' is a training sample of 'digits'" in out
    assert "use one dataset with disjoint fractions" in out


def test_partial_overlap_is_refused_with_its_share(mlp_config):
    config = _twins(mlp_config)
    config["loaders"]["train_split"] = {"digits": 0.5, "again": 0.3}
    config["loaders"]["valid_split"] = {"again": 0.4}
    config["loaders"]["test_split"] = {}
    issues = _issues(config)
    assert "50% of the valid sample" in issues["loaders.valid_split.again"]


def test_disjoint_shares_of_twin_datasets_are_accepted(mlp_config):
    config = _twins(mlp_config)
    config["loaders"]["train_split"] = {"digits": 0.5, "again": 0.5}
    config["loaders"]["test_split"] = {"again": 0.5}  # the second half of one permutation
    assert _issues(config) == {}


def test_one_dataset_split_three_ways_is_fine(mlp_config):
    assert _issues(mlp_config) == {}


def test_hdf5_archive_splits(mlp_config, tmp_path, warnings_of):
    archive = str(tmp_path / "digits.h5")
    mlp_config["datasets"] = {
        "train": {"type": "hdf5", "params": {"path": archive, "split": "train"}},
        "test": {"type": "hdf5", "params": {"path": archive, "split": "test"}}}
    mlp_config["loaders"]["train_split"] = {"train": 1.0}
    mlp_config["loaders"]["valid_split"] = {}
    mlp_config["loaders"]["test_split"] = {"test": 1.0}
    assert _issues(mlp_config) == {}  # the archive's own splits are disjoint
    assert not [w for w in warnings_of if "loaders." in w]
    mlp_config["datasets"]["test"]["params"]["split"] = "train"
    issues = _issues(mlp_config)
    assert "every test sample of 'test' is a training sample of 'train'" in \
        issues["loaders.test_split.test"]


def test_same_files_with_other_params_warn(mlp_config, tmp_path, warnings_of, registry):
    if registry.canonical("dataset", "image_folder") is None:
        pytest.skip("needs thelper-vision")
    mlp_config["datasets"] = {
        "rgb": {"type": "image_folder", "params": {"root": str(tmp_path)}},
        "grey": {"type": "image_folder", "params": {"root": str(tmp_path) + "/", "mode": "L"}}}
    mlp_config["loaders"]["train_split"] = {"rgb": 0.8}
    mlp_config["loaders"]["valid_split"] = {}
    mlp_config["loaders"]["test_split"] = {"grey": 0.2}
    mlp_config["model"] = {"type": "mlp", "params": {"in_features": 64, "hidden": [8]}}
    assert _issues(mlp_config) == {}
    assert any(w.startswith("warning: loaders.test_split.grey: dataset 'grey' reads the same "
                            "files") and "cannot be decided" in w for w in warnings_of), \
        warnings_of


# ------------------------------------------------------------ 4. the device
def test_missing_gpu_fails_build_depth(mlp_config, write_config, capsys):
    mlp_config["trainer"]["device"] = "cuda:7"
    config = write_config(mlp_config)
    assert main(["config", "validate", str(config)]) == 0  # schema depth: no torch
    capsys.readouterr()
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    code, out = _validate(capsys, config, "--build")
    assert code == 2, out
    assert "trainer.device: build failed: 'cuda:7' but this machine has " in out
    assert "CUDA device(s); use " in out


def test_missing_gpu_fails_run_before_the_session_directory(mlp_config, write_config, capsys,
                                                            tmp_path):
    import torch

    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    mlp_config["trainer"]["device"] = "cuda:7"
    save = tmp_path / "sessions"
    code = main(["run", str(write_config(mlp_config)), "--save-dir", str(save)])
    out = capsys.readouterr()
    assert code == 2, out
    assert "error: trainer.device: 'cuda:7' but this machine has " in out.err
    assert not (save / mlp_config["name"]).exists()


@pytest.mark.parametrize(("count", "device", "expected"), [
    (2, "cuda:7", "'cuda:7' but this machine has 2 CUDA device(s); use cuda:0..cuda:1, "
                  "cuda:all or cpu"),
    (1, "cuda:1", "'cuda:1' but this machine has 1 CUDA device(s); use cuda:0, cuda:all or "
                  "cpu"),
    (0, "cuda", "'cuda' but this machine has 0 CUDA device(s); use cpu"),
    (0, "cuda:all", "'cuda:all' but this machine has 0 CUDA device(s); use cpu"),
    (2, "cuda:1", None), (1, "cuda:all", None), (0, "cpu", None), (0, "auto", None),
])
def test_check_device_counts_the_gpus(count, device, expected, monkeypatch):
    import torch

    from thelper.runtime import Runtime, check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if expected is None:
        check_device(device)
        return
    with pytest.raises(ConfigError) as info:
        check_device(device)
    assert str(info.value).startswith(f"trainer.device: {expected}")
    with pytest.raises(ConfigError):
        Runtime().start(device)


def test_mps_when_unavailable(monkeypatch):
    import torch

    from thelper.runtime import check_device

    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"trainer.device: 'mps' but MPS .* not available"):
        check_device("mps")


# ------------------------------------------------------------ 5. dataset paths
def test_missing_local_dataset_path_warns_without_failing(mlp_config, write_config, capsys,
                                                          tmp_path, warnings_of):
    missing = tmp_path / "nowhere" / "digits.h5"
    mlp_config["datasets"] = {"arch": {"type": "hdf5", "params": {"path": str(missing)}}}
    mlp_config["loaders"] = {"batch_size": 8, "train_split": {"arch": 1.0}}
    path = write_config(mlp_config)
    code, out = _validate(capsys, path)
    assert code == 0, out
    assert [line for line in out.splitlines() if line.startswith(f"warning: {path}:")
            and f"datasets.arch.params.path: {str(missing)!r} does not exist on this machine"
            in line], out  # the CLI prints warnings located like the issues
    assert _issues(mlp_config) == {}  # without a collector, validation logs them
    assert [w for w in warnings_of if w.startswith(
        f"warning: datasets.arch.params.path: {str(missing)!r} does not exist on this machine")]
    assert main(["config", "validate", str(path), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["warnings"][0]["path"] == "datasets.arch.params.path"
    missing.parent.mkdir()
    warnings_of.clear()
    missing.write_bytes(b"")
    warnings_of.clear()
    assert _issues(mlp_config) == {}
    assert not warnings_of


def test_config_validate_shows_the_path_warning(mlp_config, write_config, tmp_path):
    """End to end, in a fresh process: the warning is printed and the exit code stays 0."""
    mlp_config["datasets"] = {"arch": {"type": "hdf5", "params": {"path": "no/such.h5"}}}
    mlp_config["loaders"] = {"batch_size": 8, "train_split": {"arch": 1.0}}
    config = write_config(mlp_config)
    res = subprocess.run([sys.executable, "-m", "thelper", "config", "validate", str(config)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"datasets.arch.params.path: 'no/such.h5' does not exist on this machine " \
           f"(relative to {tmp_path})" in res.stderr and f"warning: {config}:" in res.stderr
    assert "valid (1 dataset(s)" in res.stdout
