"""Configs from strangers: the parser and the config file itself (issue #13).

``thelper config validate`` must finish in seconds, in bounded memory, and report every bad
input as a config error (exit code 2) naming the file and line, what is wrong and the fix:
no traceback, no crash, no hang. Cases that could crash or hang the process run it in a
subprocess (its ``timeout`` only guards against a hang; nothing here measures time).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from thelper.cli import main
from thelper.config import load_config
from thelper.config.source import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_INT_DIGITS
from thelper.exceptions import ConfigError

BIG_INT = "1" * 5000
#: Address space of the subprocesses fed memory bombs (validate itself needs ~0.1 GiB).
MEMORY_LIMIT = 2 * 1024**3


def _validate(capsys, path: Path, *args: str) -> tuple[int, str]:
    code = main(["config", "validate", str(path), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def _limit_memory() -> None:  # a regression must fail the test, not eat the machine
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _thelper(*args: str, limit_memory: bool = False) -> subprocess.CompletedProcess:
    """``python -m thelper ...`` in a subprocess; the timeout turns a hang into a failure.

    ``limit_memory`` caps its address space (POSIX) for inputs that could eat gigabytes.
    """
    limit = limit_memory and sys.platform != "win32"
    return subprocess.run([sys.executable, "-m", "thelper", *args], capture_output=True,
                          text=True, timeout=120, preexec_fn=_limit_memory if limit else None)


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def config_with(tmp_path, mlp_config):
    """Write the valid MLP config followed by ``extra`` YAML lines; returns (path, line)."""

    def _write(extra: str, name: str = "config.yaml") -> tuple[Path, int]:
        base = yaml.safe_dump(mlp_config, sort_keys=False)
        path = tmp_path / name
        path.write_text(base + extra)
        return path, base.count("\n") + 1  # the first line of extra

    return _write


# 1. tags ----------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, what", [
    ("extra: !!python/object/apply:os.system\n- echo pwned\n", "!!python/object/apply:os.system"),
    ("extra: !!python/object/apply:os.system [echo pwned]\n", "!!python/object/apply:os.system"),
    ("extra: !!python/object:os.system {cmd: x}\n", "!!python/object:os.system"),
    ("extra: !!python/name:os.system ''\n", "!!python/name:os.system"),
    ("extra: !foo bar\n", "!foo"),
    ("extra: !foo [1, 2]\n", "!foo"),
    ("extra: !!binary aGVsbG8=\n", "!!binary"),
    ("extra: !!set {a, b}\n", "!!set"),
    ("extra: !!omap [a: 1]\n", "!!omap"),
    ("extra: !!str {a: 1}\n", "!!str"),
    ("extra: {!!python/name:os.system x: 1}\n", "!!python/name:os.system"),
    ("extra: {<<: !!python/object:x {a: 1}}\n", "!!python/object:x"),
    ("extra: {<<: [{b: 2}, !!python/object:x {a: 1}]}\n", "!!python/object:x"),
])
def test_non_core_tags_are_refused_at_their_line(capsys, config_with, extra, what):
    path, line = config_with(extra)
    code, out = _validate(capsys, path)
    assert code == 2, out
    assert "Traceback" not in out
    (issue,) = [ln for ln in out.splitlines() if "YAML tag" in ln]
    assert issue.startswith(f"{path}:{line}:")
    assert f"YAML tag {what!r} is not allowed" in issue and "remove the tag" in issue


def test_core_tags_and_implicit_values_are_read(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a: !!str 3\nb: !!int '4'\nc: !!float 1\nd: !!bool yes\ne: !!null ''\n"
                    "f: 2024-01-31\ng: =\nh: !!map {x: 1}\ni: !!seq [1]\nj: ! x\n"
                    "base: &base {x: 1, y: 2}\nk: {<<: *base, y: 3}\nl: {!!merge <<: *base}\n"
                    "? m\n: 1\n")
    data = load_config(path, environ={}).data
    assert data["a"] == "3" and data["b"] == 4 and data["c"] == 1.0 and data["d"] is True
    assert data["e"] is None and str(data["f"]) == "2024-01-31" and data["g"] == "="
    assert data["h"] == {"x": 1} and data["i"] == [1] and data["j"] == "x"
    assert data["k"] == {"x": 1, "y": 3} and data["l"] == {"x": 1, "y": 2} and data["m"] == 1


# 2. keys and alias bombs --------------------------------------------------------------------

def _laughs(levels: int = 7) -> str:
    names = "abcdefghij"[:levels]
    parts = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"&{cur} [{', '.join(['*' + prev] * 10)}]"
              for prev, cur in zip(names, names[1:], strict=False)]
    return "[" + ", ".join(parts) + "]"


@pytest.mark.parametrize("extra, kind", [
    (f"? {_laughs()}\n: 1\n", "list"),  # a billion laughs built inside a key
    ("? [a, b]\n: 1\n", "list"),
    ("? {a: 1}\n: 1\n", "mapping"),
    ("extra: {[x, y]: 1}\n", "list"),
])
def test_mapping_keys_must_be_scalars(config_with, extra, kind):
    path, line = config_with(extra)
    res = _thelper("config", "validate", str(path), limit_memory=True)
    assert res.returncode == 2, res.stderr[-2000:]
    (issue,) = [ln for ln in res.stderr.splitlines() if "a key must be" in ln]
    assert issue.startswith(f"{path}:{line}:")
    assert f"a key must be a name or a number, not a {kind}" in issue


def test_an_alias_used_as_key_may_name_a_scalar(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: &n digits\n? *n\n: 1\n")
    assert load_config(path, environ={}).data == {"name": "digits", "digits": 1}


def test_merge_bombs_are_bounded(tmp_path):
    lines = ["g:", "  <<:", "    - &a {x1: 1, x2: 2, x3: 3, x4: 4, x5: 5, x6: 6, x7: 7, x8: 8}"]
    names = "abcdefghij"
    for prev, cur in zip(names, names[1:], strict=False):  # 8 * 10**9 pairs if expanded
        lines.append(f"    - &{cur} {{<<: [{', '.join(['*' + prev] * 10)}]}}")
    path = tmp_path / "merge.yaml"
    path.write_text("\n".join(lines) + "\n")
    res = _thelper("config", "validate", str(path), limit_memory=True)
    assert res.returncode == 2, res.stderr[-2000:]
    (issue, _) = _error_lines(res.stderr)
    assert issue.startswith(f"{path}:") and "expands to more than 200,000 values" in issue


def test_value_alias_bombs_are_bounded(capsys, tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(f"extra: {_laughs(9)}\n")
    code, out = _validate(capsys, path)
    assert code == 2 and f"{path}:1:" in out and "expands to more than" in out


# 3. nesting ---------------------------------------------------------------------------------

@pytest.mark.parametrize("opener", ["[", "{a: ", "- "])
def test_deep_nesting_is_a_config_error_not_a_crash(tmp_path, opener):
    path = tmp_path / "deep.yaml"
    path.write_text(opener * 60_000 + "\n")
    res = _thelper("config", "validate", str(path), limit_memory=True)
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr
    (issue, summary) = _error_lines(res.stderr)
    assert issue.startswith(f"{path}:1:")
    assert f"nests mappings and lists deeper than {MAX_DEPTH} levels" in issue
    assert "flatten it" in issue and summary.endswith("1 problem(s) found")


def test_moderate_nesting_names_the_path(capsys, config_with):
    path, line = config_with("extra: " + "[" * 150 + "]" * 150 + "\n")
    code, out = _validate(capsys, path)
    assert code == 2
    (issue,) = [ln for ln in out.splitlines() if "deeper than" in ln]
    assert issue.startswith(f"{path}:{line}:") and ": extra.0.0." in issue


def test_nesting_through_aliases_is_bounded(capsys, tmp_path):
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 400)]
    path = tmp_path / "chain.yaml"
    path.write_text("\n".join(lines) + "\n")
    code, out = _validate(capsys, path)
    assert code == 2 and "deeper than" in out and "Traceback" not in out


# 4. integers --------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [BIG_INT, "-" + BIG_INT, "1_" * 4400 + "1"])
def test_huge_integers_are_config_errors(capsys, config_with, value):
    path, line = config_with(f"extra: {value}\n")
    code, out = _validate(capsys, path)
    assert code == 2, out
    (issue,) = [ln for ln in out.splitlines() if "integer too large" in ln]
    assert issue.startswith(f"{path}:{line}:") and "quote it" in issue
    assert "unexpected" not in out


def test_quoted_long_digits_and_big_floats_are_fine(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(f"a: '{BIG_INT}'\nb: 1.{BIG_INT}\nc: {'9' * MAX_INT_DIGITS}\n")
    data = load_config(path, environ={}).data
    assert data["a"] == BIG_INT and data["b"] == pytest.approx(1.111111)
    assert data["c"] == int("9" * MAX_INT_DIGITS)


def test_unreadable_scalars_name_the_line(capsys, config_with):
    path, line = config_with("extra: 2024-13-45\n")
    code, out = _validate(capsys, path)
    assert code == 2
    (issue,) = [ln for ln in out.splitlines() if "cannot read" in ln]
    assert issue.startswith(f"{path}:{line}:") and "month must be in 1..12" in issue


def test_huge_integer_in_set_and_env_is_a_config_error(capsys, write_config, mlp_config,
                                                       monkeypatch):
    path = write_config(mlp_config)
    code, out = _validate(capsys, path, "--set", f"trainer.epochs={BIG_INT}")
    assert code == 2
    (line,) = _error_lines(out)
    assert line.startswith("error: --set 'trainer.epochs=111")
    assert "trainer.epochs: integer too large" in line
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__EPOCHS", BIG_INT)
    code, out = _validate(capsys, path)
    assert code == 2
    (line,) = _error_lines(out)
    assert line.startswith("error: $THELPER_CONFIG__TRAINER__EPOCHS: trainer.epochs: integer")


@pytest.mark.parametrize("value", ["!!python/object/apply:os.system [echo pwned]",
                                   "{a: !!python/name:os.system ''}", "!local x"])
def test_override_tags_are_refused(capsys, write_config, mlp_config, value):
    path = write_config(mlp_config)
    code, out = _validate(capsys, path, "--set", f"a={value}")
    assert code == 2
    (line,) = _error_lines(out)
    assert line.startswith("error: --set ") and "a=" in line and "is not allowed" in line


def test_override_nesting_is_bounded(capsys, write_config, mlp_config):
    path = write_config(mlp_config)
    code, out = _validate(capsys, path, "--set", "a=" + "[" * 60_000)
    assert code == 2
    (line,) = _error_lines(out)
    assert "deeper than" in line and len(line) < 400


def test_override_text_that_is_not_yaml_stays_text(write_config, mlp_config):
    doc = load_config(write_config(mlp_config), sets=["name=[oops"], environ={})
    assert doc.data["name"] == "[oops"


# 5. special files ---------------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("command", [["config", "validate"], ["run"]])
def test_fifo_config_is_refused_without_waiting(tmp_path, command):
    fifo = tmp_path / "config.yaml"
    os.mkfifo(fifo)
    res = _thelper(*command, str(fifo))
    assert res.returncode == 2, res.stderr
    (line,) = _error_lines(res.stderr)
    assert line == (f"error: config path {str(fifo)!r} is a FIFO (named pipe), not a regular "
                    "file; pass a .yaml or .json file")


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_device_config_is_refused_even_through_a_link(tmp_path):
    link = tmp_path / "config.yaml"
    link.symlink_to("/dev/zero")
    for path in ("/dev/zero", str(link)):
        res = _thelper("config", "validate", path, limit_memory=True)
        assert res.returncode == 2, res.stderr
        (line,) = _error_lines(res.stderr)
        assert f"config path {path!r} is a character device, not a regular file" in line


def test_oversized_config_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# padding\n" * (MAX_CONFIG_BYTES // 10 + 1))
    with pytest.raises(ConfigError, match=r"is larger than 4 MiB; a config is a few KiB"):
        load_config(path, environ={})


def test_config_at_the_size_bound_and_through_a_link_is_read(tmp_path, write_config,
                                                             mlp_config):
    path = write_config(mlp_config)
    text = path.read_bytes()
    path.write_bytes(text + b"#" * (MAX_CONFIG_BYTES - len(text)))
    link = tmp_path / "link.yaml"
    link.symlink_to(path)
    doc = load_config(link, environ={})
    assert doc.data["name"] == mlp_config["name"] and doc.file == str(link)


def test_directory_and_missing_and_binary_configs(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="save it as UTF-8"):
        load_config(bad)


def test_windows_line_endings_keep_lines(tmp_path):
    path = tmp_path / "crlf.yaml"
    path.write_bytes(b"name: x\r\ntrainer:\r\n  epochs: 2\r\n")
    doc = load_config(path, environ={})
    assert doc.data["trainer"] == {"epochs": 2}
    assert doc.locate(("trainer", "epochs"))[1] == 3


# 6. overrides are located at the override -----------------------------------------------------

def test_errors_under_a_set_mapping_are_reported_at_the_set(capsys, write_config, mlp_config):
    path = write_config(mlp_config)
    code, out = _validate(capsys, path, "--set",
                          "trainer.optimization={loss: {type: cross_entropy}, "
                          "optimizer: {type: adamm}}")
    assert code == 2
    issues = [ln for ln in out.splitlines() if "adamm" in ln]
    assert issues and all(ln.startswith("(--set) trainer.optimization.optimizer.type")
                          for ln in issues)
    assert f"{path}:" not in "".join(issues)


def test_errors_in_env_overrides_are_reported_at_env(capsys, write_config, mlp_config,
                                                     monkeypatch):
    path = write_config(mlp_config)
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__EPOCHS", "many")
    monkeypatch.setenv("THELPER_CONFIG__TRAINER__OPTIMIZATION", "{optimizer: {type: adamm}}")
    code, out = _validate(capsys, path)
    assert code == 2
    lines = [ln for ln in out.splitlines() if "problem(s) found" not in ln]
    assert any(ln.startswith("(env) trainer.epochs:") for ln in lines)
    assert any(ln.startswith("(env) trainer.optimization.optimizer.type:") for ln in lines)
    assert not any(ln.startswith(f"{path}:") for ln in lines), lines


def test_a_set_over_an_env_override_owns_everything_under_it(write_config, mlp_config):
    doc = load_config(write_config(mlp_config), sets=["trainer={epochs: 2}"],
                      environ={"THELPER_CONFIG__TRAINER__DEVICE": "cuda"})
    assert doc.data["trainer"] == {"epochs": 2}
    for loc in [("trainer",), ("trainer", "device"), ("trainer", "optimization", "loss")]:
        assert doc.locate(loc) == (None, None, None, "--set")
    assert doc.locate(("model", "type"))[3] == "file"


def test_a_set_into_a_mapping_with_digit_keys_is_located_at_the_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("a:\n  '0': {b: 1}\n")
    doc = load_config(path, sets=["a.0={b: 2}"], environ={})
    assert doc.data["a"] == {"0": {"b": 2}}
    assert doc.locate(("a", "0", "b"))[3] == "--set"


def test_colon_numbers_stay_text_not_base_60():
    """YAML 1.1 reads ``12:00:00:00`` as 2,592,000 (base 60); a config means a duration."""
    from thelper.config.source import _parse_text, parse_override

    data = _parse_text("a: 12:00:00:00\nb: 1:30\nc: 3\n", "x.yaml")[0]
    assert data == {"a": "12:00:00:00", "b": "1:30", "c": 3}
    bomb = ":".join(["1"] * 5000)  # would take minutes to compute as a base-60 integer
    assert _parse_text(f"a: {bomb}\n", "x.yaml")[0] == {"a": bomb}
    assert parse_override("trainer.max_time=1:00:00:00") == (("trainer", "max_time"),
                                                              "1:00:00:00")
