"""``Slot``: ``{type, params}`` fields of a plugin's own config section, validated against the
registry with the rest of the config."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import Field

from thelper.config import Slot, check_document, document_from_dict
from thelper.config.dynamic import section_model
from thelper.config.schema import session_schema
from thelper.params import Params
from thelper.plugins import ThelperPluginManager, hookimpl
from thelper.registry import ComponentInfo, Registry


# -------------------------------------------------- a plugin with a section and new kinds
class LocalParams(Params):
    """Worker processes on this machine."""

    workers: int = Field(1, ge=1)
    """How many runs at once."""


class RayParams(Params):
    """An existing Ray cluster."""

    address: str
    """Address of the cluster's head node."""


class CsvParams(Params):
    """One CSV row per run."""

    path: str = "runs.csv"
    """Where the rows go."""


class Reporting(Params):
    """A sub-model holding a slot of its own."""

    annotator: Slot[Literal["annotator"]] | None = None
    """Optional annotator run on the results."""


class GridParams(Params):
    """A grid of runs."""

    executor: Slot[Literal["executor"]]
    """Where the runs go."""
    trackers: list[Slot[Literal["tracker"]]] = Field(default_factory=list)
    """Where each run is recorded."""
    named: dict[str, Slot[Literal["tracker"]]] = Field(default_factory=dict)
    """Trackers by name."""
    reporting: Reporting = Field(default_factory=Reporting)
    """Reporting settings."""
    repeats: int = Field(1, ge=1)
    """A plain field next to the slots."""


class LocalExecutor:
    def __init__(self, workers: int, registry: Any = None) -> None:
        self.workers = workers
        self.registry = registry


class GridPlugin:
    @hookimpl
    def thelper_register_components(self) -> list[ComponentInfo]:
        return [
            ComponentInfo("section", "grid", f"{__name__}:GridParams", GridParams,
                          description="a grid of runs"),
            ComponentInfo("executor", "fake_local", f"{__name__}:LocalExecutor", LocalParams,
                          aliases=("fake_pool",), description="worker processes"),
            ComponentInfo("executor", "fake_ray", f"{__name__}:LocalExecutor", RayParams),
            ComponentInfo("executor", "unimportable", f"{__name__}:LocalExecutor",
                          "thelper.params:NoSuchParamsModel"),
            ComponentInfo("tracker", "csv", f"{__name__}:LocalExecutor", CsvParams),
            ComponentInfo("tracker", "fake_mlflow", f"{__name__}:LocalExecutor"),
            ComponentInfo("annotator", "segmentation", f"{__name__}:LocalExecutor"),
        ]


@pytest.fixture(scope="module")
def registry() -> Registry:
    pm = ThelperPluginManager(autoload=False)
    pm.register(GridPlugin(), name="grid-plugin", distribution="grid-dist")
    assert pm.failures == []
    return pm.registry


def check(config: dict[str, Any], grid: Any, registry: Registry) -> tuple[Any, dict[str, str]]:
    config["grid"] = grid
    cfg, issues = check_document(document_from_dict(config), registry)
    return cfg, {i.path: i.message for i in issues}


class ShortParams(Params):
    """The short spelling, a bare string (which linters read as a forward reference)."""

    executor: Slot["executor"] | None = None  # noqa: F821, UP037


class Later(Params):
    """Refers to a model defined after it."""

    inner: Inner


class Inner(Params):
    """Holds the slot."""

    executor: Slot[Literal["executor"]]


# ------------------------------------------------------------------------ the slot type
def test_slot_classes_per_kind():
    executor = Slot["executor"]
    assert executor is Slot["executor"] is Slot[Literal["executor"]]
    assert issubclass(executor, Slot) and executor.kind == "executor"
    assert executor.__name__ == "ExecutorSlot" and Slot["data_writer"].__name__ == \
        "DataWriterSlot"
    with pytest.raises(TypeError, match="component kind"):
        Slot["not a kind"]
    with pytest.raises(TypeError, match="already the slot of kind 'executor'"):
        executor["tracker"]


def test_the_short_spelling_is_the_same_slot(registry):
    assert ShortParams.model_fields["executor"].annotation == Slot["executor"] | None
    swapped = section_model(registry, ShortParams)
    assert swapped.model_validate({"executor": {"type": "fake_pool"}}).executor.params == \
        LocalParams()


def test_models_defined_later_are_resolved(registry):
    later = section_model(registry, Later).model_validate({"inner": {"executor": {
        "type": "fake_local", "params": {"workers": 2}}}})
    assert later.inner.executor.params == LocalParams(workers=2)


def test_outside_a_config_a_slot_checks_its_shape_only():
    grid = GridParams.model_validate({"executor": {"type": "anything", "params": None}})
    assert isinstance(grid.executor, Slot["executor"])
    assert (grid.executor.type, grid.executor.params) == ("anything", {})
    with pytest.raises(ValueError, match="extra_forbidden|Extra inputs"):
        GridParams.model_validate({"executor": {"type": "x", "parms": {}}})


# ------------------------------------------------------------------- whole-config checks
def test_valid_section_with_slots(mlp_config, registry):
    cfg, issues = check(mlp_config, {
        "executor": {"type": "fake_pool", "params": {"workers": 3}},
        "trackers": [{"type": "csv", "params": {"path": "a.csv"}}, {"type": "fake_mlflow"}],
        "named": {"main": {"type": "csv"}},
        "reporting": {"annotator": {"type": "segmentation"}},
    }, registry)
    assert issues == {}
    grid = cfg.grid
    assert isinstance(grid, GridParams) and grid.repeats == 1
    assert isinstance(grid.executor, Slot["executor"])
    assert grid.executor.type == "fake_pool" and grid.executor.params == LocalParams(workers=3)
    assert [t.params for t in grid.trackers] == [CsvParams(path="a.csv"), Params()]
    assert all(isinstance(t, Slot["tracker"]) for t in grid.trackers)
    assert grid.named["main"].params == CsvParams()
    assert grid.reporting.annotator.type == "segmentation"
    built = grid.executor.build(registry, registry=registry)
    assert isinstance(built, LocalExecutor) and built.workers == 3
    assert built.registry is registry


def test_unknown_type_suggests_at_its_path(mlp_config, registry):
    _, issues = check(mlp_config, {
        "executor": {"type": "fake_locl"},
        "trackers": [{"type": "csv"}, {"type": "mlfow", "params": {}}],
        "named": {"x": {"type": "nothing_like_it"}},
        "reporting": {"annotator": {"type": "segmentaton"}},
    }, registry)
    assert issues == {
        "grid.executor.type":
            "'fake_locl' is not a registered executor; did you mean 'fake_local' (grid-dist)?",
        "grid.trackers.1.type":
            "'mlfow' is not a registered tracker; did you mean 'mlflow' (thelper-core), "
            "'fake_mlflow' (grid-dist)?",
        "grid.named.x.type":
            "'nothing_like_it' is not a registered tracker; registered trackers: csv, fake_mlflow, "
            "mlflow "
            "(see 'thelper plugins list')",
        "grid.reporting.annotator.type":
            "'segmentaton' is not a registered annotator; did you mean 'segmentation' "
            "(grid-dist)?",
    }


def test_bad_params_at_their_path(mlp_config, registry):
    _, issues = check(mlp_config, {
        "executor": {"type": "fake_local", "params": {"workers": 0}},
        "trackers": [{"type": "csv"}, {"type": "csv", "params": {"pth": "b.csv"}}],
        "named": {"y": {"type": "csv", "params": {"path": 3}}},
        "repeats": 0,
    }, registry)
    assert issues == {
        "grid.executor.params.workers": "Input should be greater than or equal to 1 (got 0)",
        "grid.trackers.1.params.pth": "unknown key 'pth'; did you mean 'path'?",
        "grid.named.y.params.path": "Input should be a valid string (got 3)",
        "grid.repeats": "Input should be greater than or equal to 1 (got 0)",
    }
    _, issues = check(mlp_config, {"executor": {"type": "fake_ray"}}, registry)
    assert list(issues) == ["grid.executor.params"]
    assert issues["grid.executor.params"].startswith("required key is missing")


def test_list_of_slots_and_malformed_slots(mlp_config, registry):
    _, issues = check(mlp_config, {"executor": {"type": "fake_ray", "params": {"address": "h:1"}},
                                   "trackers": [{"type": "csv"}, "fake_mlflow", {"params": {}}]},
                      registry)
    assert issues == {
        "grid.trackers.1": "expected a mapping with 'type' and 'params' for a tracker (got "
                           "'fake_mlflow'); write {type: fake_mlflow}",
        "grid.trackers.2": "missing 'type': name a registered tracker; registered trackers: "
                           "csv, fake_mlflow, mlflow (see 'thelper plugins list')",
    }
    _, issues = check(mlp_config, {"trackers": []}, registry)
    assert issues == {"grid.executor": "required key is missing (Where the runs go)"}


def test_a_component_whose_params_cannot_be_imported_fails_only_where_named(
        mlp_config, registry):
    cfg, issues = check(mlp_config, {"executor": {"type": "fake_local"}}, registry)
    assert issues == {} and cfg.grid.executor.params == LocalParams()
    _, issues = check(mlp_config, {"executor": {"type": "unimportable"}}, registry)
    message = issues["grid.executor.type"]
    assert message.startswith("executor 'unimportable' from grid-dist: cannot import its "
                              "params model 'thelper.params:NoSuchParamsModel'")
    assert "-p no:grid-plugin" in message


def test_section_models_are_swapped_once_per_registry(registry):
    swapped = section_model(registry, GridParams)
    assert swapped is section_model(registry, GridParams)
    assert issubclass(swapped, GridParams)
    assert swapped.model_fields["trackers"].description == "Where each run is recorded."
    assert section_model(registry, LocalParams) is LocalParams  # no slot: itself


def test_schema_lists_the_components_of_each_slot(registry):
    schema = session_schema(registry)
    assert schema["properties"]["grid"]["description"] == "a grid of runs"
    names = set(schema["$defs"])
    assert {"ExecutorSlot_fake_local", "ExecutorSlot_fake_ray", "TrackerSlot_csv",
            "TrackerSlot_fake_mlflow", "AnnotatorSlot_segmentation"} <= names
