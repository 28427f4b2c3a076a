"""CLI polish: help placeholders, examples, -q/-v, shell completion."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from thelper.cli import main

COMMANDS = [["run"], ["resume"], ["split"], ["export"], ["infer"], ["config", "validate"],
            ["config", "show"], ["config", "groups"], ["config", "schema"], ["config", "init"],
            ["plugins", "list"]]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_examples_and_no_python_types(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out
    assert f"thelper {' '.join(command)}" in out.split("Examples:")[1]
    for leak in ("<list[", "<str>", "<int>", "<Path>", "<float>", "<bool>"):
        assert leak not in out, f"{leak} in the help of {' '.join(command)}"


def test_quiet_and_verbose_set_the_console_level(capsys):
    from thelper.logs import is_interactive, setup_logging, verbosity

    assert main(["-q", "plugins", "list"]) == 0
    assert verbosity() == -1 and not is_interactive()
    console = [h for h in setup_logging().handlers if getattr(h, "_thelper_console", False)]
    assert console and all(h.level == logging.WARNING for h in console)
    assert main(["-v", "plugins", "list"]) == 0
    assert verbosity() == 1 and setup_logging().level == logging.DEBUG
    assert main(["plugins", "list"]) == 0  # each invocation starts normal again
    assert verbosity() == 0 and setup_logging().level == logging.INFO
    assert main(["-q", "-v", "plugins", "list"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_quiet_run_prints_no_info(tmp_path, write_config, mlp_config):
    mlp_config["trainer"]["epochs"] = 1
    cfg = write_config(mlp_config)
    proc = subprocess.run([sys.executable, "-m", "thelper", "-q", "run", str(cfg), "-o",
                           str(tmp_path / "s")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1" not in proc.stderr and "test of the best model" not in proc.stderr
    log = (tmp_path / "s" / "digits-mlp" / "logs").glob("*.log")
    assert any("epoch 1/1" in p.read_text() for p in log)  # the file still has it


def test_show_completion_and_complete(capsys):
    assert main(["--show-completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "_THELPER_COMPLETE" in script and "complete" in script
    assert main(["--show-completion", "tcsh"]) == 2
    assert "name one of bash" in capsys.readouterr().err
    assert "_THELPER_COMPLETE=complete_bash" in script
    for words, cword, expected in (("thelper con", "1", ["config"]),
                                   ("thelper config va", "2", ["validate"])):
        env = {**os.environ, "_THELPER_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": cword}
        proc = subprocess.run([sys.executable, "-c", "from thelper.cli import entry; entry()"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and proc.stdout.split() == expected, proc
