"""Session configuration: reading, composing, overriding and validating.

:class:`Slot` is the public ``{type, params}`` field type for plugins' own config sections.

Example:
    >>> from thelper.config import load_config, validate_document
    >>> from thelper.plugins import get_plugin_manager
    >>> doc = load_config("config.yaml", sets=["trainer.epochs=3"])  # doctest: +SKIP
    >>> doc = load_config(["base.yaml", "model/cnn.yaml"], groups=["data=coins"])  # doctest: +SKIP
    >>> cfg = validate_document(doc, get_plugin_manager().registry)  # doctest: +SKIP
"""

from thelper import _fastdocs

_fastdocs.install()  # before the models below read their field docstrings

from thelper.config.models import SessionConfig  # noqa: E402
from thelper.config.slots import Slot  # noqa: E402
from thelper.config.source import (  # noqa: E402
    ConfigDocument,
    apply_overrides,
    document_from_dict,
    load_config,
)
from thelper.config.validate import check_document, format_issues, validate_document  # noqa: E402

__all__ = [
    "ConfigDocument",
    "SessionConfig",
    "Slot",
    "apply_overrides",
    "check_document",
    "config_hash",
    "document_from_dict",
    "format_issues",
    "load_config",
    "validate_document",
]


def __getattr__(name: str) -> object:
    # thelper.config.compose is imported when a config composes (bases, several files,
    # groups, interpolation) or a run is recorded: a plain config validates without it.
    if name == "config_hash":
        from thelper.config.compose import config_hash

        return config_hash
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
