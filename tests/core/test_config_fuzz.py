"""Hypothesis: mutate valid configs at random; validation reports clean issues, never crashes.

Mutations: delete a key, replace a value by anything JSON/YAML can hold (NaN, huge ints,
nested lists and mappings, odd text), rename a key (typos, spaces, non-string keys), insert
keys, wrap values in lists; and text-level edits of the YAML file, and random ``--set``
overrides. Every run must end in success or in a list of :class:`ConfigIssue` (through the
CLI: exit code 0 or 2 and no traceback).
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MLP_CONFIG
from thelper.cli import main
from thelper.config import check_document, document_from_dict
from thelper.exceptions import ConfigError, ConfigIssue
from thelper.plugins import get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
DIGITS = yaml.safe_load((ROOT / "examples" / "digits-classification" / "config.yaml").read_text())
BASES = {"mlp": MLP_CONFIG, "digits": DIGITS,
         **{p.stem: yaml.safe_load(p.read_text())
            for p in sorted((Path(__file__).parent / "configs" / "valid").iterdir())}}
#: ``FUZZ_EXAMPLES=5000`` explores more (and randomly); CI runs a fixed, fast sample.
_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "0")) or None
FUZZ = settings(max_examples=_EXAMPLES or 100, deadline=None, derandomize=_EXAMPLES is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
#: The CLI runs cost ~40 ms each in-process (typer builds its commands on every call).
FUZZ_CLI = settings(FUZZ, max_examples=_EXAMPLES or 50)

names = st.sampled_from(["type", "params", "task", "name", "lr", "epochs", "top k", "top_k",
                         "batch size", "operation", "step metric", "class_path", "digits",
                         "accuracy", "torchvision.datasets.FakeData", "0", "", " ", "é"])
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), names,
    st.sampled_from(["sklearn", "mlp", "adam", "accuracy", "torch_dataset", "classification",
                     "torch.optim.Adam", "thelper.optim.Accuracy", "os.system",
                     "torchvision.datasets.CIFAR10", "reduce_lr_on_plateau", "loss",
                     "cuda:all", "1e-3", "nan"]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(names, inner, max_size=3)), max_leaves=6)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _parent(doc: Any, path: tuple) -> Any:
    node = doc
    for part in path[:-1]:
        node = node[part]
    return node


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        key = path[-1]
        op = draw(st.sampled_from(["delete", "replace", "rename", "insert", "wrap"]))
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(values)
        elif op == "wrap":
            parent[key] = [parent[key]]
        elif op == "rename" and isinstance(parent, dict):
            new = draw(st.one_of(names, st.text(max_size=8), st.integers(-3, 3)))
            parent[new] = parent.pop(key)
        elif op == "insert" and isinstance(parent, dict):
            parent[draw(names)] = draw(values)
        elif op == "insert" and isinstance(parent, list):
            parent.insert(draw(st.integers(0, len(parent))), draw(values))
    return doc


def _check_clean(cfg: Any, issues: list[ConfigIssue]) -> None:
    assert (cfg is None) == bool(issues)
    for issue in issues:
        assert isinstance(issue, ConfigIssue)
        assert isinstance(issue.path, str) and isinstance(issue.message, str) and issue.message
        assert "Traceback" not in issue.message
        issue.format()
        json.dumps(issue.to_dict())


@pytest.fixture(scope="module")
def registry():
    return get_plugin_manager().registry


@FUZZ
@given(doc=mutated())
def test_mutated_documents_give_issues_not_exceptions(doc, registry):
    cfg, issues = check_document(document_from_dict(doc), registry)
    _check_clean(cfg, issues)


@FUZZ_CLI
@given(doc=mutated())
def test_mutated_files_through_the_cli(doc, tmp_path_factory, capsys):
    path = tmp_path_factory.mktemp("fuzz") / "config.yaml"
    try:
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return
    path.write_text(text, encoding="utf-8")
    code = main(["config", "validate", str(path), "--format", "json"])
    out = capsys.readouterr()
    assert code in (0, 2), out.err
    assert "error: unexpected" not in out.err and "Traceback" not in out.out + out.err
    if out.out:
        report = json.loads(out.out)
        assert report["valid"] == (code == 0)
        for issue in report["issues"]:
            if issue["source"] == "file" and issue["line"] is not None:
                assert 1 <= issue["line"] <= text.count("\n") + 1


@FUZZ_CLI
@given(base=st.sampled_from(sorted(BASES)), data=st.data())
def test_text_edits_of_yaml_files(base, data, tmp_path_factory, capsys):
    text = yaml.safe_dump(BASES[base], sort_keys=False)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(text)))
        edit = data.draw(st.sampled_from(["delete", "insert", "swap"]))
        char = data.draw(st.sampled_from(list(":-{}[],'\"#&*!|> \n\t0aZ.") + ["\x00", "é"]))
        if edit == "delete":
            text = text[:i] + text[i + 1:]
        elif edit == "insert":
            text = text[:i] + char + text[i:]
        else:
            text = text[:i] + char + text[i + 1:]
    path = tmp_path_factory.mktemp("edit") / "config.yaml"
    path.write_text(text, encoding="utf-8")
    code = main(["config", "validate", str(path)])
    out = capsys.readouterr()
    assert code in (0, 2), out.err
    assert "error: unexpected" not in out.err and "Traceback" not in out.err


@FUZZ
@given(key=st.lists(st.one_of(names, st.integers(0, 3).map(str)), min_size=1, max_size=4),
       value=values)
def test_random_set_overrides(key, value, registry):
    text = ".".join(key) + "=" + json.dumps(value, allow_nan=True)
    try:
        doc = document_from_dict(MLP_CONFIG, [text])
    except ConfigError as exc:  # bad override syntax or path: a clean one-line error
        assert str(exc) and exc.exit_code == 2
        return
    cfg, issues = check_document(doc, registry)
    _check_clean(cfg, issues)
    for issue in issues:
        if issue.source == "--set":
            assert issue.file is None and issue.format().startswith("(--set) ")


def test_nan_and_huge_values_are_reported(mlp_config, registry):
    mlp_config["trainer"]["optimization"]["optimizer"]["params"]["lr"] = math.nan
    mlp_config["trainer"]["epochs"] = -(2**80)
    _, issues = check_document(document_from_dict(mlp_config), registry)
    paths = {i.path for i in issues}
    assert paths == {"trainer.optimization.optimizer.params.lr", "trainer.epochs"}
