"""The import allow-list of the ``class_path`` escape hatch, checked without importing.

A config may name a class that no plugin registers by its import path, either explicitly
(``{type: torch_dataset, params: {class_path: torchvision.datasets.FakeData}}``) or, as in
thelper 0.6, directly as the type (``type: torchvision.datasets.CIFAR10``). Since importing a
module runs its code, only modules under an allowed prefix may be imported: ``torch``,
``torchvision``, ``thelper`` (and top-level packages named ``torch_*``, ``torchvision_*``,
``thelper_*``), plus the prefixes listed under ``imports.allow`` in the config.

A config is data that may come from a stranger, so two more rules hold:

- ``imports.allow`` in a file (or in a checkpoint's stored config) takes effect only when the
  command line confirms each entry with ``--allow-import MODULE`` (:func:`confirm_imports`);
- callables and classes that load or execute code (``torch.hub``, ``torch.load``,
  ``pickle``, ``eval``/``exec``, ``subprocess``, ``os``, data sets that unpickle their files,
  private names...) are never importable from a config, whatever the allow-list
  (:func:`import_denied`).

This module is torch-free: ``thelper config validate`` checks the allow-list at schema depth.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable

__all__ = ["DEFAULT_IMPORT_PREFIXES", "DENIED_MODULES", "DENIED_NAMES", "DENIED_OBJECTS",
           "IMPORT_PATH", "is_import_path", "split_import_path", "import_allowed",
           "import_denied", "allow_list_message", "top_level_installed", "confirm_imports",
           "covered_by"]

#: Module prefixes that may always be imported by path.
DEFAULT_IMPORT_PREFIXES: tuple[str, ...] = ("torch", "torchvision", "thelper")

#: Modules (and their submodules) never importable from a config: they load, compile or run
#: code, spawn processes, or touch files and sockets outside a data set's reach.
DENIED_MODULES: tuple[str, ...] = (
    "os", "posix", "nt", "sys", "subprocess", "builtins", "importlib", "pkgutil", "runpy",
    "code", "codeop", "pickle", "_pickle", "pickletools", "copyreg", "shelve", "marshal",
    "dill", "cloudpickle", "joblib", "ctypes", "cffi", "shutil", "socket", "pty", "signal",
    "multiprocessing", "concurrent", "threading", "asyncio", "webbrowser", "tempfile",
    "torch.hub", "torch.package", "torch.serialization", "torch.jit", "torch.utils.cpp_extension",
    "torch.utils.model_zoo", "torch.utils.data.datapipes", "torch.distributed",
    "torch.multiprocessing", "torch.ops", "torch.classes", "torch.library", "torch.compiler",
    "torch.export", "torch.onnx", "torch.fx", "torch.testing", "torch.backends",
    "torchvision.io", "torchvision.models",
)

#: Attribute names never importable, in any module: loaders and evaluators of code.
DENIED_NAMES: frozenset[str] = frozenset({
    "load", "loads", "load_library", "load_inline", "load_state_dict_from_url", "load_url",
    "load_file", "eval", "exec", "compile", "system", "popen", "spawn", "import_module",
    "__import__", "getattr", "setattr", "open",
})

#: Classes that unpickle files they find under their ``root`` (``pickle.load``): a planted
#: file would run code. Checked by exact import path (both spellings).
DENIED_OBJECTS: frozenset[str] = frozenset({
    "torchvision.datasets.CIFAR10", "torchvision.datasets.CIFAR100",
    "torchvision.datasets.cifar.CIFAR10", "torchvision.datasets.cifar.CIFAR100",
    "torchvision.datasets.LSUN", "torchvision.datasets.LSUNClass",
    "torchvision.datasets.lsun.LSUN", "torchvision.datasets.lsun.LSUNClass",
    # the import adapter itself: nested, it would import under an allow-list of its params
    "thelper.data.datasets.TorchDatasetAdapter", "thelper.data.TorchDatasetAdapter",
})

_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

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


def covered_by(module: str, prefixes: Iterable[str]) -> bool:
    """Whether ``module`` equals one of ``prefixes`` or is a submodule of one."""
    return any(isinstance(p, str) and p and (module == p or module.startswith(p + "."))
               for p in prefixes)


def import_denied(path: str) -> str | None:
    """Why ``path`` may never be imported from a config, or ``None``.

    Denied whatever the allow-list: modules of :data:`DENIED_MODULES` and their submodules,
    private modules or names (a part starting with ``_``), the names of
    :data:`DENIED_NAMES` (``load``, ``eval``...) and the classes of :data:`DENIED_OBJECTS`.
    """
    module, attr = split_import_path(path)
    parts = module.split(".")
    dotted = f"{module}.{attr}"
    if covered_by(module, DENIED_MODULES):
        hit = next(p for p in DENIED_MODULES if module == p or module.startswith(p + "."))
        return (f"module {hit!r} loads or runs code (or touches processes, files or sockets); "
                "it is never importable from a config")
    if any(p.startswith("_") for p in parts) or attr.startswith("_"):
        return ("module or name is private (starts with '_'); private names are never "
                "importable from a config")
    if attr.lower() in DENIED_NAMES:
        return (f"name {attr!r} loads or evaluates code or files; such callables are never "
                "importable from a config")
    if dotted in DENIED_OBJECTS and attr == "TorchDatasetAdapter":
        return ("class is the import adapter itself: nested, it would import under an "
                "allow-list of its own params; it is never importable from a config (name "
                "the data set class directly)")
    if dotted in DENIED_OBJECTS:
        return ("class unpickles the files it finds under its root (pickle runs code); it is "
                "never importable from a config: convert the data to a safe format (e.g. "
                "'thelper split' to HDF5)")
    return None


def import_allowed(path: str, allow: Iterable[str] = ()) -> bool:
    """Whether ``path`` may be imported: not denied (:func:`import_denied`) and its module is
    under an allowed prefix (same rule at schema depth and at run time)."""
    if import_denied(path) is not None:
        return False
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
    """Why ``path`` is refused and how to allow it (when it can be)."""
    denied = import_denied(path)
    if denied is not None:
        return denied
    module, _ = split_import_path(path)
    root = module.split(".")[0]
    prefixes = ", ".join([*DEFAULT_IMPORT_PREFIXES, *[str(a) for a in allow]])
    return (f"module {module!r} is not in the import allow-list ({prefixes}); importing runs "
            f"its code, so allow it on the command line: --allow-import {root} (or install "
            "a plugin that registers the class)")


def confirm_imports(allow: object, confirmed: Iterable[str]) -> tuple[list[str], list[int]]:
    """Check a config's ``imports.allow`` against the command line's ``--allow-import``.

    A file or a checkpoint may come from a stranger: what it adds to the allow-list counts only
    when the person running the command confirms it.

    Args:
        allow: The config's ``imports.allow`` value (a list of module names, or anything).
        confirmed: The ``--allow-import`` modules of this invocation.

    Returns:
        ``(effective, unconfirmed)``: the allow-list to use (the config's entries plus the
        confirmed modules, in order, without duplicates) and the indices of the config entries
        that no ``--allow-import`` covers.
    """
    confirmed = [c for c in confirmed if isinstance(c, str) and c]
    entries = list(allow) if isinstance(allow, list) else []
    unconfirmed = [i for i, e in enumerate(entries)  # malformed names: the schema says so
                   if isinstance(e, str) and _MODULE.match(e) and not covered_by(e, confirmed)]
    effective: list[str] = []
    for item in [*entries, *confirmed]:
        if item not in effective:
            effective.append(item)
    return effective, unconfirmed


def top_level_installed(path: str) -> bool:
    """Whether the top-level package of ``path`` can be found (nothing is imported)."""
    root = split_import_path(path)[0].split(".")[0]
    try:
        return importlib.util.find_spec(root) is not None
    except (ImportError, ValueError):
        return False
