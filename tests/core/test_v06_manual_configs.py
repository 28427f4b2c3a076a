"""The thelper 0.6 manual's complete configs, as printed, under ``configs/v06/``.

Each original (the download-only CIFAR-10 replaced by a commented ``FakeData`` edit: 64
images at 64x64) must be refused by ``thelper config validate`` with exactly the issues
listed here, each naming the fix; ``configs/v06/fixed/`` holds the same file with those
fixes applied (marked ``fixed:``), and nothing else changed: every difference between the
two lies under a reported path (or where a message points, e.g. the key a "did you mean"
names). The fixed copies then validate, build and run one short epoch on CPU.

- ``classif-cifar10.json``: user guide 5.1, "The complete configuration";
- ``classif-cifar10-export.json``: user guide 5.16, the training config before the export;
- ``export-classif-cifar10.json``: user guide 5.16, the export config (now ``thelper
  export SESSION_DIR``, run on the session of the previous file);
- ``guide-4-2.yaml``: user guide 4.2, the datasets, loaders, model and trainer sections'
  examples in one file (no ``name``: the file's stem names the session, as in 0.6);
- ``api-reference.yaml``: the API reference's examples (the trainer of
  ``thelper.train.base.Trainer``, the augmentation block of ``load_augments``, the
  ``pretrained`` model of 4.2.3), also without ``name``.

The one change the schema cannot ask for, the order of a transform that needs a tensor
(0.6's ``NormalizeMinMax`` first, ``ToTensor`` last), is asked for by ``--build`` (and
``thelper run``) with the transform's config path: checked here too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from thelper.cli import main
from thelper.plugins import get_plugin_manager

V06 = Path(__file__).parent / "configs" / "v06"
FIXED = V06 / "fixed"
ORIGINALS = sorted(p for p in V06.iterdir() if p.suffix in (".json", ".yaml"))

#: Per original: ``{reported path: text the message must contain}`` (exactly these paths).
EXPECTED: dict[str, dict[str, str]] = {
    "classif-cifar10.json": {
        "datasets.cifar10.task.params.input key": "did you mean 'input_key'?",
        "datasets.cifar10.task.params.label key": "did you mean 'label_key'?",
        "loaders.base_transforms.0.operation": "{type: normalize, params: {mean: [0.498039, "
                                               "0.498039, 0.498039], std: [0.501961, 0.501961,"
                                               " 0.501961]}}, placed after 'torchvision."
                                               "transforms.ToTensor'",
        "model.type": "thelper 0.6's ResNet (ResNet-34 by default) is 'resnet34'",
    },
    "classif-cifar10-export.json": {
        "loaders.base_transforms.0.operation": "placed after 'torchvision.transforms.ToTensor'",
        "model.type": "is 'resnet34' (thelper-vision)",
    },
    "export-classif-cifar10.json": {
        "datasets": "required key is missing",
        "loaders": "required key is missing",
        "trainer": "required key is missing",
        "model": "start from a trained session's weights with 'init_from: {path: ",
        "export": "export a trained session with 'thelper export SESSION_DIR' instead",
    },
    "guide-4-2.yaml": {
        "datasets.cifar10_train.task.params.label key": "did you mean 'label_key'?",
        "datasets.cifar10_test.task.params.label key": "did you mean 'label_key'?",
        "loaders.test_seed": "the split seed is 'seeds.split'",
        "loaders.valid_seed": "the split seed is 'seeds.split'",
        "loaders.torch_seed": "write 'seeds: {torch: N}'",
        "loaders.numpy_seed": "write 'seeds: {numpy: N}'",
        "loaders.random_seed": "write 'seeds: {random: N}'",
        "loaders.base_transforms.0.operation": "{type: normalize, params: {mean: [0.498039",
        "model.type": "MobileNetV2 is 'mobilenet_v2' (thelper-vision), and remove "
                      "'params.input_size'",
        "trainer.use_tbx": "remove 'use_tbx'",
        "trainer.metrics.accuracy.params.top k": "did you mean 'top_k'?",
    },
    "api-reference.yaml": {
        "loaders.train_augments.transforms.0.operation": "Augmentor pipelines are not "
                                                         "supported: list the torchvision "
                                                         "transforms instead",
        "model.params.pretrained": "weights are never downloaded: remove 'pretrained'",
        "trainer.optimization.scheduler.params.step_size": "duplicate key 'step_size'",
        "trainer.viz": "remove 'viz'",
    },
}

#: Differences of the fixed copy under no reported path, and the message that asks for each.
ALSO_CHANGED: dict[str, dict[str, str]] = {
    "classif-cifar10.json": {
        "loaders.base_transforms": "--build: move it after 'torchvision.transforms.ToTensor'"},
    "classif-cifar10-export.json": {
        "loaders.base_transforms": "--build: move it after 'torchvision.transforms.ToTensor'"},
    "guide-4-2.yaml": {
        "seeds": "the seed hints: write 'seeds: {torch: N}'",
        "loaders.base_transforms": "--build: move it after 'torchvision.transforms.ToTensor'",
        "trainer.device": "--build: 'cuda:all' but this machine has 0 CUDA device(s); use cpu",
    },
    "api-reference.yaml": {
        "loaders.train_augments": "0.6's {append: false, transforms} block reads as the list",
    },
}

#: ``--set`` overrides that keep the runs short: one epoch (of 64 images at most, in batches
#: of 32 or 128 as the manual wrote), 64x64 images (RESIZE_64) instead of 224x224.
SHORT = ["--set", "trainer.epochs=1"]
RESIZE_64 = ["--set", "loaders.base_transforms.0.params.dsize=[64,64]"]


def _needs_vision() -> None:
    if get_plugin_manager().registry.canonical("model", "resnet34") is None:
        pytest.skip("needs thelper-vision")


def _issues(path: Path, capsys, *extra: str) -> dict[str, str]:
    code = main(["config", "validate", str(path), "--format", "json", *extra])
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert "Traceback" not in out.out + out.err
    report = json.loads(out.out)
    found: dict[str, str] = {}
    for issue in report["issues"]:
        found[issue["path"]] = (found.get(issue["path"], "") + " | " + issue["message"]
                                ).lstrip(" |")
    return found


def _leaves(node, prefix: tuple = ()) -> dict[tuple, object]:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, (*prefix, str(k))))
        return out
    if isinstance(node, list) and node:
        out = {}
        for i, v in enumerate(node):
            out.update(_leaves(v, (*prefix, str(i))))
        return out
    return {prefix: node}


def _changed(original: Path, fixed: Path) -> set[tuple]:
    a = _leaves(yaml.safe_load(original.read_text()))
    b = _leaves(yaml.safe_load(fixed.read_text()))
    return {k for k in a.keys() | b.keys() if a.get(k, KeyError) != b.get(k, KeyError)}


def _named_by(issues: dict[str, str]) -> set[tuple]:
    """Paths the messages touch: each reported path, and the sibling key a message quotes
    (``did you mean 'label_key'`` at ``...params.label key`` touches ``...params.label_key``;
    ``remove 'params.input_size'`` at ``model.type`` touches ``model.params.input_size``)."""
    out = set()
    for path, message in issues.items():
        parts = tuple(path.split(".")) if path else ()
        out.add(parts)
        for quoted in re.findall(r"(?:did you mean|remove) '([^']+)'", message):
            out.add((*parts[:-1], *quoted.split(".")))
    return out


@pytest.mark.parametrize("path", ORIGINALS, ids=lambda p: p.name)
def test_original_reports_exactly_the_fixes(path, capsys):
    _needs_vision()
    issues = _issues(path, capsys)
    expected = EXPECTED[path.name]
    assert set(issues) == set(expected), json.dumps(issues, indent=1)
    for dotted, text in expected.items():
        assert text in issues[dotted], (dotted, issues[dotted])
    fixed = FIXED / path.name
    if not fixed.exists():
        return  # the export config has no fixed copy: it became a command
    touched = _named_by(issues) | {tuple(p.split(".")) for p in ALSO_CHANGED.get(path.name, {})}
    changed = _changed(path, fixed)
    assert changed, "the fixed copy changes nothing"
    unexplained = {".".join(c) for c in changed  # under a touched path, or emptied by it
                   if not any(c[:len(t)] == t or t[:len(c)] == c for t in touched)}
    assert not unexplained, f"changed although no message asks for it: {unexplained}"
    for dotted in expected:  # and every reported path was acted upon
        parts = tuple(dotted.split("."))
        assert any(c[:len(parts)] == parts for c in changed), f"{dotted} was not changed"


def test_the_manual_config_without_name_takes_the_file_stem(capsys):
    _needs_vision()
    from thelper.config import check_document, load_config

    registry = get_plugin_manager().registry
    for name in ("guide-4-2.yaml", "api-reference.yaml"):
        cfg, issues = check_document(load_config(FIXED / name), registry)
        assert issues == [] and cfg.name == Path(name).stem
    # an explicit name wins, several files need one
    cfg, _ = check_document(load_config(FIXED / "guide-4-2.yaml", ["name=mine"]), registry)
    assert cfg.name == "mine"


def test_stem_that_cannot_be_a_name_and_several_files(tmp_path, capsys):
    _needs_vision()
    text = (FIXED / "api-reference.yaml").read_text()
    bad = tmp_path / "my config.yaml"
    bad.write_text(text)
    issues = _issues(bad, capsys)
    assert "the file's stem 'my config' cannot be a session name" in issues["name"]
    other = tmp_path / "epochs.yaml"
    other.write_text("trainer: {epochs: 1}\n")
    issues = _issues(FIXED / "api-reference.yaml", capsys, str(other))
    assert "give 'name', or name a single config file" in issues["name"]


@pytest.mark.parametrize("path", sorted(FIXED.iterdir()), ids=lambda p: p.name)
def test_fixed_copy_validates(path, capsys):
    _needs_vision()
    assert main(["config", "validate", str(path)]) == 0, capsys.readouterr().err


def _normalize_first() -> list[str]:
    """The NormalizeMinMax hint applied in place: 'normalize' first, before ToTensor."""
    return ["--set", "loaders.base_transforms=[{type: normalize, params: {mean: [0.498039, "
                     "0.498039, 0.498039], std: [0.501961, 0.501961, 0.501961]}}, "
                     "{type: thelper.transforms.Resize, params: {dsize: [64, 64]}}, "
                     "{operation: torchvision.transforms.ToTensor}]"]


def test_transform_on_the_wrong_type_is_reported_at_build(capsys):
    _needs_vision()
    path = FIXED / "classif-cifar10.json"
    issues = _issues(path, capsys, "--build", *_normalize_first())
    assert list(issues) == ["loaders"]
    message = issues["loaders"]
    assert "loaders.base_transforms[0] (normalize) cannot transform train sample 0 of " \
           "dataset 'cifar10': it got a PIL image (mode RGB, 64x64)" in message
    assert "move it after 'torchvision.transforms.ToTensor'" in message


def test_transform_on_the_wrong_type_stops_run_before_workers(tmp_path, capsys):
    _needs_vision()
    path = FIXED / "classif-cifar10.json"
    code = main(["run", str(path), "-o", str(tmp_path), *SHORT, *_normalize_first(),
                 "--set", "loaders.workers=2"])
    out = capsys.readouterr()
    assert code == 2, out.err
    assert "loaders.base_transforms[0] (normalize)" in out.err
    assert "move it after 'torchvision.transforms.ToTensor'" in out.err
    assert "DataLoader worker" not in out.err and "Traceback" not in out.err


def test_cuda_all_is_reported_at_build_without_gpu(capsys):
    _needs_vision()
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    issues = _issues(FIXED / "api-reference.yaml", capsys, "--build",
                     "--set", "trainer.device=cuda:all")
    assert "use cpu" in issues["trainer.device"]


RUNS = {  # fixed copy -> extra overrides (64x64 instead of the manual's 224x224 resize)
    "classif-cifar10.json": RESIZE_64,
    "classif-cifar10-export.json": RESIZE_64,
    "guide-4-2.yaml": RESIZE_64 + ["--set", "loaders.workers=2"],
    "api-reference.yaml": ["--set", "loaders.workers=0"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_fixed_copy_runs_one_epoch(name, tmp_path, capsys):
    _needs_vision()
    path = FIXED / name
    code = main(["run", str(path), "-o", str(tmp_path), *SHORT, *RUNS[name]])
    out = capsys.readouterr()
    assert code == 0, out.err[-3000:]
    stem = yaml.safe_load(path.read_text()).get("name") or path.stem
    session = tmp_path / stem
    record = json.loads((session / "run.json").read_text())
    assert record["status"] == "completed"
    assert (session / "checkpoints" / "ckpt.latest.pt").is_file()
    if name == "classif-cifar10-export.json":  # user guide 5.16's export, as a command
        export = tmp_path / "model.pt"
        assert main(["export", str(session), "-o", str(export)]) == 0, \
            capsys.readouterr().err[-3000:]
        assert export.is_file()
