"""Level 2: plugins discovered from (fake) installed distributions through entry points."""

from __future__ import annotations

import pytest
from plugin_test_helpers import (
    DUPE_PLUGIN,
    GOOD_PLUGIN,
    IMPORT_ERROR_PLUGIN,
    RAISING_PLUGIN,
    FakeSite,
)

from thelper.plugins import ThelperPluginManager


def _failures(pm: ThelperPluginManager) -> dict[str, object]:
    return {f.name: f for f in pm.failures}


def test_fake_distribution_is_discovered(fake_site: FakeSite) -> None:
    fake_site.add("fakeplug", "1.0", "fake", "fake_thelper_plugin", GOOD_PLUGIN)
    pm = ThelperPluginManager()
    record = pm.records["fake"]
    assert (record.distribution, record.version) == ("fakeplug", "1.0")
    info = pm.registry.get("metric", "fake_count")
    assert (info.plugin, info.distribution) == ("fake", "fakeplug")
    assert [c.name for c in record.components] == ["fake_count"]
    described = {p["plugin"]: p for p in pm.describe()}
    assert described["fake"] == {
        "plugin": "fake",
        "distribution": "fakeplug",
        "version": "1.0",
        "components": {"metric": ["fake_count"]},
    }
    # the installed example plugin arrives through the same door
    example = pm.records["example"]
    assert (example.distribution, example.version) == ("thelper-plugin-example", "0.1.0")
    assert pm.failures == []
    # lazy factory: the fake module's class is imported only now, when built
    metric = pm.registry.build("metric", "fake_count", {"scale": 2.0})
    metric.update(None, [0, 1, 1])
    assert metric.compute() == 6.0


def test_import_error_is_isolated(fake_site: FakeSite) -> None:
    fake_site.add("fakeplug", "1.0", "fake", "fake_thelper_plugin", GOOD_PLUGIN)
    fake_site.add("brokenplug", "0.3", "broken", "broken_thelper_plugin", IMPORT_ERROR_PLUGIN)
    pm = ThelperPluginManager()
    failure = _failures(pm)["broken"]
    assert failure.distribution == "brokenplug"
    assert failure.stage == "import"
    assert "ImportError" in failure.error and "unobtainium" in failure.error
    assert "broken_thelper_plugin" in failure.details  # the traceback, for --traceback
    assert failure.format().startswith("plugin 'broken' (from brokenplug) failed to import")
    assert "broken" not in pm.records
    # everything else still works
    assert pm.registry.get("metric", "fake_count").distribution == "fakeplug"
    assert pm.registry.get("dataset", "example_moons").distribution == "thelper-plugin-example"
    assert len(pm.failures) == 1


def test_raising_registration_is_isolated(fake_site: FakeSite) -> None:
    fake_site.add("fakeplug", "1.0", "fake", "fake_thelper_plugin", GOOD_PLUGIN)
    fake_site.add("raisingplug", "2.0", "raising", "raising_thelper_plugin", RAISING_PLUGIN)
    pm = ThelperPluginManager()
    registry = pm.registry
    failure = _failures(pm)["raising"]
    assert (failure.distribution, failure.stage) == ("raisingplug", "register")
    assert "RuntimeError: boom while registering" in failure.error
    assert registry.get("metric", "fake_count").plugin == "fake"
    assert registry.get("model", "example_rbf_net").plugin == "example"
    assert pm.records["raising"].components == []


def test_duplicate_component_names_both_distributions(fake_site: FakeSite) -> None:
    fake_site.add("dupeone", "1.0", "dupe1", "dupe1_thelper_plugin", DUPE_PLUGIN)
    fake_site.add("dupetwo", "1.0", "dupe2", "dupe2_thelper_plugin", DUPE_PLUGIN)
    pm = ThelperPluginManager()
    registry = pm.registry
    dupes = [f for f in pm.failures if "dupe_moons" in f.error]
    assert len(dupes) == 1
    failure = dupes[0]
    assert failure.stage == "register"
    assert "duplicate dataset 'dupe_moons'" in failure.error
    assert "dupeone" in failure.error and "dupetwo" in failure.error
    # the first registration is kept, the second plugin's other components are unaffected
    kept = registry.get("dataset", "dupe_moons")
    assert {kept.distribution, failure.distribution} == {"dupeone", "dupetwo"}
    assert kept.distribution != failure.distribution


def test_block_list_and_allow_list(fake_site: FakeSite, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_site.add("fakeplug", "1.0", "fake", "fake_thelper_plugin", GOOD_PLUGIN)
    blocked = ThelperPluginManager(blocked=["fake", "example"])
    assert "fake" not in blocked.records and "example" not in blocked.records
    assert blocked.registry.canonical("metric", "fake_count") is None

    monkeypatch.setenv("THELPER_BLOCK_PLUGINS", "fake")
    assert "fake" not in ThelperPluginManager().records
    monkeypatch.delenv("THELPER_BLOCK_PLUGINS")

    monkeypatch.setenv("THELPER_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("THELPER_PLUGINS", "fake")
    allowed = ThelperPluginManager()
    assert set(allowed.records) == {"core", "core-commands", "core-predict", "run-record",
                                    "tensorboard", "trackers", "runs-commands", "fake"}
