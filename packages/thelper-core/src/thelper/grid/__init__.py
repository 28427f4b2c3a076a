"""Grids of experiments: ``thelper grid plan | validate | run | test | report``.

A grid file varies a base session config; every experiment is a normal session in the
grid's directory, named by the hash of its resolved config. See ``docs/commands/grid.md``.

Example:
    >>> from thelper.grid import plan_grid
    >>> from thelper.plugins import get_plugin_manager
    >>> plan = plan_grid("examples/digits-grid/grid.yaml",
    ...                  get_plugin_manager().registry)  # doctest: +SKIP
    >>> [e.id for e in plan.experiments]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["Experiment", "GridPlan", "load_grid", "plan_grid"]


def __getattr__(name: str) -> Any:
    # lazy: every thelper command imports thelper.grid.commands (the CLI hook), and the plan
    # module imports pydantic and the config layer
    if name in __all__:
        from thelper.grid import plan

        return getattr(plan, name)
    raise AttributeError(f"module 'thelper.grid' has no attribute {name!r}")
