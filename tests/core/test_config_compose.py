"""Composed configs: bases, several files, groups, interpolation, ``config show``, identity.

Every error must still name the file and line that set the offending value, whichever base
or group it lives in.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from thelper.cli import main
from thelper.config import check_document, config_hash, load_config, validate_document
from thelper.config.compat import iter_slots
from thelper.config.compose import MAX_BASE_DEPTH, MAX_FILES, _slot_patterns, compose
from thelper.exceptions import ConfigError
from thelper.plugins import ThelperPluginManager

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture(scope="module")
def registry():
    return ThelperPluginManager().registry


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _line_of(path: Path, needle: str) -> int:
    """1-based number of the first line of ``path`` containing ``needle``."""
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def _data(*texts: str, tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """Compose files with the given texts (named a.yaml, b.yaml, ...) and return the data."""
    paths = [_write(tmp_path / f"{chr(97 + i)}.yaml", t) for i, t in enumerate(texts)]
    return load_config(paths, environ=kw.pop("environ", {}), **kw).data


@pytest.fixture
def tree(tmp_path: Path, mlp_config: dict[str, Any]) -> Path:
    """A config root: _bases/digits.yaml (data, loaders, trainer), model/{mlp,wide}.yaml
    (groups) and exp/run.yaml (bases: the two, then its own keys)."""
    base = copy.deepcopy(mlp_config)
    model = {"model": base.pop("model")}
    base.pop("name")
    _write(tmp_path / "_bases" / "digits.yaml", yaml.safe_dump(base, sort_keys=False))
    _write(tmp_path / "model" / "mlp.yaml", yaml.safe_dump(model, sort_keys=False))
    _write(tmp_path / "model" / "wide.yaml",
           "model:\n  type: mlp\n  params: {in_features: 64, hidden: [256, 256]}\n")
    _write(tmp_path / "exp" / "run.yaml",
           "bases: [../_bases/digits.yaml, ../model/mlp.yaml]\n"
           "name: mlp-${trainer.epochs}ep\n"
           "trainer:\n"
           "  epochs: 1\n")
    return tmp_path


# ------------------------------------------------------------------------- merge rules
def test_mappings_merge_deeply_and_lists_replace(tmp_path):
    data = _data("a: {b: {c: 1, d: [1, 2, 3]}, e: x}\n",
                 "a: {b: {d: [9]}, f: 2}\n", tmp_path=tmp_path)
    assert data == {"a": {"b": {"c": 1, "d": [9]}, "e": "x", "f": 2}}


def test_same_type_slot_merges_params_other_type_replaces_slot(tmp_path):
    base = ("trainer:\n  optimization:\n"
            "    optimizer: {type: adam, params: {lr: 0.1, amsgrad: true}}\n"
            "    scheduler: {type: step_lr, params: {step_size: 3}, interval: step}\n"
            "datasets:\n  d: {type: sklearn, params: {name: digits},"
            " task: {type: classification, params: {class_names: [a, b]}}}\n")
    leaf = ("trainer:\n  optimization:\n"
            "    optimizer: {type: adam, params: {weight_decay: 0.01}}\n"
            "    scheduler: {type: cosine_annealing_lr, params: {T_max: 5}}\n"
            "datasets:\n  d: {type: torch_dataset, params: {class_path: x.Y}}\n")
    data = _data(base, leaf, tmp_path=tmp_path)
    optim = data["trainer"]["optimization"]
    assert optim["optimizer"] == {"type": "adam", "params": {"lr": 0.1, "amsgrad": True,
                                                              "weight_decay": 0.01}}
    # a different type replaces the whole slot: no step_size, no interval leak into it
    assert optim["scheduler"] == {"type": "cosine_annealing_lr", "params": {"T_max": 5}}
    assert data["datasets"]["d"] == {"type": "torch_dataset", "params": {"class_path": "x.Y"}}


def test_slot_without_type_merges_into_the_inherited_one(tmp_path):
    data = _data("model: {type: mlp, params: {in_features: 64, hidden: [64]}}\n",
                 "model: {params: {hidden: [8]}}\n", tmp_path=tmp_path)
    assert data["model"] == {"type": "mlp", "params": {"in_features": 64, "hidden": [8]}}


def test_typed_slot_merges_into_an_untyped_one(tmp_path):
    data = _data("model: {params: {in_features: 64}}\n",
                 "model: {type: mlp, params: {hidden: [8]}}\n", tmp_path=tmp_path)
    assert data["model"] == {"type": "mlp", "params": {"in_features": 64, "hidden": [8]}}


def test_trainer_type_change_drops_params_keeps_settings(tmp_path):
    data = _data("trainer: {epochs: 3, params: {grad_clip_norm: 1.0}}\n",
                 "trainer: {type: custom, params: {steps: 2}}\n", tmp_path=tmp_path)
    assert data["trainer"] == {"epochs": 3, "type": "custom", "params": {"steps": 2}}
    data = _data("trainer: {epochs: 3, params: {grad_clip_norm: 1.0}}\n",
                 "trainer: {type: default, params: {log_every_n_steps: 5}}\n",
                 tmp_path=tmp_path)  # the default type, written out: same type
    assert data["trainer"]["params"] == {"grad_clip_norm": 1.0, "log_every_n_steps": 5}


def test_bare_type_params_mappings_elsewhere_are_slots(tmp_path):
    data = _data("grid: {executor: {type: local, params: {workers: 4}}}\n",
                 "grid: {executor: {type: ray, params: {address: auto}}}\n",
                 tmp_path=tmp_path)
    assert data["grid"]["executor"] == {"type": "ray", "params": {"address": "auto"}}


def test_slot_paths_come_from_the_static_models(mlp_config):
    """Every slot iter_slots finds in a config (lists aside: they replace) is a slot path."""
    from thelper.config.compose import _slot_kind

    mlp_config["loaders"]["train_sampler"] = {"type": "balanced"}
    mlp_config["datasets"]["digits"]["task"] = {"type": "classification"}
    for loc, kind, _ in iter_slots(mlp_config):
        if isinstance(loc[-1], int):
            continue
        found = _slot_kind(loc)
        assert found is not None, loc
        assert found[0] == ("section" if kind == "trainer" else "slot"), loc
    assert _slot_kind(("trainer",)) == ("section", "default")
    assert sum(map(len, _slot_patterns().values())) >= 9


def test_delete_removes_inherited_keys(tmp_path):
    data = _data("trainer: {epochs: 3, early_stopping: {patience: 2}, metrics: {a: 1, b: 2}}\n",
                 "trainer:\n  _delete_: [early_stopping]\n  metrics: {_delete_: [b], c: 3}\n",
                 tmp_path=tmp_path)
    assert data == {"trainer": {"epochs": 3, "metrics": {"a": 1, "c": 3}}}
    data = _data("model: {type: mlp, params: {in_features: 64, hidden: [64], dropout: 0.5}}\n",
                 "model:\n  params: {_delete_: true, in_features: 8}\n", tmp_path=tmp_path)
    assert data["model"]["params"] == {"in_features": 8}


def test_delete_of_a_key_not_inherited_is_located(tmp_path):
    _write(tmp_path / "base.yaml", "trainer: {epochs: 3, metrics: {acc: 1}}\n")
    leaf = _write(tmp_path / "leaf.yaml",
                  "bases: [base.yaml]\ntrainer:\n  _delete_: [metrcs]\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf, environ={})
    (issue,) = err.value.issues
    assert issue.file == str(leaf) and issue.line == 3
    assert "cannot delete 'metrcs'" in issue.message and "did you mean 'metrics'" in \
        issue.message
    alone = _write(tmp_path / "alone.yaml", "trainer:\n  _delete_: [epochs]\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=r"alone.yaml:2:\d+: .*no earlier file sets"):
        load_config(alone, environ={})
    bad = _write(tmp_path / "bad.yaml", "bases: [base.yaml]\ntrainer: {_delete_: 3}\n")
    with pytest.raises(ConfigError, match="takes a list of inherited keys"):
        load_config(bad, environ={})


def test_bases_merge_in_order_then_own_keys_each_file_once(tmp_path):
    _write(tmp_path / "_b" / "common.yaml", "x: common\ny: common\nz: common\n")
    _write(tmp_path / "_b" / "one.yaml", "bases: [common.yaml]\ny: one\n")
    _write(tmp_path / "_b" / "two.yaml", "bases: [common.yaml]\nz: two\n")
    leaf = _write(tmp_path / "leaf.yaml", "bases: [_b/one.yaml, _b/two.yaml]\nx: leaf\n")
    doc = load_config(leaf, environ={})
    # common is merged once, first: two.yaml does not undo one.yaml's 'y'
    assert doc.data == {"x": "leaf", "y": "one", "z": "two"}
    assert [Path(f).name for f in doc.files] == ["common.yaml", "one.yaml", "two.yaml",
                                                 "leaf.yaml"]
    assert "bases" not in doc.data


def test_env_and_set_apply_after_bases(tmp_path, tree):
    doc = load_config(tree / "exp" / "run.yaml", ["trainer.epochs=4"],
                      environ={"THELPER_CONFIG__TRAINER__DEVICE": "meta",
                               "THELPER_CONFIG__TRAINER__EPOCHS": "9"},
                      roots=[tree])
    assert doc.data["trainer"]["epochs"] == 4 and doc.data["trainer"]["device"] == "meta"
    assert doc.data["name"] == "mlp-4ep"  # interpolations read the overridden value
    assert doc.locate(("trainer", "device"))[3] == "env"
    assert doc.locate(("trainer", "epochs"))[3] == "--set"


# ---------------------------------------------------------------------- several files
def test_several_files_merge_in_order(tmp_path, tree, registry):
    extra = _write(tmp_path / "more" / "longer.yaml", "trainer: {epochs: 5}\n")
    doc = load_config([tree / "exp" / "run.yaml", extra], environ={}, roots=[tree])
    assert doc.data["trainer"]["epochs"] == 5 and doc.data["name"] == "mlp-5ep"
    assert doc.file == str(tree / "exp" / "run.yaml")
    assert doc.label == f"{tree / 'exp' / 'run.yaml'} + {extra}"
    assert validate_document(doc, registry).trainer.epochs == 5
    assert main(["config", "validate", str(tree / "exp" / "run.yaml"), str(extra),
                 "--config-root", str(tree)]) == 0


def test_cli_validate_several_files_reports_each_file(tmp_path, tree, capsys):
    bad = _write(tmp_path / "bad.yaml", "trainer:\n  epochs: 0\n")
    code = main(["config", "validate", str(tree / "exp" / "run.yaml"), str(bad),
                 "--config-root", str(tree), "--format", "json"])
    assert code == 2
    out = json.loads(capsys.readouterr().out)
    (issue,) = out["issues"]
    assert issue["path"] == "trainer.epochs" and issue["file"] == str(bad)
    assert issue["line"] == 2
    assert out["files"][-1] == str(bad) and out["files"][0].endswith("digits.yaml")


# ----------------------------------------------------------------------------- groups
def test_group_picks_a_partial_config_from_a_root(tree, registry):
    doc = load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree],
                      groups=["model=wide"])
    # the same model type: its params merge (the inherited dropout stays)
    assert doc.data["model"]["params"] == {"in_features": 64, "hidden": [256, 256],
                                           "dropout": 0.1}
    assert validate_document(doc, registry).model.type == "mlp"
    assert doc.files[-1] == str(tree / "model" / "wide.yaml")


def test_unknown_group_choice_lists_the_choices(tree):
    with pytest.raises(ConfigError, match=r"--group model=wid: no model/wid.yaml .*"
                                          r"choices of 'model': mlp, wide"):
        load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree],
                    groups=["model=wid"])
    with pytest.raises(ConfigError, match="expected NAME=CHOICE"):
        load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree],
                    groups=["../model=x"])


def test_config_groups_command(tree, capsys):
    assert main(["config", "groups", str(tree / "exp" / "run.yaml"),
                 "--config-root", str(tree)]) == 0
    out = capsys.readouterr().out
    assert "model: mlp, wide" in out and "_bases" not in out
    assert main(["config", "groups", "--config-root", str(tree), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["groups"]["model"]["choices"] == ["mlp", "wide"]


def test_cli_run_passes_composition_to_ranks(tree, monkeypatch, tmp_path):
    import thelper.launch

    seen: list[list[str]] = []

    def fake_launch(nproc: int, args: list[str]) -> int:
        seen.append(list(args))
        return 0

    monkeypatch.setattr(thelper.launch, "launch_workers", fake_launch)
    extra = _write(tmp_path / "x.yaml", "trainer: {epochs: 2}\n")
    assert main(["run", str(tree / "exp" / "run.yaml"), str(extra), "--save-dir",
                 str(tmp_path / "s"), "--group", "model=wide", "--config-root", str(tree),
                 "--allow-env", "--nproc-per-node", "2", "--set", "trainer.device=cpu"]) == 0
    (args,) = seen
    assert args[:3] == ["run", str(tree / "exp" / "run.yaml"), str(extra)]
    for flag in (["--group", "model=wide"], ["--config-root", str(tree)], ["--allow-env"],
                 ["--set", "trainer.device=cpu"]):
        i = args.index(flag[0])
        assert args[i:i + len(flag)] == flag


# ---------------------------------------------------------------------- interpolation
def test_interpolation_keeps_types_and_formats_text(tmp_path):
    data = _data("a: {n: 3, f: 0.5, flag: true, none: null, l: [1, 2], m: {k: v}}\n"
                 "b:\n"
                 "  n: ${a.n}\n  l: ${a.l}\n  m: ${a.m}\n  first: ${a.l.0}\n"
                 "  text: n=${a.n} f=${a.f} flag=${a.flag} none=${a.none}\n"
                 "  chained: ${b.n}\n"
                 "  literal: \\${a.n} costs ${a.n}\n", tmp_path=tmp_path)
    b = data["b"]
    assert b["n"] == 3 and b["l"] == [1, 2] and b["m"] == {"k": "v"} and b["first"] == 1
    assert b["text"] == "n=3 f=0.5 flag=true none=null"
    assert b["chained"] == 3
    assert b["literal"] == "${a.n} costs 3" and type(b["literal"]) is str
    b["l"].append(3)  # a copy, not the same list
    assert data["a"]["l"] == [1, 2]


def test_env_interpolation_limited_to_thelper_variables(tmp_path):
    text = "a: ${env:THELPER_EPOCHS}\nb: ${env:THELPER_MISSING,7}\nc: x-${env:THELPER_EPOCHS}\n"
    data = _data(text, tmp_path=tmp_path, environ={"THELPER_EPOCHS": "5"})
    assert data == {"a": 5, "b": 7, "c": "x-5"}
    path = _write(tmp_path / "home.yaml", "name: x\npath: ${env:HOME}/data\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"HOME": "/home/me"})
    (issue,) = err.value.issues
    assert issue.file == str(path) and issue.line == 2 and issue.path == "path"
    assert "only reads THELPER_* variables" in issue.message and "--allow-env" in \
        issue.message
    doc = load_config(path, environ={"HOME": "/home/me"}, allow_env=True)
    assert doc.data["path"] == "/home/me/data"
    unset = _write(tmp_path / "unset.yaml", "a: ${env:THELPER_NOPE}\n")
    with pytest.raises(ConfigError, match=r"unset.yaml:1:1: a: .*THELPER_NOPE is not set"):
        load_config(unset, environ={})


def test_a_reference_written_with_a_yaml_escape_resolves_alone_or_composed(tmp_path):
    """``"\\x24{...}"`` (YAML's escape of ``$``) is the value ``${...}``: resolved the same in
    a file read alone and in one composed with another (it used to stay as written alone,
    where only the raw text was searched for ``${``), and refused the same outside
    ``THELPER_*``; ``\\${`` stays the literal."""
    text = 'a: "\\x24{env:THELPER_EPOCHS}"\n'  # no "${" in the text itself
    env = {"THELPER_EPOCHS": "5", "HOME": "/home/me"}
    assert _data(text, tmp_path=tmp_path / "alone", environ=env) == {"a": 5}
    assert _data(text, "c: 1\n", tmp_path=tmp_path / "two", environ=env) == {"a": 5, "c": 1}
    literal = text + 'b: "\\\\${env:THELPER_EPOCHS}"\n'
    assert _data(literal, tmp_path=tmp_path / "lit", environ=env) == {
        "a": 5, "b": "${env:THELPER_EPOCHS}"}
    home = _write(tmp_path / "home.yaml", 'path: "\\x24{env:HOME}/data"\n')
    with pytest.raises(ConfigError, match="only reads THELPER_"):
        load_config(home, environ=env)


def test_interpolation_cycles_and_missing_targets_are_located(tmp_path, tree):
    _write(tree / "_bases" / "loop.yaml",
           "bases: [digits.yaml]\ntrainer:\n  save_freq: ${trainer.epochs}\n")
    leaf = _write(tree / "exp" / "loop.yaml",
                  "bases: [../_bases/loop.yaml, ../model/mlp.yaml]\nname: x\n"
                  "trainer:\n  epochs: ${trainer.save_freq}\n"
                  "model:\n  params: {in_features: '${trainer.epoch}'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf, environ={}, roots=[tree])
    issues = {i.path: i for i in err.value.issues}
    assert set(issues) == {"trainer.epochs", "model.params.in_features"}  # one per cycle
    cycle = issues["trainer.epochs"]
    assert cycle.file == str(leaf) and cycle.line == 4
    assert "interpolation cycle: trainer.epochs refers to ${trainer.save_freq}, " \
           "trainer.save_freq refers to ${trainer.epochs}" in cycle.message
    missing = issues["model.params.in_features"]
    assert missing.file == str(leaf) and missing.line == 6
    assert "did you mean 'trainer.epochs'" in missing.message
    # a value inside the mapping it copies is a cycle too
    with pytest.raises(ConfigError, match="a.b refers to \\${a}"):
        _data("a: {b: '${a}'}\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="is a mapping: only a value that is the reference"):
        _data("a: {b: 1}\nc: x${a}\n", tmp_path=tmp_path)
    with pytest.raises(ConfigError, match="unknown resolver 'oc.env'"):
        _data("a: ${oc.env:X}\n", tmp_path=tmp_path)


def test_interpolation_in_set_and_runaway_expansion(tmp_path):
    path = _write(tmp_path / "a.yaml", "a: 2\nb: 1\n")
    doc = load_config(path, ["b=${a}"], environ={})
    assert doc.data["b"] == 2 and doc.locate(("b",))[3] == "--set"
    with pytest.raises(ConfigError, match=r"\(--set\) b: .*which the config does not set"):
        load_config(path, ["b=${nope}"], environ={})
    bomb = "l0: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n" + "".join(
        f"l{i}: ['${{l{i - 1}}}', '${{l{i - 1}}}', '${{l{i - 1}}}', '${{l{i - 1}}}']\n"
        for i in range(1, 12))
    with pytest.raises(ConfigError, match="copy more than"):
        _data(bomb, tmp_path=tmp_path)


# -------------------------------------------------------------------- error locations
def test_errors_point_at_the_base_or_group_that_set_the_value(tree, registry):
    base = tree / "_bases" / "digits.yaml"
    text = base.read_text().replace("monitor: accuracy", "monitor: acc")
    base.write_text(text.replace("batch_size: 64", "batch_size: 0"))
    _write(tree / "model" / "bad.yaml", "model:\n  type: mlp\n  params: {hiden: [3]}\n")
    leaf = tree / "exp" / "run.yaml"
    doc = load_config(leaf, ["trainer.device=nope"], environ={}, roots=[tree],
                      groups=["model=bad"])
    _, issues = check_document(doc, registry)
    by_path = {i.path: i for i in issues}
    batch = by_path["loaders.batch_size"]
    assert (batch.file, batch.line) == (str(base), _line_of(base, "batch_size: 0"))
    monitor = by_path["trainer.monitor"]
    assert (monitor.file, monitor.line) == (str(base), _line_of(base, "monitor: acc"))
    group = tree / "model" / "bad.yaml"
    hidden = by_path["model.params.hiden"]
    assert (hidden.file, hidden.line) == (str(group), 3)
    assert hidden.format().startswith(f"{group}:3:")
    assert by_path["trainer.device"].format().startswith("(--set) trainer.device")
    # issues come in merge order of their files (bases, the leaf, the group), then --set
    files = [i.file for i in issues if i.source == "file"]
    assert files == sorted(files, key=lambda f: [str(base), str(leaf), str(group)].index(f))
    assert issues[-1].source == "--set"


def test_duplicate_keys_and_parse_errors_inside_a_base(tree):
    base = tree / "_bases" / "digits.yaml"
    base.write_text(base.read_text() + "name: one\nname: two\n")
    doc = load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree])
    (dup,) = doc.issues
    assert dup.file == str(base) and "duplicate key 'name'" in dup.message
    base.write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"{base}:\d+:\d+: cannot parse"):
        load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree])
    base.write_text("trainer: !!python/object:os.system {}\n")
    with pytest.raises(ConfigError, match="YAML tag '!!python/object:os.system' is not "
                                          "allowed"):
        load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree])


def test_missing_base_is_located_at_its_entry(tmp_path):
    leaf = _write(tmp_path / "leaf.yaml", "name: x\nbases:\n  - nope.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(leaf, environ={})
    (issue,) = err.value.issues
    assert (issue.file, issue.line, issue.path) == (str(leaf), 3, "bases.0")
    assert "does not exist" in issue.message
    bad = _write(tmp_path / "bad.yaml", "bases: {a: 1}\n")
    with pytest.raises(ConfigError, match="bad.yaml:1:1: bases: 'bases' is a list"):
        load_config(bad, environ={})


def test_imports_allow_in_a_base_needs_allow_import(tree, registry):
    base = tree / "_bases" / "digits.yaml"
    base.write_text(base.read_text() + "imports:\n  allow: [mypkg.data]\n")
    doc = load_config(tree / "exp" / "run.yaml", environ={}, roots=[tree])
    _, issues = check_document(doc, registry)
    (issue,) = issues
    assert issue.path == "imports.allow.0" and issue.file == str(base)
    assert "--allow-import mypkg.data" in issue.message
    _, issues = check_document(doc, registry, allow_imports=["mypkg"])
    assert issues == []


# --------------------------------------------------------------------------- security
def test_bases_outside_every_root_are_refused(tmp_path, tree):
    outside = _write(tmp_path.parent / f"{tmp_path.name}-outside.yaml", "x: 1\n")
    exp = tree / "exp"
    cases = {
        f"bases: [{outside}]\n": "is an absolute path",
        "bases: ['~/x.yaml']\n": "is an absolute path",
        f"bases: [../../{outside.name}]\n": "outside the config roots",
        "bases: [../_bases/digits.yaml]\n": "outside the config roots",  # no --config-root
    }
    for text, message in cases.items():
        leaf = _write(exp / "leaf.yaml", text)
        with pytest.raises(ConfigError, match=message) as err:
            load_config(leaf, environ={})
        assert err.value.issues[0].file == str(leaf) and err.value.issues[0].line == 1
    leaf = _write(exp / "leaf.yaml", "bases: [../_bases/digits.yaml]\n")
    assert "trainer" in load_config(leaf, environ={}, roots=[tree]).data
    # a link inside the root to a file outside it is refused too
    os.symlink(outside, exp / "link.yaml")
    leaf = _write(exp / "leaf.yaml", "bases: [link.yaml]\n")
    with pytest.raises(ConfigError, match="outside the config roots"):
        load_config(leaf, environ={}, roots=[tree])
    os.symlink(outside, tree / "model" / "evil.yaml")
    with pytest.raises(ConfigError, match="outside the config roots"):
        load_config(exp / "run.yaml", environ={}, roots=[tree], groups=["model=evil"])
    with pytest.raises(ConfigError, match="--config-root .* is not a directory"):
        load_config(exp / "run.yaml", environ={}, roots=[tree / "nope"])


def test_bases_must_be_regular_files(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    leaf = _write(tmp_path / "leaf.yaml", "bases: [fifo.yaml]\n")
    with pytest.raises(ConfigError, match=r"leaf.yaml:1:\d+: bases.0: .*FIFO"):
        load_config(leaf, environ={})
    (tmp_path / "dir.yaml").mkdir()
    _write(tmp_path / "leaf.yaml", "bases: [dir.yaml]\n")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(leaf, environ={})


def test_cycles_depth_and_file_count_are_bounded(tmp_path):
    _write(tmp_path / "a.yaml", "bases: [b.yaml]\n")
    _write(tmp_path / "b.yaml", "x: 1\nbases: [c.yaml]\n")
    _write(tmp_path / "c.yaml", "bases: [a.yaml]\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "a.yaml", environ={})
    (issue,) = err.value.issues
    assert issue.file == str(tmp_path / "c.yaml") and issue.line == 1
    assert f"bases form a cycle: {tmp_path / 'a.yaml'} -> {tmp_path / 'b.yaml'} -> " \
           f"{tmp_path / 'c.yaml'} -> {tmp_path / 'a.yaml'}" in issue.message
    deep = tmp_path / "deep"
    for i in range(MAX_BASE_DEPTH + 2):
        _write(deep / f"d{i}.yaml", f"bases: [d{i + 1}.yaml]\n")
    with pytest.raises(ConfigError, match=f"bases nest deeper than {MAX_BASE_DEPTH}"):
        load_config(deep / "d0.yaml", environ={})
    wide = tmp_path / "wide"
    for i in range(MAX_FILES + 1):
        _write(wide / f"w{i}.yaml", f"k{i}: {i}\n")
    leaf = _write(wide / "leaf.yaml",
                  "bases: [" + ", ".join(f"w{i}.yaml" for i in range(MAX_FILES + 1)) + "]\n")
    with pytest.raises(ConfigError, match=f"more than {MAX_FILES} files"):
        load_config(leaf, environ={})


# ---------------------------------------------------------------------- config show
def test_config_show_prints_the_resolved_config(tree, registry, capsys):
    leaf = str(tree / "exp" / "run.yaml")
    assert main(["config", "show", leaf, "--config-root", str(tree),
                 "--set", "trainer.device=auto"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    cfg = validate_document(load_config(leaf, ["trainer.device=auto"], roots=[tree]),
                            registry)
    assert shown == cfg.model_dump(mode="json")
    assert shown["name"] == "mlp-1ep" and "bases" not in shown
    assert shown["loaders"]["workers"] == 0  # a default, filled in
    resolved = _write(tree / "elsewhere" / "resolved.yaml", yaml.safe_dump(shown))
    assert main(["config", "validate", str(resolved)]) == 0  # runs as a config of its own


def test_config_show_sources(tree, capsys, monkeypatch):
    leaf = tree / "exp" / "run.yaml"
    monkeypatch.setenv("THELPER_CONFIG__LOADERS__WORKERS", "1")
    assert main(["config", "show", str(leaf), "--config-root", str(tree), "--sources",
                 "--set", "trainer.device=auto"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    base = tree / "_bases" / "digits.yaml"

    def line(prefix: str) -> str:
        return next(x for x in lines if x.lstrip().startswith(prefix))

    assert line("name: mlp-1ep").endswith(f"# {leaf}:2")
    assert line("epochs: 1").endswith(f"# {leaf}:{_line_of(leaf, 'epochs: 1')}")
    assert line("batch_size: 64").endswith(f"# {base}:{_line_of(base, 'batch_size')}")
    assert line("hidden:").endswith(f"# {tree / 'model' / 'mlp.yaml'}:"
                                    f"{_line_of(tree / 'model' / 'mlp.yaml', 'hidden')}")
    assert line("device: auto").endswith("# --set")
    assert line("workers: 1").endswith("# env")
    assert line("shuffle: true").endswith("# default")
    assert all("  # " in x for x in lines)
    assert main(["config", "show", str(leaf), "--config-root", str(tree),
                 "--set", "trainer.device=auto"]) == 0
    assert yaml.safe_load(out) == yaml.safe_load(capsys.readouterr().out)


def test_config_show_of_an_invalid_config_exits_2(tree, capsys):
    assert main(["config", "show", str(tree / "exp" / "run.yaml"), "--config-root",
                 str(tree), "--set", "trainer.epochs=0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "(--set) trainer.epochs" in captured.err
    assert main(["config", "show", str(tree / "exp" / "run.yaml")]) == 2  # no root
    assert "outside the config roots" in capsys.readouterr().err


# ---------------------------------------------------------------- 0.6 configs, identity
@pytest.mark.parametrize("path", sorted((CONFIGS / "valid").glob("*.json")),
                         ids=lambda p: p.name)
def test_v06_json_configs_read_unchanged(path):
    doc = load_config(path, environ={})
    assert doc.data == json.loads(path.read_text())
    assert doc.files == [str(path)] and doc.file == str(path)
    composed = compose([path], environ={})  # the general path gives the same document
    assert composed.data == doc.data and composed.positions == doc.positions


def test_config_hash_is_canonical():
    config = {"name": "a", "description": "d", "trackers": [1],
              "trainer": {"epochs": 3, "device": "cpu"}, "seeds": {"torch": 1}}
    shuffled = {"seeds": {"torch": 1}, "trainer": {"device": "cpu", "epochs": 3},
                "name": "other"}
    assert config_hash(config) == config_hash(shuffled)
    assert len(config_hash(config)) == 64
    assert config_hash(config) != config_hash({**config, "seeds": {"torch": 2}})
    assert config_hash(config) != config_hash({**config, "trainer": {"epochs": 4}})


# --------------------------------------------------------------------------- sessions
def test_composed_session_runs_and_resumes(tree, tmp_path):
    save = tmp_path / "sessions"
    leaf = tree / "exp" / "run.yaml"
    assert main(["run", str(leaf), "--save-dir", str(save), "--config-root", str(tree)]) == 0
    session = save / "mlp-1ep"
    run = json.loads((session / "run.json").read_text())
    assert run["status"] == "completed"
    assert run["config_hash"] == config_hash(run["config"])
    latest = yaml.safe_load((session / "config.latest.yaml").read_text())
    assert latest["name"] == "mlp-1ep" and latest["trainer"]["epochs"] == 1
    assert "bases" not in latest and latest == run["config"]
    sources = yaml.safe_load((session / "config.sources.yaml").read_text())
    assert [f["path"] for f in sources["files"]] == [
        str(tree / "_bases" / "digits.yaml"), str(tree / "model" / "mlp.yaml"), str(leaf)]
    assert sources["files"][-1]["text"] == leaf.read_text()
    assert sources["recipe"]["config_roots"] == [str(tree)]
    # resume reads the checkpoint's resolved config: the bases are not read again
    (tree / "_bases" / "digits.yaml").write_text("broken: [\n")
    assert main(["resume", str(session), "--set", "trainer.epochs=2"]) == 0
    run = json.loads((session / "run.json").read_text())
    assert run["status"] == "completed" and run["config"]["trainer"]["epochs"] == 2
    assert [m["epoch"] for m in run["metrics"]["train"]] == [1, 2]
    assert run["config"]["name"] == "mlp-1ep"  # resolved once, when the session started
    assert run["config_hash"] == config_hash(run["config"])
    assert yaml.safe_load((session / "config.sources.yaml").read_text()) == sources


def test_partial_schema_accepts_bases_and_partial_slots(tree, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "partial.json"
    assert main(["config", "schema", "--partial", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert "required" not in schema and "bases" in schema["properties"]
    validator = jsonschema.Draft202012Validator(schema)
    for path in (tree / "_bases" / "digits.yaml", tree / "model" / "wide.yaml"):
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == []
    leaf = {"bases": ["../_bases/digits.yaml"], "model": {"params": {"hidden": [8]}},
            "trainer": {"_delete_": ["early_stopping"], "epochs": 2}}
    assert list(validator.iter_errors(leaf)) == []
    assert list(validator.iter_errors({"trainer": {"epochs": "many"}}))  # still typed
    assert list(validator.iter_errors({"trainr": {}}))  # still no unknown keys


def test_long_reference_chains_and_deep_copies_are_bounded(tmp_path):
    forward = "a0: 1\n" + "".join(f"a{i}: ${{a{i - 1}}}\n" for i in range(1, 200))
    assert _data(forward, tmp_path=tmp_path)["a199"] == 1  # each resolved once, in order
    backward = "".join(f"a{i}: ${{a{i + 1}}}\n" for i in range(199)) + "a199: 1\n"
    with pytest.raises(ConfigError, match="references chain more than 32 deep"):
        _data(backward, tmp_path=tmp_path)
    nested = "x0: {k: 1}\n" + "".join(f"x{i}: {{k: {{k: {{k: {{k: '${{x{i - 1}}}'}}}}}}}}\n"
                                      for i in range(1, 30))
    with pytest.raises(ConfigError, match="deeper than 100 levels"):
        _data(nested, tmp_path=tmp_path)
