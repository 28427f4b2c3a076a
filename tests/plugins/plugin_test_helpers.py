"""Helpers of the plugin tests (imported by ``conftest.py`` and the test modules)."""

from __future__ import annotations

import copy
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "plugins" / "thelper-plugin-example"
MOONS_CONFIG = EXAMPLE_DIR / "examples" / "moons.yaml"

#: A core-only session: scikit-learn digits as flat vectors and the core MLP, 2 epochs on CPU.
CORE_CONFIG: dict[str, Any] = {
    "name": "tiny-digits",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "sklearn", "params": {"name": "digits", "as_image": False}}},
    "loaders": {
        "batch_size": 64,
        "train_split": {"digits": 0.7},
        "valid_split": {"digits": 0.15},
        "test_split": {"digits": 0.15},
    },
    "model": {"type": "mlp", "params": {"in_features": 64, "hidden": [64]}},
    "trainer": {
        "epochs": 2,
        "device": "cpu",
        "progress": False,
        "monitor": "accuracy",
        "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
        "metrics": {"accuracy": {"type": "accuracy"}},
    },
}

#: Source of a well-behaved fake plugin module; ``{module}`` is its import name.
GOOD_PLUGIN = '''\
"""A fake third-party plugin: registers one metric (no torch import)."""
from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo, Params


class CountParams(Params):
    """Params of fake_count."""

    scale: float = 1.0
    """Multiplier of the count."""


class SampleCount:
    """Counts the samples it has seen (times ``scale``)."""

    goal = "max"

    def __init__(self, scale=1.0):
        self.scale = scale
        self.reset()

    def reset(self):
        self.n = 0

    def update(self, outputs, targets):
        self.n += len(targets)

    def compute(self):
        return self.n * self.scale


@hookimpl
def thelper_register_components():
    return [ComponentInfo("metric", "fake_count", "{module}:SampleCount", CountParams,
                          description="number of samples seen", metadata={"goal": "max"})]
'''

#: A plugin module that cannot be imported (a missing dependency).
IMPORT_ERROR_PLUGIN = """\
raise ImportError("this plugin needs the 'unobtainium' package")
"""

#: A plugin whose registration hook raises.
RAISING_PLUGIN = """\
from thelper.plugins import hookimpl


@hookimpl
def thelper_register_components():
    raise RuntimeError("boom while registering")
"""

#: A plugin registering dataset ``dupe_moons`` (two distributions ship it: a conflict).
DUPE_PLUGIN = """\
from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo
from thelper_plugin_example.params import MoonsParams


@hookimpl
def thelper_register_components():
    return [ComponentInfo("dataset", "dupe_moons", "thelper_plugin_example.datasets:TwoMoons",
                          MoonsParams, metadata={"provides_task": True})]
"""


#: A plugin whose lazy params references are wrong: ``fake_nomodule`` names a module that
#: does not exist (found at registration, without importing), ``fake_noattr`` a missing
#: attribute (found when a config names it); ``fake_good`` is fine.
BAD_PARAMS_PLUGIN = '''\
"""A fake third-party plugin with lazy params references, two of them wrong."""
from thelper.plugins import hookimpl
from thelper.registry import ComponentInfo


class SampleCount:
    """Counts the samples it has seen."""

    goal = "max"

    def __init__(self):
        self.n = 0

    def reset(self):
        self.n = 0

    def update(self, outputs, targets):
        self.n += len(targets)

    def compute(self):
        return self.n


@hookimpl
def thelper_register_components():
    return [
        ComponentInfo("metric", "fake_nomodule", "{module}:SampleCount",
                      "{module}_params_typo:CountParams", aliases=("fake_nomodule_alias",),
                      description="params module misspelled"),
        ComponentInfo("metric", "fake_noattr", "{module}:SampleCount", "{module}:NoSuchParams",
                      description="params attribute misspelled"),
        ComponentInfo("metric", "fake_good", "{module}:SampleCount", "thelper.params:Params",
                      description="the default, empty params"),
    ]
'''


def core_config(**changes: Any) -> dict[str, Any]:
    """A deep copy of :data:`CORE_CONFIG` with top-level keys replaced."""
    cfg = copy.deepcopy(CORE_CONFIG)
    cfg.update(copy.deepcopy(changes))
    return cfg


class FakeSite:
    """A folder on ``sys.path`` holding fake installed distributions (``*.dist-info``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.modules: list[str] = []

    def add(self, dist: str, version: str, entry_point: str, module: str, source: str) -> Path:
        """Install ``module.py`` and ``<dist>-<version>.dist-info`` with one
        ``thelper.plugins`` entry point ``entry_point = module``."""
        info = self.path / f"{dist}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(f"[thelper.plugins]\n{entry_point} = {module}\n")
        (self.path / f"{module}.py").write_text(textwrap.dedent(source).replace("{module}", module))
        self.modules.append(module)
        return info


def thelper_exe() -> str:
    """The ``thelper`` console script of the running virtual environment."""
    exe = Path(sys.executable).parent / "thelper"
    if exe.is_file():
        return str(exe)
    found = shutil.which("thelper")
    if found is None:  # pragma: no cover - broken install
        pytest.fail("the 'thelper' console script is not installed (run 'uv sync')")
    return found


def squash(text: str) -> str:
    """Collapse whitespace (console output may be wrapped)."""
    return " ".join(text.split())
