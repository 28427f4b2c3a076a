"""Params model of the core's ``mlp`` model.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.


from pydantic import Field

from thelper.params import Params

__all__ = ["MLPParams"]


class MLPParams(Params):
    """A multi-layer perceptron for flat feature vectors."""

    in_features: int = Field(ge=1)
    """Size of each input vector."""
    hidden: list[int] = Field(default_factory=lambda: [64])
    """Width of each hidden layer."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout probability after each hidden layer."""
