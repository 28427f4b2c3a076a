"""The base class of every params model.

Kept apart from :mod:`thelper.registry` so that registering components, listing plugins and
printing ``--help`` never import pydantic: a plugin names its params models with lazy
``"package.module:Attr"`` strings, and this module (with pydantic) is only imported when a
config is validated, a schema is written or a component is built.

Example:
    >>> from pydantic import Field
    >>> from thelper.params import Params
    >>> class ScaleParams(Params):
    ...     factor: float = Field(1.0, gt=0)
    >>> ScaleParams(factor=2.0).factor
    2.0
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from thelper import _fastdocs

__all__ = ["Params", "unique_class_names"]

_fastdocs.install()  # field docstrings of every params model, without pydantic's frame walk


class Params(BaseModel):
    """Base class of every params model: unknown keys are errors.

    Subclass it and declare each constructor argument as a field with a docstring; the
    docstrings become descriptions in ``thelper config schema``.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, defer_build=True)


def unique_class_names(value: list[str]) -> list[str]:
    """``value`` unchanged; a ``class_names`` field validator shared by the task params models
    of the core and the plugins.

    Raises:
        ValueError: A class name appears more than once (names them).
    """
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
    return value
