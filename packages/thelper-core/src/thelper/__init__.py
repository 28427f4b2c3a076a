"""thelper: config-driven PyTorch training sessions with plugins.

The public API for plugin authors:

* :class:`~thelper.registry.ComponentInfo` and :class:`~thelper.params.Params`: describe
  components in ``thelper_register_components``.
* :data:`~thelper.plugins.hookimpl`: mark hook implementations.
* :class:`~thelper.tasks.Classification`: the classification task.
* :class:`~thelper.metrics.Metric`: base class of metrics.
* :mod:`thelper.exceptions`: errors with clear messages.

Importing :mod:`thelper` imports neither torch nor pydantic (nor ``importlib.metadata``:
``__version__`` is read on first access).
"""

from __future__ import annotations

__all__ = ["__version__", "hookimpl", "ComponentInfo", "Params"]


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("thelper-core")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout, no install
        return "0.0.0"


def __getattr__(name: str):  # lazy attributes keep `import thelper` light
    if name == "__version__":  # a metadata lookup: only the callers that read it pay for it
        version = _version()
        globals()["__version__"] = version
        return version
    if name == "hookimpl":
        from thelper.hookspecs import hookimpl

        return hookimpl
    if name == "ComponentInfo":
        from thelper.registry import ComponentInfo

        return ComponentInfo
    if name == "Params":  # imports pydantic
        from thelper.params import Params

        return Params
    raise AttributeError(f"module 'thelper' has no attribute {name!r}")
