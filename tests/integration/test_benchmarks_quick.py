"""The benchmark scripts still run: each ``--quick`` mode exits 0 and prints its table.

No timing threshold here (timings belong in ``benchmarks/README.md``); what is asserted is
that the scripts work and that their correctness checks pass: thelper's losses equal those of
the hand-written replica (``bench_trainer``) and its batches equal the replica's
(``bench_data``). ``bench_trainer`` and ``bench_data`` run in this process to share its
imports; ``bench_memory`` starts its own child processes.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark script as a module (benchmarks/ on sys.path, torch threads kept)."""
    import torch

    monkeypatch.syspath_prepend(str(BENCH))
    threads = torch.get_num_threads()
    yield lambda name: importlib.import_module(name)
    torch.set_num_threads(threads)


@pytest.mark.parametrize("script, title", [
    ("bench_trainer", "Trainer overhead: thelper Trainer.train_epoch vs hand-written loops"),
    ("bench_data", "Data path: thelper train loader vs plain DataLoader"),
])
def test_quick_in_process(bench, capsys, script, title):
    code = bench(script).main(["--quick"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert title in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) >= 2, out  # a header and at least one row
    assert "MISMATCH" not in out and "DIFFER" not in out


def test_memory_quick():
    out = subprocess.run([sys.executable, str(BENCH / "bench_memory.py"), "--quick"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Memory: peak RSS in MiB" in out.stdout
    rows = [line for line in out.stdout.splitlines() if line.startswith("| digits")]
    assert len(rows) == 1, out.stdout
