"""Lazy re-exports for packages that keep their members in several submodules (no imports).

Used by :mod:`thelper.builtin_params` and ``thelper_vision.dense_params``: their params models
live in one module per component kind or task family, so that ``thelper config validate``
builds only those a config uses, while ``from package import Name`` keeps working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: dict[str, str], module_globals: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module-level ``__getattr__`` and ``__dir__`` that import a name's module on first use.

    Args:
        package: The package's ``__name__``.
        where: ``{name: module}``; a module without a dot is taken relative to ``package``
            (``"optim"`` -> ``package.optim``), one with dots as absolute.
        module_globals: The package's ``globals()`` (listed by ``__dir__``).

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package. ``__getattr__`` raises
        ``AttributeError`` for a name that ``where`` does not list.
    """

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        path = module if "." in module else f"{package}.{module}"
        return getattr(importlib.import_module(path), name)

    def __dir__() -> list[str]:
        return sorted({*module_globals, *where})

    return __getattr__, __dir__
