"""The ``example_rbf_net`` model: a radial basis function network."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

__all__ = ["RBFNet"]


class RBFNet(nn.Module):
    """Radial basis function network (Broomhead & Lowe, 1988) with learned centres.

    Each of ``K`` hidden units responds to the distance between the input and its centre
    ``c_k``: ``phi_k(x) = exp(-||x - c_k||^2 / (2 sigma_k^2))``. A linear layer maps the ``K``
    responses to the task's ``C`` logits. Centres, widths ``sigma_k`` (kept positive through
    their logarithm) and the head are trained by back-propagation. Small and smooth, it
    suits low-dimensional inputs such as the two moons.

    Args:
        in_features: Features per sample ``F``.
        num_centers: Number of units ``K``.
        init_range: Centres start uniformly in ``[-init_range, init_range]^F``.
        init_width: Initial width ``sigma`` of every unit.
        learn_widths: Train the widths (else they stay at ``init_width``).
        task: The session's classification task; the head has ``task.num_classes`` outputs.

    Raises:
        ValueError: ``task`` has no ``num_classes`` (not a classification task).

    Shapes:
        input ``(N, F)`` float32 (trailing dimensions are flattened) → logits ``(N, C)``.
    """

    def __init__(
        self,
        in_features: int = 2,
        num_centers: int = 16,
        init_range: float = 2.0,
        init_width: float = 0.5,
        learn_widths: bool = True,
        task: Any = None,
    ) -> None:
        super().__init__()
        num_classes = getattr(task, "num_classes", None)
        if num_classes is None:
            raise ValueError(
                "example_rbf_net needs a classification task (class names) to "
                f"size its head; got task {task!r}"
            )
        self.in_features = in_features
        self.centers = nn.Parameter((torch.rand(num_centers, in_features) * 2 - 1) * init_range)
        log_width = torch.full((num_centers,), math.log(init_width))
        self.log_widths = nn.Parameter(log_width, requires_grad=learn_widths)
        self.head = nn.Linear(num_centers, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Unit responses ``(N, K)`` in ``(0, 1]`` for inputs ``(N, F)``."""
        x = x.flatten(1)
        # (N, 1, F) - (1, K, F) -> (N, K); cheaper than torch.cdist's backward for small F
        sq_dist = (x.unsqueeze(1) - self.centers.unsqueeze(0)).pow(2).sum(dim=-1)
        return torch.exp(-sq_dist / (2 * torch.exp(2 * self.log_widths)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def extra_repr(self) -> str:
        k, f = self.centers.shape
        return f"in_features={f}, num_centers={k}, learn_widths={self.log_widths.requires_grad}"
