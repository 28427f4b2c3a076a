"""Session configuration: reading, overriding and validating.

:class:`Slot` is the public ``{type, params}`` field type for plugins' own config sections.

Example:
    >>> from thelper.config import load_config, validate_document
    >>> from thelper.plugins import get_plugin_manager
    >>> doc = load_config("config.yaml", sets=["trainer.epochs=3"])  # doctest: +SKIP
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
    "document_from_dict",
    "format_issues",
    "load_config",
    "validate_document",
]
