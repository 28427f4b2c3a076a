"""A config or a checkpoint's stored config is data: nothing in it widens what code runs.

Each test plants a module or file that would leave a marker when its code runs, and checks
that validation, ``--build``, ``resume`` and the tools refuse it (exit 2, a message naming the
``--allow-import`` flag or why the import is never allowed) without running it.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from thelper.cli import main
from thelper.config.imports import import_allowed, import_denied

EVIL = "from pathlib import Path\nPath({marker!r}).write_text('ran')\n"


@pytest.fixture
def evilpkg(tmp_path, monkeypatch):
    """A package that writes ``ran`` into a marker file when it is imported."""
    marker = tmp_path / "evil-ran"
    pkg = tmp_path / "plant" / "evilpkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(EVIL.format(marker=str(marker)) + (
        "class Evil:\n    def __init__(self, **kw): pass\n"
        "    def __len__(self): return 1\n    def __getitem__(self, i): return (0, 0)\n"))
    monkeypatch.syspath_prepend(str(tmp_path / "plant"))
    sys.modules.pop("evilpkg", None)  # a previous test's import would hide this one's
    yield marker
    sys.modules.pop("evilpkg", None)


@pytest.mark.parametrize("path", [
    "torch.hub.load", "torch.hub.load_state_dict_from_url", "torch.load", "pickle.loads",
    "builtins.eval", "builtins.exec", "os.system", "subprocess.Popen", "torch.jit.load",
    "torch.package.PackageImporter", "torch.utils.cpp_extension.load_inline",
    "importlib.import_module", "torch.serialization.load", "torchvision.datasets.CIFAR10",
    "torchvision.datasets.cifar.CIFAR100", "torchvision.datasets.LSUN", "torch._C.Foo",
    "torch.utils.data._utils.Foo", "thelper.data.datasets.import_object.__call__",
    "torch.nn.Module.__subclasses__", "mypkg.load", "thelper.data.datasets.TorchDatasetAdapter",
])
def test_loaders_of_code_are_never_allowed_whatever_the_allow_list(path):
    assert import_denied(path) is not None
    module = path.rsplit(".", 1)[0]
    assert not import_allowed(path, allow=[module.split(".")[0], module])


@pytest.mark.parametrize("path", ["torchvision.datasets.FakeData", "torch.utils.data.TensorDataset",
                                  "thelper_vision.datasets.ImageFolderDataset"])
def test_data_set_classes_stay_allowed(path):
    assert import_denied(path) is None and import_allowed(path)


def _with_class_path(mlp_config: dict, class_path: str, params: dict) -> dict:
    cfg = copy.deepcopy(mlp_config)
    cfg["datasets"]["digits"] = {
        "type": "torch_dataset", "params": {"class_path": class_path, "params": params},
        "task": {"type": "classification",
                 "params": {"class_names": ["a", "b"], "input_key": "0", "label_key": "1"}}}
    return cfg


def test_torch_hub_load_with_a_local_hubconf_never_runs(tmp_path, mlp_config, write_config,
                                                        capsys):
    marker = tmp_path / "hub-ran"
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "hubconf.py").write_text(EVIL.format(marker=str(marker)) + "def x(): return 0\n")
    path = write_config(_with_class_path(mlp_config, "torch.hub.load",
                                         {"repo_or_dir": str(repo), "model": "x",
                                          "source": "local"}))
    for extra in ([], ["--build"], ["--allow-import", "torch"]):
        assert main(["config", "validate", str(path), *extra]) == 2
        err = capsys.readouterr().err
        assert "datasets.digits.params.class_path" in err and "never importable" in err
    assert main(["run", str(path), "-o", str(tmp_path / "runs")]) == 2
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_allow_import_of_a_code_loader_is_a_usage_error(mlp_config, write_config, capsys):
    path = write_config(mlp_config)
    for module in ("os", "torch.hub", "pickle", "torch._C"):
        assert main(["config", "validate", str(path), "--allow-import", module]) == 2
        err = capsys.readouterr().err
        assert f"--allow-import {module}" in err and "never importable" in err
        assert "Traceback" not in err
    assert main(["config", "validate", str(path), "--allow-import", "my package"]) == 2
    assert "expected a dotted module name" in capsys.readouterr().err


def test_imports_allow_in_a_file_needs_the_command_line(evilpkg, mlp_config, write_config,
                                                        tmp_path, capsys):
    cfg = _with_class_path(mlp_config, "evilpkg.Evil", {})
    cfg["imports"] = {"allow": ["evilpkg"]}
    path = write_config(cfg)
    assert main(["config", "validate", str(path), "--build"]) == 2
    err = capsys.readouterr().err
    assert "imports.allow.0" in err and "--allow-import evilpkg" in err
    assert main(["run", str(path), "-o", str(tmp_path / "runs")]) == 2
    assert "--allow-import evilpkg" in capsys.readouterr().err
    assert not evilpkg.exists() and not (tmp_path / "runs").exists()
    # the person running the command consents: now (and only now) the module is imported
    assert main(["config", "validate", str(path), "--build", "--allow-import", "evilpkg"]) in \
        (0, 2)
    assert evilpkg.exists()


def test_a_class_path_that_is_not_a_data_set_class_is_refused_at_build(mlp_config,
                                                                      write_config, capsys):
    path = write_config(_with_class_path(mlp_config, "torch.nn.Linear",
                                         {"in_features": 1, "out_features": 1}))
    assert main(["config", "validate", str(path), "--build"]) == 2
    assert "is not a data set class" in capsys.readouterr().err


@pytest.fixture
def trained(tmp_path, mlp_config, write_config):
    cfg = copy.deepcopy(mlp_config)
    cfg["trainer"]["epochs"] = 1
    assert main(["run", str(write_config(cfg)), "-o", str(tmp_path / "runs")]) == 0
    return tmp_path / "runs" / cfg["name"]


def _plant_config(session: Path, change) -> Path:
    """Rewrite the stored config of every checkpoint (a plain, weights_only-loadable file)."""
    for ckpt_path in (session / "checkpoints").glob("ckpt.*.pt"):
        if ckpt_path.is_symlink():
            continue
        data = torch.load(ckpt_path, weights_only=True)
        change(data["config"])
        ckpt_path.unlink()  # break hard links before rewriting
        torch.save(data, ckpt_path)
    return session


def test_a_checkpoints_config_cannot_allow_imports_on_resume(trained, evilpkg, capsys):
    def plant(config):
        config["imports"] = {"allow": ["evilpkg"]}
        config["datasets"]["digits"] = _with_class_path(
            {"datasets": {}}, "evilpkg.Evil", {})["datasets"]["digits"]

    _plant_config(trained, plant)
    capsys.readouterr()
    assert main(["resume", str(trained), "--set", "trainer.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "imports.allow.0" in err and "--allow-import evilpkg" in err
    assert not evilpkg.exists()


def test_a_checkpoints_config_cannot_name_a_code_loader(trained, capsys):
    def plant(config):
        config["imports"] = {"allow": ["os"]}
        config["datasets"]["digits"] = _with_class_path(
            {"datasets": {}}, "os.system", {"command": "touch /tmp/thelper-pwned"}
        )["datasets"]["digits"]

    _plant_config(trained, plant)
    capsys.readouterr()
    assert main(["resume", str(trained), "--set", "trainer.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "never importable" in err and "Traceback" not in err


def test_tools_validate_a_checkpoints_config_under_the_command_line(trained, evilpkg):
    from thelper.checkpoint import load_checkpoint
    from thelper.exceptions import ConfigError
    from thelper.tools.loading import session_data

    def plant(config):
        config["imports"] = {"allow": ["evilpkg"]}

    _plant_config(trained, plant)
    ckpt = load_checkpoint(trained / "checkpoints" / "ckpt.latest.pt")
    with pytest.raises(ConfigError, match="--allow-import evilpkg"):
        session_data(ckpt)
    assert session_data(ckpt, allow_imports=("evilpkg",)).splits  # confirmed: fine


def test_the_adapter_cannot_be_nested_to_bring_its_own_allow_list(mlp_config, write_config,
                                                                  capsys):
    """Review finding: the adapter is a data set class under 'thelper', and its 'allow'
    param would have let a config import any module without --allow-import."""
    from thelper.data.datasets import TorchDatasetAdapter
    from thelper.exceptions import ConfigError

    nested = {"class_path": "collections.UserList", "allow": ["collections"]}
    path = write_config(_with_class_path(mlp_config, "thelper.data.datasets.TorchDatasetAdapter",
                                         nested))
    assert main(["config", "validate", str(path)]) == 2
    assert "never importable" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="the import adapter itself"):
        TorchDatasetAdapter("thelper.data.datasets:TorchDatasetAdapter", nested, allow=["thelper"])
