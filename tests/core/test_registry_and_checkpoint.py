"""Registry behaviour, built-in components and checkpoint safety."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from thelper.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from thelper.exceptions import CheckpointError, ComponentNotFoundError, PluginError
from thelper.plugins import ThelperPluginManager
from thelper.registry import ComponentInfo, Params, Registry
from thelper.tasks import Classification

PM = ThelperPluginManager()
CORE = [c for c in PM.registry.components() if c.distribution == "thelper-core"]
TASK = Classification([str(i) for i in range(10)])


def _context(info: ComponentInfo) -> dict:
    model = torch.nn.Linear(4, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return {"task": TASK, "params": model.parameters(), "optimizer": opt,
            "labels": [i % 10 for i in range(50)], "class_names": TASK.class_names}


REQUIRED = {
    ("dataset", "torch_dataset"): {"class_path": "torchvision.datasets.FakeData",
                                   "params": {"size": 4}},
    ("model", "mlp"): {"in_features": 4},
    ("scheduler", "step_lr"): {"step_size": 2},
    ("scheduler", "multistep_lr"): {"milestones": [2]},
    ("scheduler", "exponential_lr"): {"gamma": 0.9},
    ("scheduler", "cosine_annealing_lr"): {"T_max": 5},
    ("task", "classification"): {"class_names": ["a", "b"]},
    ("task", "multilabel_classification"): {"class_names": ["a", "b"]},
    ("sampler", "class_weighted"): {"weights": {"0": 1.0, "3": 2.0}},
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A real `thelper split` archive of scikit-learn's digits."""
    from tests.conftest import MLP_CONFIG
    from thelper.tools.archive import write_archive
    from thelper.tools.loading import session_data

    path = tmp_path_factory.mktemp("h5") / "digits.h5"
    write_archive(session_data({"config": MLP_CONFIG, "seeds": MLP_CONFIG["seeds"]}), path)
    return path


# the predictor's file decoders and output writers: tests/integration/test_predict.py;
# config sections (trackers, labels) are validated, never built: tests/core/test_records.py
@pytest.mark.parametrize("info", [c for c in CORE if c.kind not in ("trainer", "writer",
                                                                   "decoder", "section")],
                         ids=lambda c: f"{c.kind}-{c.name}")
def test_every_core_component_builds(info, request):
    params = REQUIRED.get((info.kind, info.name), {})
    if (info.kind, info.name) == ("dataset", "hdf5"):
        params = {"path": str(request.getfixturevalue("archive")), "split": "valid"}
    obj = PM.registry.build(info.kind, info.name, params, **_context(info))
    assert obj is not None
    if info.kind == "metric":
        obj.update(torch.randn(5, 10), torch.randint(0, 10, (5,)))
        value = obj.compute()
        assert (value is None) == (info.metadata.get("goal") is None)


def test_every_component_has_a_description():
    for info in PM.registry.components():
        assert info.description, info


def test_duplicate_names_are_refused_naming_both():
    reg = Registry()
    reg.add(ComponentInfo("model", "net", "a:b", Params, distribution="dist-a"))
    with pytest.raises(PluginError, match="dist-a.*dist-b"):
        reg.add(ComponentInfo("model", "net", "c:d", Params, distribution="dist-b"))


def test_lazy_params_reference_is_imported_on_first_use_and_cached():
    from thelper import builtin_params

    ref = "thelper.builtin_params:MLPParams"
    a = ComponentInfo("model", "net-a", "a:b", ref)
    b = ComponentInfo("model", "net-b", "c:d", ref)
    assert a.params == ref  # kept as given
    assert a.params_model is builtin_params.MLPParams
    assert b.params_model is a.params_model
    assert ComponentInfo("model", "net", "a:b", builtin_params.MLPParams).params_model is \
        builtin_params.MLPParams  # the class form stays valid


def test_params_packages_reexport_every_model_from_its_family_module():
    """Models live in one module per kind or task family (validate imports only those it
    needs); the old import paths still give the same classes."""
    import importlib

    from thelper import builtin_params, tasks
    from thelper.builtin_params.optim import AdamParams
    from thelper_vision import dense_params
    from thelper_vision.image_params import SSIMParams

    assert builtin_params.AdamParams is AdamParams
    assert tasks.ClassificationParams is builtin_params.ClassificationParams
    assert dense_params.SSIMParams is SSIMParams
    for package in (builtin_params, dense_params):
        for name in package._MODULES:
            assert name in dir(package)
            model = getattr(package, name)
            if isinstance(model, type):  # not the Reduction type alias
                assert getattr(importlib.import_module(model.__module__), name) is model
                assert model.__module__.rsplit(".", 1)[0] in ("thelper.builtin_params",
                                                              "thelper_vision")
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        builtin_params.Nope  # noqa: B018


def test_default_params_is_the_empty_params_model():
    from thelper.params import Params as EmptyParams
    from thelper.registry import DEFAULT_PARAMS

    info = ComponentInfo("metric", "m", "a:b")
    assert info.params == DEFAULT_PARAMS
    assert info.params_model is EmptyParams
    assert Params is EmptyParams  # `from thelper.registry import Params` keeps working
    import thelper

    assert thelper.Params is EmptyParams


@pytest.mark.parametrize("ref", ["thelper.builtin_params.MLPParams", "thelper builtin:X",
                                 "thelper.builtin_params:", ":MLPParams", "a..b:C", "a:1C"])
def test_params_reference_syntax_is_checked_at_registration(ref):
    with pytest.raises(PluginError, match=r"model/net: params .*'package\.module:Attr'"):
        ComponentInfo("model", "net", "a:b", ref)


def test_params_must_be_a_reference_or_a_model_class():
    with pytest.raises(PluginError, match="model/net: params must be"):
        ComponentInfo("model", "net", "a:b", dict)  # type: ignore[arg-type]


def test_params_reference_is_not_imported_at_registration():
    info = ComponentInfo("model", "net", "a:b", "no_such_thelper_module.sub:Params",
                         plugin="mine", distribution="my-dist")
    info.check_params()  # the parent package is not imported: left to params_model
    with pytest.raises(PluginError) as err:
        _ = info.params_model
    message = str(err.value)
    assert "model 'net' from my-dist" in message
    assert "'no_such_thelper_module.sub:Params'" in message
    assert "ModuleNotFoundError" in message and "-p no:mine" in message


def test_params_reference_to_something_else_than_a_model_is_refused():
    info = ComponentInfo("model", "net", "a:b", "thelper.builtin_params:Reduction",
                         distribution="my-dist")
    with pytest.raises(PluginError, match="model 'net' from my-dist: params "
                       "'thelper.builtin_params:Reduction' is .* not a pydantic model class"):
        _ = info.params_model


def test_check_params_finds_a_missing_module_without_importing():
    ComponentInfo("model", "net", "a:b", "thelper.builtin_params:MLPParams").check_params()
    info = ComponentInfo("model", "net", "a:b", "thelper.no_such_params:MLPParams",
                         distribution="my-dist")
    with pytest.raises(PluginError, match="model 'net' from my-dist: the module of its params "
                       "model 'thelper.no_such_params:MLPParams' does not exist"):
        info.check_params()


def test_registry_build_resolves_lazy_params():
    reg = Registry()
    reg.add(ComponentInfo("loss", "l1", "torch.nn:L1Loss",
                          "thelper.builtin_params:ReductionParams"))
    assert reg.build("loss", "l1", {"reduction": "sum"}).reduction == "sum"


def test_unknown_name_suggests():
    with pytest.raises(ComponentNotFoundError, match="did you mean 'adam'"):
        PM.registry.get("optimizer", "adma")


def test_accuracy_topk_fraction():
    from thelper.metrics import Accuracy

    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.15, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 1, 0])
    top1, top2 = Accuracy(1), Accuracy(2)
    top1.update(logits, targets)
    top2.update(logits, targets)
    assert top1.compute() == pytest.approx(1 / 3)
    assert top2.compute() == pytest.approx(2 / 3)


def test_accuracy_agrees_with_the_confusion_matrix_on_ties_and_ignored_targets():
    from thelper.metrics import Accuracy, ConfusionMatrix

    logits = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.7, 0.7], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    targets = torch.tensor([0, 2, -100, 2])  # ties go to the lowest index; -100 is skipped
    acc, cm = Accuracy(), ConfusionMatrix(task=Classification(["a", "b", "c"]))
    acc.update(logits, targets)
    cm.update(logits, targets)
    m = cm.matrix
    assert acc.compute() == pytest.approx(2 / 3)
    assert acc.compute() == pytest.approx(float(m.diagonal().sum() / m.sum()))


def test_confusion_matrix_files(tmp_path):
    from thelper.metrics import ConfusionMatrix

    cm = ConfusionMatrix(task=Classification(["cat", "dog"]))
    cm.update(torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([0, 1, 1]))
    assert cm.matrix.tolist() == [[1, 0], [1, 1]]
    report = cm.report(tmp_path, "confmat")
    rows = (tmp_path / "confmat.csv").read_text().splitlines()
    assert rows[1] == "cat,1,0" and rows[2] == "dog,1,1"
    assert (tmp_path / "confmat.png").read_bytes()[:4] == b"\x89PNG"
    assert report.figure is not None


def test_checkpoint_roundtrip_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint({"model": {"w": torch.ones(2)}, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_unsafe_checkpoint_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="evil.pt.*unsafe"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "ckpt.latest.pt"
    save_checkpoint({"model": {"w": torch.randn(100)}}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="ckpt.latest.pt"):
        load_checkpoint(path)


def test_find_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="neither"):
        find_checkpoint(tmp_path / "missing")
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(CheckpointError, match="no ckpt.latest.pt"):
        find_checkpoint(tmp_path)
    save_checkpoint({"model": {}}, tmp_path / "checkpoints" / "ckpt.latest.pt")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoints" / "ckpt.latest.pt"
    assert isinstance(find_checkpoint(tmp_path), Path)
