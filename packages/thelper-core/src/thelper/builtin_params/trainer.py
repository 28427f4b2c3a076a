"""Params model of the ``default`` trainer.

Torch-free; see :mod:`thelper.builtin_params`.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.


from pydantic import Field

from thelper.params import Params

__all__ = ["DefaultTrainerParams"]


class DefaultTrainerParams(Params):
    """The generic supervised epoch loop."""

    grad_clip_norm: float | None = Field(default=None, gt=0.0)
    """Clip the global gradient norm to this value before each optimizer step."""
    log_every_n_steps: int = Field(default=20, ge=1)
    """Refresh the running loss in the progress bar every N steps (avoids a
    device-to-host sync at every step); under several ranks, also how often the ranks agree
    on a stop request."""
    find_unused_parameters: bool = False
    """Under several ranks: let ``DistributedDataParallel`` find parameters that a forward
    leaves unused (slower; for models with branches)."""
