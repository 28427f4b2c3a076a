"""The import allow-list of the ``class_path`` escape hatch, checked without importing.

A config may name a class that no plugin registers by its import path, either explicitly
(``{type: torch_dataset, params: {class_path: torchvision.datasets.FakeData}}``) or, as in
thelper 0.6, directly as the type (``type: torchvision.datasets.CIFAR10``). Since importing a
module runs its code, only modules under an allowed prefix may be imported: ``torch``,
``torchvision``, ``thelper`` (and top-level packages named ``torch_*``, ``torchvision_*``,
``thelper_*``), plus the prefixes listed under ``imports.allow`` in the config.

This module is torch-free: ``thelper config validate`` checks the allow-list at schema depth.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable

__all__ = ["DEFAULT_IMPORT_PREFIXES", "IMPORT_PATH", "is_import_path", "split_import_path",
           "import_allowed", "allow_list_message", "top_level_installed"]

#: Module prefixes that may always be imported by path.
DEFAULT_IMPORT_PREFIXES: tuple[str, ...] = ("torch", "torchvision", "thelper")

#: ``package.module.Name`` or ``package.module:Name`` (at least one module part).
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*[.:][A-Za-z_]\w*$")


def is_import_path(text: object) -> bool:
    """True for ``package.module.Name`` / ``package.module:Name`` strings."""
    return isinstance(text, str) and bool(IMPORT_PATH.match(text))


def split_import_path(path: str) -> tuple[str, str]:
    """``(module, attribute)`` of an import path."""
    if ":" in path:
        module, attr = path.split(":", 1)
        return module, attr
    module, _, attr = path.rpartition(".")
    return module, attr


def import_allowed(path: str, allow: Iterable[str] = ()) -> bool:
    """Whether the module of ``path`` is under an allowed prefix (same rule as at run time)."""
    module, _ = split_import_path(path)
    root = module.split(".")[0]
    for prefix in (*DEFAULT_IMPORT_PREFIXES, *allow):
        if not isinstance(prefix, str) or not prefix:
            continue
        if module == prefix or module.startswith(prefix + "."):
            return True
        if prefix in DEFAULT_IMPORT_PREFIXES and root.startswith(prefix + "_"):
            return True
    return False


def allow_list_message(path: str, allow: Iterable[str] = ()) -> str:
    """Why ``path`` is refused and how to allow it."""
    module, _ = split_import_path(path)
    root = module.split(".")[0]
    prefixes = ", ".join([*DEFAULT_IMPORT_PREFIXES, *[str(a) for a in allow]])
    return (f"module {module!r} is not in the import allow-list ({prefixes}); importing runs "
            f"its code, so allow it explicitly: add 'imports: {{allow: [{root}]}}' to the "
            "config (or install a plugin that registers the class)")


def top_level_installed(path: str) -> bool:
    """Whether the top-level package of ``path`` can be found (nothing is imported)."""
    root = split_import_path(path)[0].split(".")[0]
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False
