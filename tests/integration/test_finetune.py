"""Fine-tuning: ``model.init_from``, ``model.freeze``/``unfreeze`` and optimizer
``param_groups`` (docs/config/finetuning.md), end to end on scikit-learn's digits."""

from __future__ import annotations

import copy
import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from thelper.cli import main
from thelper.config import document_from_dict
from thelper.data.datasets import SklearnDataset
from thelper.exceptions import CheckpointError, ConfigError, DataError
from thelper.finetune import apply_freeze, apply_unfreeze, load_init, matches, optimizer_params
from thelper.runner import resume_session, run_session

#: The digits CNN (thelper-vision's ``simple_cnn``) trained on the digits 0 to 4 only.
SOURCE: dict[str, Any] = {
    "name": "digits-0-4",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "sklearn",
                            "params": {"name": "digits", "classes": [0, 1, 2, 3, 4]}}},
    "loaders": {"batch_size": 32, "train_split": {"digits": 0.8},
                "valid_split": {"digits": 0.1}, "test_split": {"digits": 0.1}},
    "model": {"type": "simple_cnn", "params": {"in_channels": 1}},
    "trainer": {"epochs": 3, "device": "cpu", "monitor": "accuracy", "progress": False,
                "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.003}}},
                "metrics": {"accuracy": {"type": "accuracy"}},
                "test_metrics": {"confmat": {"type": "confusion_matrix"}}},
}
EPOCHS = 4
#: Names of the last linear layer (the head) and of the convolutional features.
HEAD, FEATURES = "classifier.4", "features"


def _target(name: str) -> dict[str, Any]:
    """All ten digits, with few training samples (180): where a pretrained model helps."""
    cfg = copy.deepcopy(SOURCE)
    cfg["name"] = name
    cfg["datasets"]["digits"]["params"].pop("classes")
    cfg["loaders"].update(train_split={"digits": 0.1}, valid_split={"digits": 0.1},
                          test_split={"digits": 0.5})
    cfg["trainer"]["epochs"] = EPOCHS
    return cfg


def _finetune(source: Path, name: str = "finetune") -> dict[str, Any]:
    """New head, features frozen for epochs 1 and 2, then trained at a sixth of the lr."""
    cfg = _target(name)
    cfg["model"].update(init_from={"path": str(source), "exclude": [HEAD]},
                        freeze=[FEATURES], unfreeze=[{"match": f"{FEATURES}.*", "at_epoch": 3}])
    cfg["trainer"]["optimization"]["optimizer"]["param_groups"] = [
        {"match": FEATURES, "lr": 0.0005}]
    return cfg


def _new_class_accuracy(session_dir: Path, name: str) -> float:
    """Test accuracy on the digits 5 to 9, which the source session never saw."""
    path = session_dir / "output" / name / "test" / "confmat.csv"
    rows = list(csv.reader(path.open()))[1:]
    new = [r for r in rows if int(r[0]) >= 5]
    return sum(int(r[1 + int(r[0])]) for r in new) / sum(sum(map(int, r[1:])) for r in new)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """The source session, a fine-tuned session and one trained from scratch."""
    save = tmp_path_factory.mktemp("finetune")
    run_session(document_from_dict(copy.deepcopy(SOURCE)), save)
    run_session(document_from_dict(_target("scratch")), save)
    run_session(document_from_dict(_finetune(save / "digits-0-4")), save)
    return save


def _test_accuracy(session_dir: Path) -> float:
    return json.loads((session_dir / "run.json").read_text())["test"]["accuracy"]


def _model(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["model"]


# ---------------------------------------------------------------- end to end
def test_finetuning_beats_training_from_scratch(runs):
    ft, scratch = _test_accuracy(runs / "finetune"), _test_accuracy(runs / "scratch")
    # seed 0: 0.824 vs 0.382 (seeds 1 and 2: 0.845 vs 0.235, 0.835 vs 0.624)
    assert ft >= scratch + 0.15, (ft, scratch)
    assert ft >= 0.75
    # not only the classes the source saw (its training samples may be test samples here)
    new_ft = _new_class_accuracy(runs / "finetune", "finetune")
    new_scratch = _new_class_accuracy(runs / "scratch", "scratch")
    assert new_ft >= new_scratch + 0.1, (new_ft, new_scratch)  # seed 0: 0.69 vs 0.24


def test_init_from_loads_the_best_checkpoint_but_the_new_head(runs):
    report = json.loads((runs / "finetune" / "logs" / "init_from.json").read_text())
    best = runs / "digits-0-4" / "checkpoints" / "ckpt.best.pt"
    assert report["source"]["file"] == str(best)
    assert report["source"]["kind"] == "thelper-checkpoint"
    assert report["excluded"]["checkpoint"] == [f"{HEAD}.weight", f"{HEAD}.bias"]
    assert report["excluded"]["model"] == [f"{HEAD}.weight", f"{HEAD}.bias"]
    assert report["missing"] == [] and report["unexpected"] == []
    assert f"{FEATURES}.0.weight" in report["loaded"] and "classifier.1.weight" in report["loaded"]
    assert report["counts"] == {"checkpoint": 16, "model": 16, "loaded": 14, "missing": 0,
                                "unexpected": 0, "excluded": 2}
    source = _model(best)
    first = _model(runs / "finetune" / "checkpoints" / "ckpt.0001.pt")
    assert first[f"{HEAD}.weight"].shape == (10, 128) and source[f"{HEAD}.weight"].shape == (5, 128)
    log = (runs / "finetune" / "logs" / "trainer.log").read_text()
    assert "init_from " in log and "14 of 16 model tensors loaded" in log


def test_frozen_features_train_from_the_unfreeze_epoch_with_their_own_lr(runs):
    ckpts = runs / "finetune" / "checkpoints"
    source = _model(runs / "digits-0-4" / "checkpoints" / "ckpt.best.pt")
    epoch = {e: _model(ckpts / f"ckpt.{e:04d}.pt") for e in (2, 3)}
    weight = f"{FEATURES}.0.weight"
    assert torch.equal(epoch[2][weight], source[weight])  # frozen in epochs 1 and 2
    assert not torch.equal(epoch[3][weight], source[weight])  # trained from epoch 3
    assert not torch.equal(epoch[2]["classifier.1.weight"], source["classifier.1.weight"])
    groups = torch.load(ckpts / "ckpt.latest.pt", weights_only=True)["optimizer"]["param_groups"]
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [
        ("default", 0.003, 4), (FEATURES, 0.0005, 6)]
    log = (runs / "finetune" / "logs" / "trainer.log").read_text()
    assert "epoch 3: unfroze features.*" in log


def test_model_txt_reports_frozen_counts_and_groups(runs):
    text = (runs / "finetune" / "logs" / "model.txt").read_text()
    assert "parameters: 28,522 (9,610 trainable, 18,912 frozen)" in text
    assert "freeze: features (6 tensors, 18,912 parameters)" in text
    assert "unfreeze at epoch 3: features.*" in text
    assert "  default: lr 0.003, weight_decay 0.0: 4 tensors, 9,610 parameters" in text
    assert ("  features: lr 0.0005, weight_decay 0.0: 6 tensors, 18,912 parameters "
            "(18,912 frozen)") in text
    assert "init_from: " in text and "14 of 16 model tensors loaded" in text
    plain = (runs / "scratch" / "logs" / "model.txt").read_text()
    assert "parameters: 28,522 (28,522 trainable, 0 frozen)" in plain
    assert not (runs / "scratch" / "logs" / "init_from.json").exists()


def test_resume_rederives_the_freeze_state_without_the_source(runs, tmp_path):
    """Two epochs, then a resume to four (the source session gone: init_from is not read
    again) ends with the weights of the uninterrupted run."""
    source = tmp_path / "source"
    shutil.copytree(runs / "digits-0-4", source)
    cfg = _finetune(source)
    cfg["trainer"]["epochs"] = 2
    session = run_session(document_from_dict(cfg), tmp_path)
    weight = f"{FEATURES}.0.weight"
    start = _model(source / "checkpoints" / "ckpt.best.pt")[weight]
    assert torch.equal(_model(session.checkpoints_dir / "ckpt.latest.pt")[weight], start)
    shutil.rmtree(source)
    resumed = resume_session(session.session_dir, sets=[f"trainer.epochs={EPOCHS}"])
    assert resumed.start_epoch == 3
    final = _model(resumed.checkpoints_dir / "ckpt.latest.pt")
    expected = _model(runs / "finetune" / "checkpoints" / "ckpt.latest.pt")
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    log = (session.session_dir / "logs" / "trainer.log").read_text()
    assert "model.init_from is not loaded when resuming" in log


# ---------------------------------------------------------------- torchvision weights
@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """torchvision's resnet18 state dict, as its downloadable ``.pth`` files hold it."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


class _Wrapped(nn.Module):
    """A resnet18 trunk under ``backbone`` with a new ``head``."""

    def __init__(self, num_classes: int = 10) -> None:
        import torchvision

        super().__init__()
        self.backbone = torchvision.models.resnet18(weights=None)
        self.backbone.fc = nn.Identity()
        self.head = nn.Linear(512, num_classes)


def test_torchvision_resnet18_loads_by_key_mapping(resnet18_file):
    weights = torch.load(resnet18_file, weights_only=True)
    model = _Wrapped()
    spec = {"path": str(resnet18_file), "key_map": {"fc.": "head.", "": "backbone."},
            "exclude": [], "strict": True}
    with pytest.raises(ConfigError) as err:  # the 1000-class head does not fit
        load_init(model, spec)
    assert ("fc.weight -> head.weight: checkpoint (1000, 512) vs model (10, 512)"
            in str(err.value))
    assert "fc.bias -> head.bias: checkpoint (1000) vs model (10)" in str(err.value)
    assert "model.init_from.exclude" in str(err.value)
    report = load_init(model, {**spec, "exclude": ["head"]})
    state = model.state_dict()
    for key, value in weights.items():
        if not key.startswith("fc."):
            assert torch.equal(state[f"backbone.{key}"], value), key
    assert report["renamed"]["layer4.1.conv2.weight"] == "backbone.layer4.1.conv2.weight"
    assert report["excluded"] == {"checkpoint": ["fc.weight", "fc.bias"],
                                  "model": ["head.weight", "head.bias"]}
    assert report["counts"]["loaded"] == len(weights) - 2
    assert report["missing"] == [] and report["unexpected"] == []


def test_vision_resnet18_from_torchvision_weights_at_build(resnet18_file, tmp_path, capsys):
    """thelper-vision's ``resnet18`` on 1-channel digits: its first convolution and its
    head differ from the file; ``config validate --build`` says so, then loads."""
    cfg = _target("resnet")
    cfg["model"] = {"type": "resnet18", "params": {"in_channels": 1},
                    "init_from": {"path": str(resnet18_file), "exclude": ["fc"]},
                    "freeze": ["conv1", "bn1", "layer1", "layer2"]}
    path = tmp_path / "resnet.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["config", "validate", str(path), "--build"]) == 2
    err = capsys.readouterr().err
    assert "conv1.weight: checkpoint (64, 3, 7, 7) vs model (64, 1, 7, 7)" in err
    cfg["model"]["init_from"]["exclude"] = ["fc", "conv1"]
    path.write_text(yaml.safe_dump(cfg))
    assert main(["config", "validate", str(path), "--build"]) == 0, capsys.readouterr().err


# ---------------------------------------------------------------- init_from errors
class _Small(nn.Module):
    def __init__(self, extra: bool = False) -> None:
        super().__init__()
        self.body = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)
        if extra:
            self.aux = nn.Linear(3, 2)


def test_missing_and_unexpected_keys_are_reported_or_refused(tmp_path):
    path = tmp_path / "small.pt"
    torch.save(_Small(extra=True).state_dict(), path)
    with pytest.raises(ConfigError) as err:
        load_init(_Small(), {"path": str(path), "strict": True})
    assert "2 checkpoint key(s) fit no model key (unexpected: aux.weight, aux.bias)" \
        in str(err.value)
    assert "strict: false" in str(err.value)
    report = load_init(_Small(), {"path": str(path), "strict": False})
    assert report["unexpected"] == ["aux.weight", "aux.bias"] and report["missing"] == []

    torch.save(_Small().state_dict(), path)
    with pytest.raises(ConfigError, match=r"2 model key\(s\) are not in the checkpoint "
                                          r"\(missing: aux.weight, aux.bias\)"):
        load_init(_Small(extra=True), {"path": str(path), "strict": True})
    model = _Small(extra=True)
    before = model.aux.weight.detach().clone()
    report = load_init(model, {"path": str(path), "strict": False})
    assert report["missing"] == ["aux.weight", "aux.bias"]
    assert torch.equal(model.aux.weight, before)  # kept its initialisation
    assert torch.equal(model.body.weight, torch.load(path, weights_only=True)["body.weight"])


def test_nothing_matching_names_both_key_styles(tmp_path):
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in _Small().state_dict().items()}, path)
    with pytest.raises(ConfigError) as err:
        load_init(_Small(), {"path": str(path), "strict": False})
    assert "none of its 7 tensors fits a model key" in str(err.value)
    assert "module.body.weight" in str(err.value) and "body.weight" in str(err.value)
    report = load_init(_Small(), {"path": str(path), "key_map": {"module.": ""}})
    assert report["counts"]["loaded"] == 7


def test_unsafe_and_wrong_files_are_refused(tmp_path):
    pickled = tmp_path / "module.pt"
    torch.save(nn.Linear(4, 3), pickled)  # a whole module: a pickle of code references
    with pytest.raises(CheckpointError, match=r"weights_only=True.*Unsupported global"):
        load_init(_Small(), {"path": str(pickled)})
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], listed)
    with pytest.raises(ConfigError, match="holds list, not a state dict"):
        load_init(_Small(), {"path": str(listed)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_init(_Small(), {"path": str(tmp_path / "nope.pt")})
    with pytest.raises(ConfigError, match="without checkpoints/ckpt.best.pt"):
        load_init(_Small(), {"path": str(tmp_path)})
    clash = tmp_path / "clash.pt"
    torch.save({"a.weight": torch.zeros(3, 4), "b.weight": torch.zeros(3, 4)}, clash)
    with pytest.raises(ConfigError, match="both renamed to 'body.weight'"):
        load_init(_Small(), {"path": str(clash), "key_map": {"a.": "body.", "b.": "body."}})


# ---------------------------------------------------------------- freezing and groups
def test_patterns():
    assert matches("features.0.weight", "features.*")
    assert matches("features.0.weight", "features")
    assert matches("features.0.weight", "features.")
    assert not matches("features2.weight", "features")
    assert matches("layer1.0.bn1.bias", "*.bias")
    assert matches("layer1.0.conv1.weight", "layer1.0")
    assert not matches("layer10.0.conv1.weight", "layer1")


def test_apply_unfreeze_follows_the_schedule_and_rederives_it():
    def frozen_model() -> nn.Sequential:
        model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.Linear(2, 2))
        assert apply_freeze(model, ["0", "2.*"]) == ["0.weight", "0.bias", "2.weight",
                                                      "2.bias"]
        return model

    schedule = [{"match": "0", "at_epoch": 2}, {"match": ["2.weight", "2.bias"],
                                                "at_epoch": 3}]
    model = frozen_model()
    assert apply_unfreeze(model, schedule, 1) == []
    assert not model[0].weight.requires_grad
    assert apply_unfreeze(model, schedule, 2) == ["0"]
    assert model[0].weight.requires_grad and not model[2].weight.requires_grad
    assert apply_unfreeze(model, schedule, 3) == ["2.weight", "2.bias"]
    assert apply_unfreeze(model, schedule, 4) == []  # idempotent
    assert all(p.requires_grad for p in model.parameters())
    resumed = frozen_model()  # a resume at epoch 5: everything due by then at once
    assert apply_unfreeze(resumed, schedule, 5) == ["0", "2.weight", "2.bias"]
    assert all(p.requires_grad for p in resumed.parameters())


def test_optimizer_params_first_match_wins():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2))
    assert len(optimizer_params(model, None)) == 6
    spec = {"param_groups": [{"match": "*.bias", "lr": None, "weight_decay": 0.0},
                             {"match": "0", "lr": 0.1, "weight_decay": None}]}

    class Spec:
        param_groups = [type("G", (), g)() for g in spec["param_groups"]]

    groups = optimizer_params(model, Spec())
    assert [g["name"] for g in groups] == ["default", "*.bias", "0"]
    assert groups[0]["params"] == [model[1].weight, model[2].weight]
    assert groups[1]["params"] == [model[0].bias, model[1].bias, model[2].bias]
    assert groups[1]["weight_decay"] == 0.0 and "lr" not in groups[1]
    assert groups[2]["params"] == [model[0].weight] and groups[2]["lr"] == 0.1
    optimizer = torch.optim.AdamW(groups, lr=0.01)
    assert [g["lr"] for g in optimizer.param_groups] == [0.01, 0.01, 0.1]

    class Shadowed:
        param_groups = [type("G", (), {"match": "*", "lr": None, "weight_decay": None})(),
                        type("G", (), {"match": "0", "lr": 0.1, "weight_decay": None})()]

    with pytest.raises(ConfigError, match=r"param_groups\[1\].match: every parameter it "
                                          r"matches is already in param_groups\[0\]"):
        optimizer_params(model, Shadowed())


def _mlp(mlp_config: dict, **model: Any) -> dict:
    mlp_config["model"].update(model)
    return mlp_config


@pytest.mark.parametrize("edit, message", [
    (lambda c: _mlp(c, freeze=["feature.*"]),
     "model.freeze[0]: pattern 'feature.*' matches no parameter of the model; the model's "
     "parameters are named like net.1.weight, net.4.weight"),
    (lambda c: _mlp(c, freeze=["net.1"], unfreeze=[{"match": "net.4", "at_epoch": 2}]),
     "model.unfreeze[0].match: pattern 'net.4' matches no frozen parameter"),
    (lambda c: c["trainer"]["optimization"]["optimizer"].update(
        param_groups=[{"match": "*.biass", "weight_decay": 0}]) or c,
     "trainer.optimization.optimizer.param_groups[0].match: pattern '*.biass' matches no "
     "parameter of the model; did you mean '*.bias'?"),
])
def test_patterns_matching_nothing_fail_the_build(edit, message, mlp_config, write_config,
                                                  capsys):
    path = write_config(edit(mlp_config))
    assert main(["config", "validate", str(path)]) == 0  # the schema cannot know the names
    assert main(["config", "validate", str(path), "--build"]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("model, where", [
    ({"init_from": {"path": "x.pt", "keymap": {}}}, "model.init_from.keymap"),
    ({"unfreeze": [{"match": "net.1", "at_epoch": 0}]}, "model.unfreeze.0.at_epoch"),
    ({"freeze": [""]}, "model.freeze.0"),
])
def test_schema_refuses_bad_finetuning_keys(model, where, mlp_config, write_config, capsys):
    path = write_config(_mlp(mlp_config, **model))
    assert main(["config", "validate", str(path)]) == 2
    assert where in capsys.readouterr().err


def test_schema_refuses_a_zero_group_lr(mlp_config, write_config, capsys):
    mlp_config["trainer"]["optimization"]["optimizer"]["param_groups"] = [
        {"match": "net.1", "lr": 0}]
    assert main(["config", "validate", str(write_config(mlp_config))]) == 2
    assert "trainer.optimization.optimizer.param_groups.0.lr" in capsys.readouterr().err


def test_schema_warns_about_a_missing_init_file_and_a_late_unfreeze(mlp_config, write_config,
                                                                    capfd):
    path = write_config(_mlp(mlp_config, init_from={"path": "/no/such/weights.pt"},
                             freeze=["net.1"], unfreeze=[{"match": "net.1", "at_epoch": 9}]))
    assert main(["config", "validate", str(path)]) == 0
    err = capfd.readouterr().err
    assert "warning: model.init_from.path: '/no/such/weights.pt' does not exist" in err \
        or "model.init_from.path: '/no/such/weights.pt' does not exist on this machine" in err
    assert "model.unfreeze.0.at_epoch: epoch 9 is after the last epoch (trainer.epochs: 3)" \
        in err


# ---------------------------------------------------------------- class filter
def test_sklearn_class_filter():
    ds = SklearnDataset("digits", classes=[4, "0", 2])
    assert ds.task.class_names == ["0", "2", "4"]
    full = SklearnDataset("digits")
    assert len(ds) == sum(full.targets.count(c) for c in (0, 2, 4))
    assert set(ds.targets) == {0, 1, 2}
    with pytest.raises(DataError, match="has no class 'ten'"):
        SklearnDataset("digits", classes=["ten"])
