"""Start-up time of the thelper CLI, side by side with ``python -c pass`` in the same run.

Times, as fresh subprocesses (what a user waits for):

* ``python -c pass``: the interpreter alone (the baseline);
* ``thelper --help``;
* ``thelper plugins list``;
* ``thelper config validate CONFIG`` for every ``examples/*/config.yaml`` and the example
  plugin's config.

The commands run round-robin (one of each, then again), so that a busy machine slows them
alike; each row reports the median and the fastest of the repeats, the ratio of the median to
the baseline's, the time added on top of the interpreter, and the median CPU time (user +
system; steadier than wall-clock time on a busy machine). Byte-code caches are written to
a temporary ``PYTHONPYCACHEPREFIX`` during a warm-up round, as an installed package would
have them (``PYTHONDONTWRITEBYTECODE`` is ignored here).

Usage::

    uv run python benchmarks/bench_startup.py            # 7 repeats
    uv run python benchmarks/bench_startup.py --quick    # 1 repeat, no warm-up (CI)
    uv run python benchmarks/bench_startup.py --importtime   # slowest imports of validate
    uv run python benchmarks/bench_startup.py --json out.json

Targets (this machine, issue 7): ``--help`` <= 0.25 s, ``plugins list`` <= 0.3 s,
``config validate`` <= 0.5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"help": 0.25, "plugins": 0.30, "validate": 0.50}


def _thelper() -> str:
    exe = Path(sys.executable).parent / "thelper"
    return str(exe) if exe.exists() else shutil.which("thelper") or "thelper"


def commands() -> list[tuple[str, str, list[str]]]:
    """``(label, target key, argv)`` of every timed command, the baseline first."""
    thelper = _thelper()
    out = [("python -c pass", "", [sys.executable, "-c", "pass"]),
           ("thelper --help", "help", [thelper, "--help"]),
           ("thelper plugins list", "plugins", [thelper, "plugins", "list"])]
    configs = sorted((ROOT / "examples").glob("*/config.yaml"))
    configs += sorted((ROOT / "plugins").glob("*/examples/*.yaml"))
    for cfg in configs:
        out.append((f"validate {cfg.relative_to(ROOT)}", "validate",
                    [thelper, "config", "validate", str(cfg)]))
    return out


def _env(pycache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    env["COLUMNS"] = "200"
    return env


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of ``argv``."""
    cpu, start = _cpu(), time.perf_counter()
    res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                         timeout=300, check=False)
    elapsed, cpu = time.perf_counter() - start, _cpu() - cpu
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}:\n{res.stderr[-2000:]}")
    return elapsed, cpu


def measure(repeats: int, warmup: bool) -> list[dict[str, object]]:
    """Time every command ``repeats`` times, round-robin."""
    cmds = commands()
    with tempfile.TemporaryDirectory(prefix="thelper-bench-pycache-") as tmp:
        env = _env(Path(tmp))
        if warmup:
            for _, _, argv in cmds:
                _run(argv, env)
        times: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        cpus: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        for _ in range(repeats):
            for label, _, argv in cmds:
                wall, cpu = _run(argv, env)
                times[label].append(wall)
                cpus[label].append(cpu)
    base = statistics.median(times[cmds[0][0]])
    rows = []
    for label, key, _ in cmds:
        med = statistics.median(times[label])
        rows.append({"command": label, "median_s": med, "min_s": min(times[label]),
                     "cpu_s": statistics.median(cpus[label]),
                     "ratio": med / base if base > 0 else float("nan"),
                     "added_s": med - base, "target_s": TARGETS.get(key),
                     "runs": len(times[label])})
    return rows


def print_table(rows: list[dict[str, object]], repeats: int) -> None:
    print(f"# thelper start-up, {repeats} repeat(s), {platform.node()} "
          f"({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}), Python "
          f"{platform.python_version()}")
    head = f"{'command':58s} {'median s':>9s} {'min s':>7s} {'cpu s':>6s} {'x pass':>7s} " \
           f"{'added s':>8s} {'target s':>9s}"
    print(head)
    print("-" * len(head))
    for r in rows:
        target = r["target_s"]
        flag = "" if target is None else ("  ok" if r["median_s"] <= target else "  over")
        print(f"{r['command']:58s} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['cpu_s']:6.2f} "
              f"{r['ratio']:7.1f} "
              f"{r['added_s']:8.3f} {'' if target is None else f'{target:.2f}':>9s}{flag}")


def importtime(config: Path, top: int = 25) -> None:
    """Print the slowest imports (cumulative) of ``thelper config validate CONFIG``."""
    with tempfile.TemporaryDirectory(prefix="thelper-bench-pycache-") as tmp:
        env = _env(Path(tmp))
        argv = [sys.executable, "-X", "importtime", "-c",
                "import sys; from thelper.cli import main; sys.exit(main(sys.argv[1:]))",
                "config", "validate", str(config)]
        subprocess.run(argv, capture_output=True, env=env, cwd=ROOT, check=False)  # warm
        res = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT,
                             check=False)
    rows = []
    for line in res.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        own_us = int(parts[0].split(":", 1)[1])
        rows.append((int(parts[1]), own_us, parts[2].rstrip()))
    rows.sort(reverse=True)
    print(f"# slowest imports of 'thelper config validate {config.relative_to(ROOT)}' "
          "(cumulative ms, self ms)")
    for cum, own, name in rows[:top]:
        print(f"{cum / 1000:8.1f} {own / 1000:8.1f}  {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repeat, no warm-up (CI)")
    parser.add_argument("--repeats", type=int, default=7, help="repeats per command")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--importtime", action="store_true",
                        help="print the slowest imports of 'config validate' and exit")
    args = parser.parse_args(argv)
    if args.importtime:
        importtime(sorted((ROOT / "examples").glob("*/config.yaml"))[0])
        return 0
    repeats = 1 if args.quick else max(1, args.repeats)
    rows = measure(repeats, warmup=not args.quick)
    print_table(rows, repeats)
    if args.json is not None:
        args.json.write_text(json.dumps({"repeats": repeats, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
