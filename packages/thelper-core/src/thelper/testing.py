"""A pytest plugin for plugin authors (``pytest11`` entry point ``thelper``).

Installed with thelper-core, so any test suite that has thelper installed gets these
fixtures and the contract suite, as pytest gives its plugins ``pytester`` and datasette
gives its ``datasette`` fixtures:

* ``thelper_plugin_manager``: a factory of in-process plugin managers holding your plugin
  (and the core's built-ins), loading no other installed plugin.
* ``thelper_tiny_config``: a tiny core-only session config (scikit-learn's digits as flat
  vectors, a small MLP, one epoch on the CPU) as a dict to modify.
* ``thelper_tiny_session``: a factory that runs a session (that config by default) in the
  test's temporary directory and returns the :class:`thelper.session.Session`.
* :class:`ComponentContract`: subclass it with ``plugin = "my_package.plugin"`` and every
  component your plugin registers gets contract tests (its params validate with their
  defaults and survive a JSON round trip; it appears in the config schema; it builds with
  its defaults; models and metrics survive a checkpoint round trip).

Nothing heavy is imported until a fixture is used: this module is loaded by every pytest run
of an environment where thelper-core is installed.
"""

from __future__ import annotations

import copy
import importlib
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ComponentContract", "TINY_CONFIG"]

#: The session ``thelper_tiny_config`` returns (a copy): 1,797 real 8x8 digits from
#: scikit-learn as 64-feature vectors, an MLP, one epoch on the CPU (about a second).
TINY_CONFIG: dict[str, Any] = {
    "name": "tiny-digits",
    "seeds": {"split": 0, "torch": 0, "numpy": 0, "random": 0, "worker": 0},
    "datasets": {"digits": {"type": "sklearn", "params": {"name": "digits", "as_image": False}}},
    "loaders": {"batch_size": 64, "train_split": {"digits": 0.7},
                "valid_split": {"digits": 0.15}, "test_split": {"digits": 0.15}},
    "model": {"type": "mlp", "params": {"in_features": 64, "hidden": [32]}},
    "trainer": {"epochs": 1, "device": "cpu", "progress": False, "monitor": "accuracy",
                "optimization": {"optimizer": {"type": "adam", "params": {"lr": 0.01}}},
                "metrics": {"accuracy": {"type": "accuracy"}}},
}

#: Kinds that :class:`ComponentContract` builds with their defaults (and the context the
#: core passes them; see docs/writing-plugins.md, "The factory calling convention").
BUILT_KINDS = ("dataset", "model", "metric", "loss", "optimizer", "scheduler", "transform",
               "task", "sampler")


def _module(plugin: Any) -> Any:
    return importlib.import_module(plugin) if isinstance(plugin, str) else plugin


@pytest.fixture
def thelper_plugin_manager() -> Callable[..., Any]:
    """Factory: ``make(*plugins, blocked=("tensorboard",))`` → a plugin manager.

    Each plugin is a module, an import path (``"my_package.plugin"``) or an object with
    ``@hookimpl`` methods; it is registered under its module name (or ``name=`` for one).
    No installed entry point is loaded, so the test sees your plugin and the core only.
    """
    from thelper.plugins import ThelperPluginManager

    def make(*plugins: Any, blocked: Iterable[str] = ("tensorboard",),
             name: str | None = None) -> Any:
        pm = ThelperPluginManager(autoload=False, blocked=blocked)
        for plugin in plugins:
            obj = _module(plugin)
            pm.register(obj, name=name or getattr(obj, "__name__", type(obj).__name__))
        return pm

    return make


@pytest.fixture
def thelper_tiny_config() -> dict[str, Any]:
    """A deep copy of :data:`TINY_CONFIG`, to modify freely."""
    return copy.deepcopy(TINY_CONFIG)


@pytest.fixture
def thelper_tiny_session(tmp_path: Path) -> Callable[..., Any]:
    """Factory: ``run(config=None, pm=None)`` trains a session under ``tmp_path/sessions``.

    Returns the :class:`thelper.session.Session` (``session_dir``, ``test_metrics``, ...).
    """
    from thelper.config import document_from_dict
    from thelper.runner import run_session

    def run(config: dict[str, Any] | None = None, pm: Any = None) -> Any:
        doc = document_from_dict(copy.deepcopy(config or TINY_CONFIG))
        return run_session(doc, tmp_path / "sessions", pm)

    return run


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``thelper_component`` over the components of a contract's plugin."""
    if "thelper_component" not in metafunc.fixturenames:
        return
    cls = metafunc.cls
    plugin = getattr(cls, "plugin", None) if cls is not None else None
    if plugin is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: the thelper_component "
                                "fixture needs a ComponentContract subclass that sets "
                                "plugin = 'my_package.plugin'")
    from thelper.plugins import ThelperPluginManager

    pm = ThelperPluginManager(autoload=False, blocked=("tensorboard",))
    name = cls.plugin_name or str(plugin)
    pm.register(_module(plugin), name=name)
    mine = [c for c in pm.registry.components() if c.plugin == name]
    if not mine:
        raise pytest.UsageError(f"plugin {plugin!r} registers no component: nothing to test")
    metafunc.parametrize("thelper_component", [(c.kind, c.name) for c in mine],
                         ids=[f"{c.kind}:{c.name}" for c in mine])


class ComponentContract:
    """Contract tests for every component a plugin registers.

    Subclass it in your test suite (the class name must start with ``Test``)::

        from thelper.testing import ComponentContract

        class TestMyPluginContract(ComponentContract):
            plugin = "my_package.plugin"
            # params for components whose params have required fields, by "kind:name"
            contract_params = {"dataset:my_rasters": {"root": "tests/data"}}

    Attributes:
        plugin: Import path of the plugin module (or the module object).
        plugin_name: Name to register it under (default: ``plugin``).
        contract_params: ``{"kind:name": params}`` used instead of the defaults.
        contract_classes: Class names of the classification task the context gets.
    """

    plugin: Any = None
    plugin_name: str | None = None
    contract_params: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - read only
    contract_classes: tuple[str, ...] = ("a", "b", "c")

    @pytest.fixture
    def contract_pm(self) -> Any:
        from thelper.plugins import ThelperPluginManager

        pm = ThelperPluginManager(autoload=False, blocked=("tensorboard",))
        pm.register(_module(self.plugin), name=self.plugin_name or str(self.plugin))
        return pm

    def _params(self, kind: str, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.contract_params.get(f"{kind}:{name}", {}))

    def _context(self) -> dict[str, Any]:
        import torch

        from thelper.tasks import Classification

        weights = [torch.nn.Parameter(torch.zeros(3))]
        return {"task": Classification(list(self.contract_classes)), "allow": (),
                "params": weights, "optimizer": torch.optim.SGD(weights, lr=0.1),
                "goal": "min"}

    def test_params_validate_and_round_trip(self, contract_pm: Any,
                                            thelper_component: tuple[str, str]) -> None:
        kind, name = thelper_component
        info = contract_pm.registry.get(kind, name)
        model = info.params_model
        try:
            params = model.model_validate(self._params(kind, name))
        except Exception as exc:  # the message says how to fix the contract
            pytest.fail(f"{kind} {name!r}: its params do not validate with their defaults "
                        f"({exc}); give defaults, or set contract_params = "
                        f"{{'{kind}:{name}': {{...}}}} in {type(self).__name__}")
        dumped = json.loads(json.dumps(params.model_dump(mode="json")))
        assert model.model_validate(dumped) == params, \
            f"{kind} {name!r}: params change in a JSON round trip (config files are JSON/YAML)"
        model.model_json_schema()  # a schema can be generated (editors, config schema)

    def test_appears_in_the_config_schema(self, contract_pm: Any,
                                          thelper_component: tuple[str, str]) -> None:
        from thelper.config.schema import session_schema

        kind, name = thelper_component
        text = json.dumps(session_schema(contract_pm.registry))
        kind_names = contract_pm.registry.names(kind)
        if not any(json.dumps(n) in text for n in kind_names if n != name):
            if json.dumps(name) not in text:
                pytest.skip(f"components of kind {kind!r} are not written in session configs")
        assert json.dumps(name) in text, f"{kind} {name!r} is missing from the config schema"

    def test_builds_with_defaults_and_survives_a_checkpoint(
            self, contract_pm: Any, thelper_component: tuple[str, str]) -> None:
        kind, name = thelper_component
        if kind not in BUILT_KINDS:
            pytest.skip(f"kind {kind!r} is built by its own command, not from defaults")
        import torch

        registry = contract_pm.registry
        torch.manual_seed(0)
        built = registry.build(kind, name, self._params(kind, name), **self._context())
        assert built is not None, f"{kind} {name!r}: the factory returned None"
        if kind == "dataset":
            assert len(built) > 0, f"dataset {name!r} is empty with its defaults"
            assert isinstance(built[0], dict), f"dataset {name!r}: samples must be dicts"
        state = getattr(built, "state_dict", None)
        if kind not in ("model", "metric") or state is None:
            return
        buf = io.BytesIO()
        torch.save(built.state_dict(), buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=True)  # what thelper's checkpoints allow
        torch.manual_seed(1)  # another initialisation: the load must restore the weights
        again = registry.build(kind, name, self._params(kind, name), **self._context())
        if kind == "model":
            again.load_state_dict(loaded, strict=True)
            for key, value in built.state_dict().items():
                assert torch.equal(value, again.state_dict()[key]), \
                    f"model {name!r}: {key} differs after a checkpoint round trip"
        else:
            again.load_state_dict(loaded)
