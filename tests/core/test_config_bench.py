"""The start-up benchmark runs (quick mode; no timing thresholds here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_startup_quick(tmp_path):
    out = tmp_path / "startup.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_startup.py"),
                          "--quick", "--json", str(out)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    assert lines[1].split()[:5] == ["command", "median", "s", "min", "s"]
    commands = [line.split("  ")[0] for line in lines[3:]]
    assert commands[:3] == ["python -c pass", "thelper --help", "thelper plugins list"]
    assert any(c.startswith("validate examples/") for c in commands)
    assert out.read_text().count('"command"') == len(commands)
