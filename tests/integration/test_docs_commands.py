"""Every ``thelper`` command shown in ``docs/`` and the READMEs runs as documented.

Commands are collected from fenced code blocks labelled ``bash``, ``console``, ``sh`` or
``shell`` (blocks labelled ``text`` are illustrative and skipped). In a block with ``$ ``
prompts only the prompted lines are commands (the rest is their output); elsewhere every
line that is not a comment is. Trailing ``\\`` continuations are joined. A command is kept
when it starts, after optional ``VAR=value`` assignments, with ``thelper``, ``uv run
thelper`` or ``python -m thelper``; the scripts of ``examples/`` that a doc runs to prepare data (``uv run python
examples/.../prepare.py``) are kept too, so that later commands find their data.

Each doc file's commands run in order (later commands may use what earlier ones created) in
a sandbox: a temporary working directory holding copies of what the docs reference relative
to the repository root (:data:`SANDBOX_COPIES`), with absolute ``/tmp/...`` paths moved into
it, ``thelper`` run as ``sys.executable -m thelper``, and the environment
``THELPER_CONFIG__TRAINER__EPOCHS=1`` and ``THELPER_CONFIG__TRAINER__DEVICE=cpu`` so that
runs are short (a command's own ``--set`` still wins). A command must exit 0, or ``N`` when
its line ends with a comment ending in ``exit N`` (``# exit 2``, ``# no GPU; exit 2``). Its
output must hold no ``Traceback`` and no ``unexpected XError`` (how the CLI reports an
exception it did not anticipate: ``error: unexpected RuntimeError: ...``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Paths (relative to the repository root) copied into every sandbox: what the docs' commands
#: read. Copies, not links, because some commands write beside their inputs (``prepare.py``
#: writes ``data/`` next to itself).
SANDBOX_COPIES = (
    "examples",
    "docs/configs",
    "plugins/thelper-plugin-example/examples",
    "tests/core/configs",
    "packages/thelper-geo/src/thelper_geo/example_data",
)
#: Left out of the copies: data and sessions that a developer's earlier runs left behind.
_COPY_IGNORE = shutil.ignore_patterns("data", "sessions", "__pycache__", ".*")

#: Seconds one command may take on a busy 2-core machine.
COMMAND_TIMEOUT = 600

#: Subcommands that train, evaluate or predict; a doc file running any is marked slow.
_HEAVY = re.compile(r"\s(run|resume|export|infer|split|viz|grid)\s|--dry-run|--build|prepare\.py")

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
_LANGS = {"bash", "console", "sh", "shell"}
_ENV = r"(?:[A-Za-z_][A-Za-z0-9_]*=\S*\s+)*"
_THELPER = re.compile(rf"^({_ENV})(?:uv run thelper|python3? -m thelper|thelper)(?=\s|$)")
_SCRIPT = re.compile(rf"^({_ENV})(?:uv run python3?|python3?)\s+(?=examples/\S+\.py(?:\s|$))")
_EXIT = re.compile(r"#.*?\bexit\s+(\d+)\s*$")
#: The CLI's report of an exception it did not anticipate (``unexpected RuntimeError: ...``).
#: Plain "unexpected" is fine: ``init_from`` reports "0 missing, 0 unexpected" state-dict keys.
_UNEXPECTED = re.compile(r"\bunexpected [\w.]*(?:Error|Exception|Interrupt|Exit)\b")
_TMP = re.compile(r"(?<![\w./-])/tmp/")


@dataclass(frozen=True)
class DocCommand:
    """One command shown in a doc.

    Attributes:
        doc: Doc file, relative to the repository root (POSIX).
        line: 1-based line of the command's first line in the doc.
        text: The command as shown, prompt stripped and continuations joined.
        exit_code: Expected exit status (a trailing comment ending in ``exit N``, else 0).
    """

    doc: str
    line: int
    text: str
    exit_code: int


def _blocks(text: str):
    """Yield ``(language, [(line_number, line), ...])`` for each fenced code block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, lang = match.group(1), match.group(2).lower()
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence[0] * len(fence)):
            body.append((j + 1, lines[j]))
            j += 1
        yield lang, body
        i = j + 1


def collect_commands(text: str, doc: str = "<doc>") -> list[DocCommand]:
    """The runnable commands of a Markdown text, in order (see the module docstring)."""
    commands = []
    for lang, body in _blocks(text):
        if lang not in _LANGS:
            continue
        prompted = lang == "console" or any(line.lstrip().startswith("$ ") for _, line in body)
        k = 0
        while k < len(body):
            number, line = body[k]
            k += 1
            command = line.strip()
            if prompted:
                if not command.startswith("$ "):
                    continue
                command = command[2:].strip()
            if not command or command.startswith("#"):
                continue
            while command.endswith("\\") and k < len(body):
                command = command[:-1].rstrip() + " " + body[k][1].strip()
                k += 1
            if _THELPER.match(command) or _SCRIPT.match(command):
                exit_match = _EXIT.search(command)
                commands.append(DocCommand(doc, number, command,
                                           int(exit_match.group(1)) if exit_match else 0))
    return commands


def doc_files() -> list[Path]:
    """``docs/**/*.md`` and every README of the repository (hidden folders left out)."""
    found = set(ROOT.glob("docs/**/*.md")) | set(ROOT.glob("**/README.md"))
    return sorted(p for p in found
                  if not any(part.startswith(".") or part == "node_modules"
                             for part in p.relative_to(ROOT).parts))


def to_shell(command: str, sandbox: Path) -> str:
    """The shell line that runs a doc command in ``sandbox`` with this interpreter."""
    python = sys.executable
    # the doc's own /tmp paths first: the interpreter (or the sandbox) may live under /tmp
    line = _TMP.sub(f"{sandbox}/tmp/", command)
    line = _THELPER.sub(lambda m: f"{m.group(1)}{python} -m thelper", line, count=1)
    return _SCRIPT.sub(lambda m: f"{m.group(1)}{python} ", line, count=1)


def make_sandbox(path: Path) -> Path:
    """A working directory holding copies of :data:`SANDBOX_COPIES`."""
    path.mkdir(parents=True, exist_ok=True)
    for rel in SANDBOX_COPIES:
        source = ROOT / rel
        if source.exists():
            shutil.copytree(source, path / rel, ignore=_COPY_IGNORE, symlinks=True)
    (path / "tmp").mkdir()
    return path


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("THELPER_")}
    env.update(THELPER_CONFIG__TRAINER__EPOCHS="1", THELPER_CONFIG__TRAINER__DEVICE="cpu",
               MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)
    return env


def _doc_params():
    params = []
    for path in doc_files():
        rel = path.relative_to(ROOT).as_posix()
        commands = collect_commands(path.read_text(encoding="utf-8"), rel)
        if not commands:
            continue
        heavy = any(_HEAVY.search(f" {c.text} ") for c in commands)
        params.append(pytest.param(rel, commands, id=rel,
                                   marks=[pytest.mark.slow] if heavy else []))
    return params


@pytest.mark.parametrize(("doc", "commands"), _doc_params())
def test_doc_commands_run(doc: str, commands: list[DocCommand], tmp_path: Path) -> None:
    sandbox = make_sandbox(tmp_path / "repo")
    env = _environment()
    for command in commands:
        line = to_shell(command.text, sandbox)
        where = f"{doc}:{command.line}: {command.text}"
        try:
            done = subprocess.run(["bash", "-o", "pipefail", "-c", line], cwd=sandbox, env=env,
                                  capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{where}\ntimed out after {COMMAND_TIMEOUT} s")
        output = done.stdout + done.stderr
        tail = output[-4000:]
        assert done.returncode == command.exit_code, (
            f"{where}\nexit {done.returncode}, expected {command.exit_code}\n{tail}")
        assert "Traceback" not in output, f"{where}\ntraceback in the output\n{tail}"
        unexpected = _UNEXPECTED.search(output)
        assert unexpected is None, f"{where}\n{unexpected.group(0)!r} in the output\n{tail}"


# ---------------------------------------------------------------- the collector itself
_SAMPLE = """\
```console
$ uv run thelper config validate a.yaml \\
      --set trainer.epochs=2    # exit 2
a.yaml: 1 problem(s) found
$ echo $?
2
```

```text
thelper run cfg.yaml
```

    thelper run indented.yaml

```bash
# prepare, then train
uv run python examples/x/prepare.py
THELPER_CONFIG__TRAINER__EPOCHS=3 thelper run /tmp/x.yaml -o /tmp/runs
uv run pytest
```

```yaml
thelper: not a command
```
"""


def test_collector_reads_prompts_continuations_and_exit_comments():
    commands = collect_commands(_SAMPLE, "sample.md")
    assert [(c.line, c.text, c.exit_code) for c in commands] == [
        (2, "uv run thelper config validate a.yaml --set trainer.epochs=2    # exit 2", 2),
        (17, "uv run python examples/x/prepare.py", 0),
        (18, "THELPER_CONFIG__TRAINER__EPOCHS=3 thelper run /tmp/x.yaml -o /tmp/runs", 0),
    ]


def test_commands_are_rewritten_for_the_sandbox(tmp_path):
    python = sys.executable
    assert to_shell("uv run thelper run /tmp/docs-cfg/a.yaml -o /tmp/runs", tmp_path) == (
        f"{python} -m thelper run {tmp_path}/tmp/docs-cfg/a.yaml -o {tmp_path}/tmp/runs")
    assert to_shell("PYTHONPATH=docs/configs/pkg thelper plugins list", tmp_path) == (
        f"PYTHONPATH=docs/configs/pkg {python} -m thelper plugins list")
    assert to_shell("uv run python examples/x/prepare.py", tmp_path) == (
        f"{python} examples/x/prepare.py")
    assert to_shell("thelper config validate /nope/a.yaml", tmp_path) == (
        f"{python} -m thelper config validate /nope/a.yaml")


def test_unexpected_errors_are_told_from_state_dict_counts():
    assert _UNEXPECTED.search("error: unexpected RuntimeError: boom (run with --traceback)")
    assert _UNEXPECTED.search("unexpected torch.OutOfMemoryError: CUDA out of memory")
    assert not _UNEXPECTED.search("14 of 16 model tensors loaded, 0 missing, 0 unexpected")


def test_docs_show_commands():
    """The collector finds the commands of the main pages (it cannot pass by finding none)."""
    by_doc = {p.relative_to(ROOT).as_posix(): collect_commands(p.read_text(encoding="utf-8"))
              for p in doc_files()}
    for doc in ("README.md", "docs/index.md", "docs/commands/config-validate.md",
                "docs/commands/run.md", "docs/commands/export.md", "docs/commands/infer.md"):
        assert by_doc.get(doc), f"{doc}: no command found"
