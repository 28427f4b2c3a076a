"""The faster field-docstring extraction gives pydantic's own result for every model."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel
from pydantic._internal import _docs_extraction

from thelper import _fastdocs
from thelper.config import models
from thelper.plugins import get_plugin_manager


def _models() -> list[type[BaseModel]]:
    out = {c.params_model for c in get_plugin_manager().registry.components()}
    out |= {m for _, m in inspect.getmembers(models, inspect.isclass)
            if issubclass(m, BaseModel) and m.__module__ == models.__name__}
    return sorted(out, key=lambda m: (m.__module__, m.__qualname__))


@pytest.mark.parametrize("model", _models(), ids=lambda m: f"{m.__module__}.{m.__qualname__}")
def test_same_docstrings_as_pydantic(model):
    expected = _docs_extraction.extract_docstrings_from_cls(model, use_inspect=True)
    assert _fastdocs.extract_docstrings(model) == expected


def test_classes_without_source_fall_back(monkeypatch):
    calls = []
    monkeypatch.setattr(_fastdocs, "_ORIGINAL", lambda cls, use_inspect=False: calls.append(
        cls) or {})

    def make():
        class Local(BaseModel):
            x: int = 1
            """doc"""
        return Local

    local = make()
    assert _fastdocs.extract_docstrings(local) == {}
    assert calls == [local]


def test_install_is_idempotent_and_reversible():
    from pydantic._internal import _fields

    assert _fastdocs.install() and _fastdocs.install()
    assert _fields.extract_docstrings_from_cls is _fastdocs.extract_docstrings
    _fastdocs.uninstall()
    assert _fields.extract_docstrings_from_cls is _docs_extraction.extract_docstrings_from_cls
    _fastdocs.install()
