"""Params model of components that take no params.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.



from thelper.params import Params

__all__ = ["NoParams"]


class NoParams(Params):
    """This component takes no params."""
