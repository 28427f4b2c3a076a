"""thelper: config-driven PyTorch training sessions with plugins.

The public API for plugin authors:

* :class:`~thelper.registry.ComponentInfo` and :class:`~thelper.registry.Params`: describe
  components in ``thelper_register_components``.
* :data:`~thelper.plugins.hookimpl`: mark hook implementations.
* :class:`~thelper.tasks.Classification`: the classification task.
* :class:`~thelper.metrics.Metric`: base class of metrics.
* :mod:`thelper.exceptions`: errors with clear messages.

Importing :mod:`thelper` does not import torch.
"""

from __future__ import annotations

from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("thelper-core")
except _metadata.PackageNotFoundError:  # pragma: no cover - source checkout without install
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl", "ComponentInfo", "Params"]


def __getattr__(name: str):  # lazy re-exports keep `import thelper` light
    if name == "hookimpl":
        from thelper.plugins import hookimpl

        return hookimpl
    if name in ("ComponentInfo", "Params"):
        from thelper import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'thelper' has no attribute {name!r}")
