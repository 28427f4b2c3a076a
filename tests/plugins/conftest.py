"""Fixtures of the plugin tests: fake installed distributions, one torch thread, the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from plugin_test_helpers import ROOT, FakeSite, thelper_exe


@pytest.fixture
def clean_thelper_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No THELPER_* switch from the outer environment leaks into a test."""
    for var in list(os.environ):
        if var.startswith("THELPER_"):
            monkeypatch.delenv(var)


@pytest.fixture
def fake_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_thelper_env: None
) -> Iterator[FakeSite]:
    """A fake site-packages folder prepended to ``sys.path`` (modules unloaded afterwards)."""
    site = FakeSite(tmp_path / "site")
    site.path.mkdir()
    monkeypatch.syspath_prepend(str(site.path))
    yield site
    for module in site.modules:
        sys.modules.pop(module, None)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train with one torch thread: tiny models only lose time to thread contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_cli(clean_thelper_env: None) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``thelper ARGS`` in a subprocess; ``pythonpath`` is prepended to PYTHONPATH."""

    def run(
        *args: str,
        pythonpath: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full = {k: v for k, v in os.environ.items() if not k.startswith("THELPER_")}
        full["COLUMNS"] = "250"  # rich wraps warnings at 80 columns otherwise
        if pythonpath is not None:
            full["PYTHONPATH"] = os.pathsep.join(
                [str(pythonpath), *filter(None, [os.environ.get("PYTHONPATH")])]
            )
        full.update(env or {})
        return subprocess.run(
            [thelper_exe(), *args],
            capture_output=True,
            text=True,
            env=full,
            cwd=cwd or ROOT,
            timeout=120,
            check=False,
        )

    return run
