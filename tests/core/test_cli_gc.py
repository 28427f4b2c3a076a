"""The CLI pauses the cyclic garbage collector only while it starts and for short commands."""

from __future__ import annotations

import gc
from types import SimpleNamespace

import pytest

from thelper.cli import _is_short, main

EXAMPLE = "examples/digits-classification/config.yaml"


@pytest.mark.parametrize(("args", "short"), [
    (["config", "validate", EXAMPLE], True),
    (["--traceback", "plugins", "list", "--json"], True),
    (["run", EXAMPLE, "--help"], True),
    ([], True),
    (["run", EXAMPLE], False),
    (["--traceback", "resume", "runs/x"], False),
    (["export", "runs/x"], False),
    (["viz", EXAMPLE], False),
])
def test_short_commands(args, short):
    assert _is_short(args) is short


def test_validate_runs_paused_and_restores_the_collector(capsys):
    assert gc.isenabled()
    seen = []

    def record(phase, info):
        seen.append(phase)

    gc.callbacks.append(record)
    try:
        assert main(["config", "validate", EXAMPLE]) == 0
    finally:
        gc.callbacks.remove(record)
    assert gc.isenabled()  # restored for the caller
    assert "valid" in capsys.readouterr().out.lower()
    assert seen == []  # no automatic collection while the command ran


def test_run_trains_with_the_collector_on(monkeypatch, tmp_path):
    import thelper.runner

    state = {}

    def fake_run_session(doc, save_dir, pm, **kwargs):
        state["enabled"] = gc.isenabled()
        return SimpleNamespace(name="x", status="completed", session_dir=tmp_path)

    monkeypatch.setattr(thelper.runner, "run_session", fake_run_session)
    assert main(["run", EXAMPLE, "--save-dir", str(tmp_path)]) == 0
    assert state == {"enabled": True}


def test_a_disabled_collector_stays_disabled():
    """An embedding program that turned the collector off keeps it off."""
    gc.disable()
    try:
        assert main(["config", "validate", EXAMPLE]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
