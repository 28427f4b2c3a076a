"""Unknown names: did-you-mean with distributions, install hints, plugin sections, rules."""

from __future__ import annotations

from pydantic import Field

from thelper.config import check_document, document_from_dict
from thelper.config import hints as h
from thelper.config.schema import session_schema
from thelper.plugins import PluginFailure, ThelperPluginManager, get_plugin_manager, hookimpl
from thelper.registry import ComponentInfo, Params


def messages(data, registry, failures=()):
    cfg, issues = check_document(document_from_dict(data), registry, failures=failures)
    return cfg, {i.path: i.message for i in issues}


def core_registry():
    return ThelperPluginManager(autoload=False).registry


def test_suggestions_name_the_distribution(mlp_config):
    registry = get_plugin_manager().registry
    mlp_config["trainer"]["optimization"]["optimizer"]["type"] = "torch.optim.Adm"
    mlp_config["trainer"]["metrics"]["accuracy"]["type"] = "thelper.optim.Acuracy"
    _, issues = messages(mlp_config, registry)
    assert "did you mean 'torch.optim.Adam' (thelper-core)" in \
        issues["trainer.optimization.optimizer.type"]
    assert "'thelper.optim.Accuracy' (thelper-core)" in issues["trainer.metrics.accuracy.type"]


def test_vision_names_without_vision_get_an_install_hint(mlp_config, monkeypatch):
    registry = core_registry()
    mlp_config["model"] = {"type": "simple_cnn", "params": {"in_channels": 1}}
    mlp_config["loaders"]["base_transforms"] = [{"type": "torchvision.transforms.Resize",
                                                 "params": {"size": 8}}]
    _, issues = messages(mlp_config, registry)
    assert issues["model.type"] == (
        "'simple_cnn' is not a registered model; it is provided by thelper-vision, which is "
        "installed but not loaded (check THELPER_DISABLE_PLUGIN_AUTOLOAD, THELPER_PLUGINS and "
        "-p no:NAME)")
    assert "thelper-vision" in issues["loaders.base_transforms.0.type"]
    monkeypatch.setattr(h, "_installed", lambda dist: False)
    _, issues = messages(mlp_config, registry)
    assert issues["model.type"].endswith(
        "it is provided by thelper-vision, which is not installed: pip install thelper-vision")
    failure = PluginFailure("vision", "thelper-vision", "import",
                            "ModuleNotFoundError: No module named 'cv2'")
    _, issues = messages(mlp_config, registry, failures=[failure])
    assert "whose plugin 'vision' failed to import: ModuleNotFoundError: No module named " \
        "'cv2'" in issues["model.type"]


def test_geo_and_gui_prefixes(mlp_config):
    registry = core_registry()
    mlp_config["datasets"]["tiles"] = {"type": "thelper.data.geo.parsers.TileDataset",
                                       "task": {"type": "classification",
                                                "params": {"class_names": ["a"]}}}
    mlp_config["annotator"] = {"type": "thelper.gui.ImageSegmentAnnotator"}
    _, issues = messages(mlp_config, registry)
    assert "thelper-gui" in issues["annotator"]
    from importlib import metadata

    try:  # a core-only registry: geo is either not installed, or installed but not loaded
        metadata.version("thelper-geo")
        state = "installed but not loaded (check THELPER_DISABLE_PLUGIN_AUTOLOAD"
    except metadata.PackageNotFoundError:
        state = "not installed: pip install thelper-geo"
    assert issues["datasets.tiles.type"].startswith(
        "'thelper.data.geo.parsers.TileDataset' is not a registered dataset; it is provided "
        f"by thelper-geo, which is {state}")


def test_every_known_vision_name_is_registered_by_vision():
    registry = get_plugin_manager().registry
    vision = [c for c in registry.components() if c.distribution == "thelper-vision"]
    if not vision:
        return  # thelper-vision not installed: nothing to compare with
    for kind, names in h.KNOWN_ELSEWHERE["thelper-vision"].items():
        for name in names:
            info = registry.get(kind, name)
            assert info.distribution == "thelper-vision", (kind, name)


class _VizParams(Params):
    """Interactive visualisation of a session's samples."""

    max_samples: int = Field(16, ge=1)
    """How many samples to show."""


class _SectionPlugin:
    @hookimpl
    def thelper_register_components(self):
        return [ComponentInfo("section", "viz", "thelper.plugins:hookimpl", _VizParams,
                              description="sample viewer settings")]


def test_plugins_declare_top_level_sections(mlp_config):
    pm = ThelperPluginManager(autoload=False)
    pm.register(_SectionPlugin(), name="viz-plugin", distribution=None)
    registry = pm.registry
    mlp_config["viz"] = {"max_samples": 0}
    _, issues = messages(mlp_config, registry)
    assert issues == {"viz.max_samples": "Input should be greater than or equal to 1 (got 0)"}
    mlp_config["viz"] = {"max_samples": 4}
    cfg, issues = messages(mlp_config, registry)
    assert issues == {} and cfg.viz.max_samples == 4
    schema = session_schema(registry)
    assert schema["properties"]["viz"]["description"] == "sample viewer settings"
    # without the plugin, the section is an unknown key
    _, issues = messages(mlp_config, core_registry())
    assert issues["viz"].startswith("unknown key 'viz'")


def test_more_cross_field_rules(mlp_config):
    registry = core_registry()
    trainer = mlp_config["trainer"]
    trainer["device"] = "cuda:1"
    trainer["optimization"]["scheduler"]["params"]["mode"] = "min"
    trainer["optimization"]["scheduler"]["step_metric"] = "accuracy"
    cfg, issues = messages(mlp_config, registry)
    assert issues == {"trainer.optimization.scheduler.params.mode":
                      "mode 'min' contradicts the goal of step metric 'accuracy' (max); use "
                      "mode: max or leave mode out (it defaults to the metric's goal)"}
    trainer["optimization"]["scheduler"]["params"]["mode"] = "max"
    trainer["device"] = "cuda:all"
    assert messages(mlp_config, registry)[1] == {}


def test_spaced_split_keys_are_seen_by_the_rules(mlp_config):
    loaders = mlp_config["loaders"]
    loaders["train split"] = loaders.pop("train_split")
    loaders["test split"] = {"digits": 0.5}
    loaders.pop("test_split")
    _, issues = messages(mlp_config, core_registry())
    assert "sum to 1.4 > 1" in issues["loaders"]
    loaders["test split"] = {"digitz": 0.1}
    _, issues = messages(mlp_config, core_registry())
    assert "did you mean 'digits'" in issues["loaders.test split.digitz"]


def test_multiple_datasets_tasks_must_agree(mlp_config):
    task = {"type": "classification", "params": {"class_names": ["a", "b"]}}
    mlp_config["datasets"] = {
        "a": {"type": "torchvision.datasets.FakeData", "task": task},
        "b": {"type": "torchvision.datasets.FakeData",
              "task": {"type": "classification",
                       "params": {"class_names": ["a", "b"], "label_key": "1"}}},
    }
    mlp_config["loaders"] = {"train_split": {"a": 0.5, "b": 0.5}}
    _, issues = messages(mlp_config, core_registry())
    assert list(issues) == ["datasets.b.task.params"]
    assert "differ from dataset 'a'" in issues["datasets.b.task.params"]


def test_a_blocked_plugin_is_named_with_its_flag(mlp_config, write_config, capsys):
    from thelper.cli import main

    mlp_config["loaders"]["base_transforms"] = [{"type": "to_float"}]
    cfg = write_config(mlp_config)
    assert main(["-p", "no:vision", "config", "validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert ("'to_float' is not a registered transform; it is provided by thelper-vision, "
            "blocked by -p no:vision") in err
