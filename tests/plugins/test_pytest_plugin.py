"""The pytest plugin thelper-core ships for plugin authors (``thelper.testing``)."""

from __future__ import annotations

import textwrap

from thelper.testing import ComponentContract

pytest_plugins = ["pytester"]


class TestExamplePluginContract(ComponentContract):
    """The contract, run on the example plugin as a plugin author would run it."""

    plugin = "thelper_plugin_example.plugin"
    plugin_name = "example-contract"


def test_fixtures_hold_the_plugin_and_train_a_tiny_session(thelper_plugin_manager,
                                                           thelper_tiny_session,
                                                           thelper_tiny_config):
    pm = thelper_plugin_manager("thelper_plugin_example.plugin")
    assert pm.registry.get("model", "example_rbf_net").plugin == "thelper_plugin_example.plugin"
    assert "vision" not in pm.records  # no installed entry point is loaded
    thelper_tiny_config["model"] = {"type": "example_rbf_net",
                                    "params": {"in_features": 64, "num_centers": 8}}
    session = thelper_tiny_session(thelper_tiny_config, pm)
    assert (session.session_dir / "checkpoints" / "ckpt.best.pt").is_file()
    assert 0.0 <= session.test_metrics["accuracy"] <= 1.0


BROKEN = '''
import torch
from thelper.hookspecs import hookimpl
from thelper.params import Params
from thelper.registry import ComponentInfo


class NeedsRoot(Params):
    root: str


class Forgetful(torch.nn.Module):
    """Its state_dict forgets a buffer that load_state_dict then misses."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 2)

    def state_dict(self, *args, **kwargs):
        return {}


@hookimpl
def thelper_register_components():
    return [ComponentInfo("model", "forgetful", "broken_plugin:Forgetful"),
            ComponentInfo("dataset", "needs_root", "broken_plugin:Forgetful",
                          "broken_plugin:NeedsRoot")]
'''


def test_the_contract_fails_a_broken_plugin(pytester):
    pytester.makepyfile(broken_plugin=textwrap.dedent(BROKEN))
    pytester.makepyfile(test_contract=textwrap.dedent('''
        from thelper.testing import ComponentContract

        class TestBroken(ComponentContract):
            plugin = "broken_plugin"
    '''))
    pytester.syspathinsert()
    # no:xvfb: the inner session would start a second X server that nothing stops (and
    # point DISPLAY at it for the rest of this session); the contract needs no display
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider", "-p", "no:xvfb")
    outcomes = result.parseoutcomes()
    # needs_root: params without defaults and no contract_params (so it cannot build
    # either); forgetful: its weights are lost in a checkpoint round trip
    assert outcomes.get("failed") == 3, result.stdout.str()
    result.stdout.fnmatch_lines(["*FAILED*test_params_validate_and_round_trip*needs_root*",
                                 "*FAILED*survives_a_checkpoint*needs_root*",
                                 "*FAILED*survives_a_checkpoint*forgetful*"])
    text = result.stdout.str()
    assert "contract_params" in text and "dataset:needs_root" in text
    assert "forgetful" in text
