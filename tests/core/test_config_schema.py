"""JSON Schema export, the committed schemas, and ``thelper config init``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from tests.conftest import MLP_CONFIG
from thelper.cli import main
from thelper.config.schema import COMMITTED, committed_registry, schema_text
from thelper.config.starter import TEMPLATES
from thelper.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schema"
EXAMPLES = sorted((ROOT / "examples").glob("*/config.yaml"))
REGENERATE = ("regenerate it with: THELPER_DISABLE_PLUGIN_AUTOLOAD=1 uv run thelper config "
              "schema -o docs/schema/thelper-config.schema.json (or: uv run python -m "
              "thelper.config.schema)")


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_core_schema_is_fresh():
    text = schema_text(committed_registry(()))
    assert (SCHEMAS / "thelper-config.schema.json").read_text() == text, REGENERATE


def test_cli_core_schema_matches_the_committed_one(tmp_path):
    env = {**os.environ, "THELPER_DISABLE_PLUGIN_AUTOLOAD": "1"}
    env.pop("THELPER_PLUGINS", None)
    out = tmp_path / "schema.json"
    res = subprocess.run([str(Path(sys.executable).parent / "thelper"), "config", "schema",
                          "-o", str(out)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert out.read_text() == (SCHEMAS / "thelper-config.schema.json").read_text(), REGENERATE


def test_core_schema_accepts_core_configs_and_rejects_mistakes():
    validator = _validator("thelper-config.schema.json")
    assert not list(validator.iter_errors(MLP_CONFIG))
    bad = json.loads(json.dumps(MLP_CONFIG))
    bad["trainer"]["optimization"]["optimizer"]["params"]["lr"] = "fast"
    bad["model"]["type"] = "mlpp"
    paths = {tuple(e.absolute_path) for e in validator.iter_errors(bad)}
    assert ("model",) in paths


def test_every_example_names_a_committed_schema_that_accepts_it():
    registry = get_plugin_manager().registry
    prefix = "# yaml-language-server: $schema="
    for path in EXAMPLES:
        header = path.read_text().splitlines()[0]
        assert header.startswith(prefix), (path, "first line must name the schema")
        schema_path = (path.parent / header[len(prefix):].strip()).resolve()
        assert schema_path.parent == SCHEMAS and schema_path.name in COMMITTED, \
            (path, header)
        validator = _validator(schema_path.name)
        data = yaml.safe_load(path.read_text())
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}"
                  for e in validator.iter_errors(data)]
        assert not errors, (path, errors, "regenerate with: uv run python -m "
                            "thelper.config.schema")
    # no stale component name in the committed workspace schema
    text = (SCHEMAS / "thelper-config.workspace.schema.json").read_text()
    for kind in ("model", "transform", "dataset"):
        for name in json.loads(text)["$defs"]:
            if name.startswith(f"{kind.capitalize()}Spec_"):
                member = name.split("_", 1)[1]
                assert any(c.name.replace(".", "_") == member or c.name == member
                           for c in registry.components(kind)), (name, "stale")


def test_schema_has_descriptions_and_the_import_path_escape_hatch(capsys):
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    trainer = schema["$defs"]["TrainerConfig_default"]["properties"]
    assert trainer["epochs"]["description"] == "Number of training epochs."
    adam = schema["$defs"]["AdamParams"]["properties"]["lr"]
    assert adam["description"] == "Learning rate." and adam["exclusiveMinimum"] == 0
    datasets = schema["properties"]["datasets"]["additionalProperties"]["anyOf"]
    hatch = datasets[-1]
    assert hatch["title"] == "DatasetSpec_import_path" and "task" in hatch["required"]
    assert "``" not in json.dumps(schema)


def test_committed_list_is_complete():
    assert set(COMMITTED) == {p.name for p in SCHEMAS.glob("*.json")}


# ----------------------------------------------------------------------------- init
@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_init_templates_validate(template, tmp_path, capsys, monkeypatch):
    registry = get_plugin_manager().registry
    if TEMPLATES[template].requires and registry.canonical("model", "simple_cnn") is None:
        pytest.skip("needs thelper-vision")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs" / "first try.yaml"
    assert main(["config", "init", template, "-o", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[0] == "# yaml-language-server: $schema=thelper-config.schema.json"
    assert (out.parent / "thelper-config.schema.json").is_file()
    assert yaml.safe_load(text)["name"] == "first-try"
    capsys.readouterr()
    assert main(["config", "validate", str(out)]) == 0, capsys.readouterr().err


def test_init_refuses_to_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init"]) == 0
    target = tmp_path / "digits-mlp.yaml"
    target.write_text("# mine\n")
    assert main(["config", "init"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert target.read_text() == "# mine\n"
    assert main(["config", "init", "--force", "--schema", "https://example.org/s.json"]) == 0
    assert target.read_text().startswith(
        "# yaml-language-server: $schema=https://example.org/s.json\n")


def test_init_unknown_template_and_list(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["config", "init", "digits-mpl"]) == 2
    assert "did you mean 'digits-mlp'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["config", "init", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in TEMPLATES)
