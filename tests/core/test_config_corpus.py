"""A corpus of malformed configs: each problem is reported with its exact path and line.

Every file under ``configs/invalid`` marks the issues it must produce, on the line where they
are reported, as ``#! PATH: TEXT`` (``<root>`` for the whole document); JSON files, which
cannot hold comments, list them in ``<file>.expect`` as ``LINE | PATH | TEXT``. The test
runs ``thelper config validate`` in-process and checks that exactly these (path, line) pairs
are reported, each message containing its text, with exit code 2. Files under
``configs/valid`` (thelper 0.6 configs adapted to need no download among them) must validate.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from thelper.cli import main
from thelper.plugins import get_plugin_manager

CONFIGS = Path(__file__).parent / "configs"
INVALID = sorted(p for p in (CONFIGS / "invalid").iterdir() if p.suffix in (".yaml", ".json"))
VALID = sorted(p for p in (CONFIGS / "valid").iterdir() if p.suffix in (".yaml", ".json"))
MARKER = re.compile(r"#!\s*([^:#]+?):\s*(.*?)\s*(?=#!|$)")


def expectations(path: Path) -> list[tuple[int, str, str]]:
    """``(line, path, text)`` expected for one corpus file."""
    sidecar = path.with_name(path.name + ".expect")
    out = []
    if sidecar.exists():
        for raw in sidecar.read_text().splitlines():
            if raw.strip() and not raw.startswith("#"):
                line, dotted, text = (x.strip() for x in raw.split("|", 2))
                out.append((int(line), dotted, text))
        return out
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        for dotted, text in MARKER.findall(raw):
            out.append((number, "" if dotted.strip() == "<root>" else dotted.strip(), text))
    return out


def needs_vision(path: Path) -> bool:
    return "thelper-vision" in path.read_text() or path.name.startswith("v06_")


def _skip_without_vision(path: Path) -> None:
    if needs_vision(path) and get_plugin_manager().registry.canonical("transform", "resize") \
            is None:
        pytest.skip("needs thelper-vision")


def test_corpus_is_large_enough():
    assert len(INVALID) >= 40
    for path in INVALID:
        assert expectations(path), f"{path.name} marks no expected issue"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.name)
def test_invalid_config_reports_exact_paths_and_lines(path, capsys):
    _skip_without_vision(path)
    code = main(["config", "validate", str(path), "--format", "json"])
    out = capsys.readouterr()
    assert code == 2, out
    assert "Traceback" not in out.out + out.err
    report = json.loads(out.out)
    assert report["valid"] is False
    got = {(i["line"], i["path"]): i["message"] for i in report["issues"]}
    expected = expectations(path)
    assert {(line, dotted) for line, dotted, _ in expected} == set(got), \
        json.dumps(report["issues"], indent=1)
    for line, dotted, text in expected:
        assert text in got[(line, dotted)], (dotted, got[(line, dotted)])
    for issue in report["issues"]:
        assert issue["file"] == str(path) and issue["source"] == "file"
        assert issue["column"] is not None


@pytest.mark.parametrize("path", INVALID[::6], ids=lambda p: p.name)
def test_invalid_config_text_lines(path, capsys):
    _skip_without_vision(path)
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    for line, dotted, text in expectations(path):
        prefix = f"{path}:{line}:"
        shown = dotted or "<root>"
        assert any(e.startswith(prefix) and f": {shown}: " in e and text in e for e in err), err
    assert err[-1].endswith("problem(s) found")


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.name)
def test_valid_configs_validate(path, capsys):
    _skip_without_vision(path)
    code = main(["config", "validate", str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert ": valid (" in out.out


def test_import_path_type_becomes_the_import_adapter(capsys):
    from thelper.config import check_document, load_config

    path = CONFIGS / "valid" / "v06_5_1_classif_cifar10.json"
    _skip_without_vision(path)
    cfg, issues = check_document(load_config(path), get_plugin_manager().registry)
    assert issues == []
    spec = cfg.datasets["cifar10"]
    assert spec.type == "torch_dataset"
    assert spec.params.class_path == "torchvision.datasets.FakeData"
    assert spec.params.params == {"size": 200, "image_size": [3, 32, 32], "num_classes": 10}
    assert spec.task.params.input_key == "0"


def test_imports_allow_admits_a_module(tmp_path, mlp_config, write_config, capsys):
    mlp_config["datasets"]["blobs"] = {
        "type": "mypackage.data.Blobs", "params": {"n": 3},
        "task": {"type": "classification", "params": {"class_names": ["a", "b"]}}}
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path)]) == 2
    assert "--allow-import mypackage" in capsys.readouterr().err
    (tmp_path / "mypackage").mkdir()
    (tmp_path / "mypackage" / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        assert main(["config", "validate", str(path), "--allow-import", "mypackage"]) == 0
        # a config's own allow-list counts only when the command line confirms it
        assert main(["config", "validate", str(path), "--set", "imports.allow=[mypackage]"]) == 2
        assert "confirm it on the command line with --allow-import mypackage" in \
            capsys.readouterr().err
        assert main(["config", "validate", str(path), "--set", "imports.allow=[mypackage]",
                     "--allow-import", "mypackage"]) == 0
    finally:
        sys.path.remove(str(tmp_path))
    assert "mypackage" not in sys.modules  # checked without importing it


def test_set_and_env_issues_are_reported_as_such(mlp_config, write_config, capsys,
                                                 monkeypatch):
    path = write_config(mlp_config)
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__EPOCHS", "many")
    code = main(["config", "validate", str(path), "--set", "model.type=mpl",
                 "--set", "loaders.valid_split.digitz=0.1"])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert "(--set) model.type: 'mpl' is not a registered model; did you mean 'mlp'" in err[0] \
        or any(e.startswith("(--set) model.type: 'mpl'") for e in err)
    assert any(e.startswith("(--set) loaders.valid_split.digitz: 'digitz' is not a dataset")
               for e in err)
    assert any(e.startswith("(env) trainer.epochs: Input should be a valid integer")
               for e in err)


def test_bad_set_syntax_and_unreadable_files_exit_2(mlp_config, write_config, tmp_path, capsys):
    path = write_config(mlp_config)
    assert main(["config", "validate", str(path), "--set", "trainer.epochs"]) == 2
    assert "expected 'dotted.path=value'" in capsys.readouterr().err
    assert main(["config", "validate", str(path), "--set", "trainer.epochs.x=1"]) == 2
    assert "trainer.epochs is not a mapping" in capsys.readouterr().err
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert main(["config", "validate", str(listing)]) == 2
    assert "a config must be a mapping" in capsys.readouterr().err
    assert main(["config", "validate", str(tmp_path / "missing.yaml")]) == 2


@pytest.mark.parametrize("name", ["trainer_device.yaml", "v06_5_1_verbatim.json"])
def test_subprocess_exit_code_and_no_traceback(name):
    path = CONFIGS / "invalid" / name
    exe = Path(sys.executable).parent / "thelper"
    res = subprocess.run([str(exe), "config", "validate", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    for line, dotted, text in expectations(path):
        assert any(e.startswith(f"{path}:{line}:") and dotted in e and text in e
                   for e in res.stderr.splitlines()), res.stderr


def test_subprocess_valid_example_exit_0():
    exe = Path(sys.executable).parent / "thelper"
    path = CONFIGS / "valid" / "v06_4_2_user_guide.yaml"
    res = subprocess.run([str(exe), "config", "validate", str(path), "-f", "json"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"file": str(path), "valid": True, "issues": []}
