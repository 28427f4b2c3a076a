"""Faster field-docstring extraction for pydantic models (``use_attribute_docstrings``).

thelper's config models and every plugin's params model read their field docstrings, which
become the descriptions of ``thelper config schema``. On Python < 3.13 pydantic finds each
class's source by walking the interpreter frames, calling ``inspect.getmodule`` on each and
re-tokenising the class body: about 3-5 ms per class, a third of ``thelper config
validate``'s start-up for the ~100 models of the core and first-party plugins.

:func:`install` replaces that step by one that parses each module's source once (cached) and
reads the class body from the syntax tree; the result is the same mapping of attribute names
to docstrings. Anything unusual (classes defined in functions, classes without a source
file, ambiguous names) falls back to pydantic's own implementation, and so does any error.
Installing twice is harmless; :func:`uninstall` restores pydantic's function.
"""

from __future__ import annotations

import ast
import os
import sys
from functools import lru_cache
from typing import Any

__all__ = ["install", "uninstall", "extract_docstrings"]

_ORIGINAL: Any = None


@lru_cache(maxsize=256)
def _tree(path: str, mtime: float) -> ast.Module | None:
    try:
        with open(path, "rb") as f:
            return ast.parse(f.read(), filename=path)
    except (OSError, SyntaxError, ValueError):
        return None


def _class_node(cls: type[Any]) -> ast.ClassDef | None:
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not path or not path.endswith(".py") or "<locals>" in cls.__qualname__:
        return None
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return None
    tree = _tree(path, mtime)
    if tree is None:
        return None
    body: list[ast.stmt] = tree.body
    node: ast.ClassDef | None = None
    for part in cls.__qualname__.split("."):
        matches = [n for n in body if isinstance(n, ast.ClassDef) and n.name == part]
        if len(matches) != 1:  # missing (made by create_model) or defined twice: ambiguous
            return None
        node = matches[0]
        body = node.body
    return node


def extract_docstrings(cls: type[Any], use_inspect: bool = False) -> dict[str, str]:
    """``{attribute: docstring}`` of ``cls`` (same result as pydantic's extraction)."""
    try:
        node = _class_node(cls)
        if node is not None:
            from pydantic._internal._docs_extraction import DocstringVisitor

            visitor = DocstringVisitor()
            visitor.generic_visit(node)
            return visitor.attrs
    except Exception:  # noqa: BLE001 - never break model creation: use pydantic's way
        pass
    return _ORIGINAL(cls, use_inspect)


def install() -> bool:
    """Use :func:`extract_docstrings` for every pydantic model created from now on.

    Returns:
        ``True`` when installed, ``False`` when this pydantic version does not have the
        expected internals (nothing is changed then).
    """
    global _ORIGINAL
    try:
        from pydantic._internal import _fields
    except ImportError:  # pragma: no cover - pydantic layout changed
        return False
    current = getattr(_fields, "extract_docstrings_from_cls", None)
    if current is None:  # pragma: no cover
        return False
    if current is not extract_docstrings:
        _ORIGINAL = current
        _fields.extract_docstrings_from_cls = extract_docstrings
    return True


def uninstall() -> None:
    """Restore pydantic's own docstring extraction."""
    if _ORIGINAL is None:
        return
    from pydantic._internal import _fields

    if _fields.extract_docstrings_from_cls is extract_docstrings:
        _fields.extract_docstrings_from_cls = _ORIGINAL
