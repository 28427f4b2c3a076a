"""``r2``: the coefficient of determination of regression outputs (scalar or per pixel)."""

from __future__ import annotations

from typing import Any

import torch

from thelper.metrics import Metric

__all__ = ["R2"]


class R2(Metric):
    """Coefficient of determination ``R² = 1 - SS_res / SS_tot`` over every predicted value
    of the split (all samples, pixels and outputs pooled), higher is better; 1 is perfect, 0
    is the mean-of-targets baseline. Same definition as scikit-learn's ``r2_score`` on the
    flattened values. Sums accumulate in float64 (``SS_tot`` from the sums of ``y`` and
    ``y²``), reduced once per epoch. Targets that are NaN are skipped.
    """

    goal = "max"

    def __init__(self, task: Any = None) -> None:
        for name in ("_n", "_sy", "_syy", "_sres"):
            self.add_state(name, 0.0, "sum")

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        o = outputs.reshape(-1).double()
        t = targets.reshape(-1).to(o.device, torch.float64)
        if o.numel() != t.numel():
            o = o.expand_as(t) if o.numel() == 1 else o
        ok = torch.isfinite(t)
        o, t = o[ok], t[ok]
        self._n = self._n + t.numel()
        self._sy = self._sy + t.sum()
        self._syy = self._syy + t.square().sum()
        self._sres = self._sres + (o - t).square().sum()

    def compute(self) -> float | None:
        n = float(self._n)
        if n == 0:
            return None
        sy, syy = float(self._sy), float(self._syy)
        ss_tot = syy - sy * sy / n
        return None if ss_tot <= 0 else 1.0 - float(self._sres) / ss_tot
