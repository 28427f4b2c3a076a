"""Reporting helpers of the benchmark scripts (standard library only: no torch import)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["median", "loadavg", "cpu_model", "machine_line", "print_table", "dump_json"]


def median(values: Sequence[float]) -> float:
    """Median, ``nan`` for no value."""
    return float(statistics.median(values)) if values else float("nan")


def loadavg() -> str:
    """The 1/5/15-minute load averages, e.g. ``1.02 0.98 0.91``."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:  # pragma: no cover
        return "n/a"


def cpu_model() -> str:
    """``lscpu``'s model name."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown"


def machine_line(torch_version: str | None = None) -> str:
    """Date, CPU model and cores, torch (version, threads) and Python, load average."""
    torch = sys.modules.get("torch")
    if torch_version is None and torch is not None:
        torch_version = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    return (f"{datetime.datetime.now().astimezone().isoformat(timespec='minutes')} | "
            f"CPU {cpu_model()} x{os.cpu_count()} | torch {torch_version or 'n/a'} | "
            f"Python {platform.python_version()} | load average {loadavg()}")


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a Markdown table (pasteable into ``benchmarks/README.md``)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    sys.stdout.flush()


def dump_json(path: str | None, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` (nothing when ``path`` is empty)."""
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
