"""Image metrics: segmentation (pixel accuracy, mIoU) and image quality (PSNR, SSIM).

They follow :class:`thelper.metrics.Metric`: ``update`` accumulates on the device without
host synchronisation, ``compute`` reduces once per epoch. What they accumulate is declared
with :meth:`~thelper.metrics.Metric.add_state` (all ``"sum"`` states), so the base class
resets them, checkpoints them and :func:`thelper.metrics.merge_states` reduces them across
ranks.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from thelper.metrics import Metric, Report
from thelper_vision.tasks import model_output

__all__ = ["SegmentationConfusion", "PixelAccuracy", "MeanIoU", "PSNR", "SSIM", "ssim"]


class SegmentationConfusion(Metric):
    """Pixel confusion matrix ``M[i, j]`` (true class ``i``, predicted ``j``), accumulated
    on the device with ``index_add_`` (no host synchronisation); pixels whose target is
    the task's ``ignore_index`` (or outside ``0..K-1``) are skipped.

    Args:
        task: A task with ``class_names`` (and optionally ``ignore_index``).
    """

    def __init__(self, task: Any = None) -> None:
        names = getattr(task, "class_names", None)
        if not names:
            raise ValueError("this metric needs a task with class names (segmentation)")
        self.class_names = list(names)
        # (K * K,) int64, created on the logits' device by the first update
        self.add_state("_counts", None, "sum")

    def update(self, outputs: Any, targets: torch.Tensor) -> None:
        logits = model_output(outputs)
        k = len(self.class_names)
        preds = logits.argmax(dim=1) if logits.ndim == targets.ndim + 1 else logits
        valid = (targets >= 0) & (targets < k)
        idx = targets.clamp(0, k - 1).long() * k + preds.long()
        if self._counts is None:
            self._counts = torch.zeros(k * k, dtype=torch.int64, device=logits.device)
        elif self._counts.device != logits.device:  # e.g. restored from a CPU checkpoint
            self._counts = self._counts.to(logits.device)
        self._counts.index_add_(0, idx.reshape(-1), valid.reshape(-1).long())

    @property
    def matrix(self) -> torch.Tensor:
        """Counts ``(K, K)`` int64 on the CPU."""
        k = len(self.class_names)
        if self._counts is None:
            return torch.zeros(k, k, dtype=torch.int64)
        return self._counts.reshape(k, k).cpu()

    def iou(self) -> torch.Tensor:
        """IoU of each class, ``TP / (TP + FP + FN)``; NaN for classes absent from both the
        targets and the predictions."""
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, math.nan))


class PixelAccuracy(SegmentationConfusion):
    """Pixel accuracy: correctly classified pixels / pixels, ignoring ``ignore_index``
    pixels; in ``[0, 1]``, higher is better. (Long, Shelhamer & Darrell, "Fully
    Convolutional Networks for Semantic Segmentation", CVPR 2015, section 5.)"""

    goal = "max"

    def compute(self) -> float | None:
        m = self.matrix
        total = int(m.sum())
        return float(m.diag().sum()) / total if total else None


class MeanIoU(SegmentationConfusion):
    """Mean intersection over union (mIoU, the Jaccard index averaged over classes).

    ``IoU_c = TP_c / (TP_c + FP_c + FN_c)`` from the pixel confusion matrix of the whole
    split (not averaged per image); the mean is over classes present in the targets or the
    predictions (as in Long et al., CVPR 2015, and the PASCAL VOC evaluation). Pixels equal
    to ``ignore_index`` are skipped. In ``[0, 1]``, higher is better.

    The report writes ``<stem>.csv``: the IoU and pixel count of each class.
    """

    goal = "max"

    def compute(self) -> float | None:
        iou = self.iou()
        present = ~torch.isnan(iou)
        return float(iou[present].mean()) if bool(present.any()) else None

    def report(self, out_dir: Path, stem: str) -> Report | None:
        if self._counts is None:
            return None
        iou = self.iou()
        support = self.matrix.sum(1)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{stem}.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["class", "iou", "pixels"])
            for name, v, n in zip(self.class_names, iou.tolist(), support.tolist(), strict=True):
                w.writerow([name, "" if math.isnan(v) else f"{v:.6f}", int(n)])
        return Report([path])


# ------------------------------------------------------------------------- image quality
def _shave(x: torch.Tensor, border: int) -> torch.Tensor:
    return x[..., border:-border, border:-border] if border > 0 else x


class PSNR(Metric):
    """Peak signal-to-noise ratio in dB, averaged over images; higher is better.

    ``PSNR = 10 log10(R² / MSE)`` per image, with ``R`` the data range (1 for images in
    ``[0, 1]``) and ``MSE`` over all channels and pixels of that image; the split's value is
    the mean over images (the usual super-resolution protocol; scikit-image's
    ``peak_signal_noise_ratio`` per image). ``border`` pixels are shaved from each side
    first (super-resolution papers shave the scale factor). An exact reconstruction gives
    ``10 log10(R² / 1e-10)``.

    Args:
        data_range: ``R``, the intensity range.
        border: Pixels removed from each side before comparing.
    """

    goal = "max"

    def __init__(self, data_range: float = 1.0, border: int = 0, task: Any = None) -> None:
        self.data_range = float(data_range)
        self.border = int(border)
        self.add_state("_sum", 0.0, "sum")  # float64 tensor on the device once updated
        self.add_state("_count", 0, "sum")  # images (a host int: shapes need no sync)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        o = _shave(outputs.float(), self.border)
        t = _shave(targets.float(), self.border)
        mse = (o - t).square().reshape(o.shape[0], -1).mean(dim=1).clamp(min=1e-10)
        psnr = 10 * torch.log10(self.data_range ** 2 / mse)
        self._sum = self._sum + psnr.sum(dtype=torch.float64)
        self._count += int(o.shape[0])

    def compute(self) -> float | None:
        return float(self._sum) / self._count if self._count else None


def _gaussian_window(size: int, sigma: float, device: Any, dtype: Any) -> torch.Tensor:
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-coords.square() / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, window: int = 11,
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity of each image pair, ``(N,)``.

    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13(4), 2004: local means, variances and covariance
    under an ``window x window`` Gaussian window of standard deviation ``sigma``;
    ``SSIM = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2))`` with
    ``C1 = (k1 R)²``, ``C2 = (k2 R)²``; averaged over the valid (unpadded) positions and the
    channels. Equal to scikit-image's ``structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=R)``.

    Args:
        x: Images ``(N, C, H, W)``, ``H, W >= window``.
        y: Images of the same shape.
        data_range: ``R``.
        window: Window size (odd).
        sigma: Gaussian standard deviation, pixels.
        k1: Stabilising constant of the luminance term.
        k2: Stabilising constant of the contrast term.
    """
    x = x.double() if x.dtype == torch.float64 else x.float()
    y = y.to(x.dtype)
    c = x.shape[1]
    w = _gaussian_window(window, sigma, x.device, x.dtype).expand(c, 1, window, window)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, w, groups=c)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(s.shape[0], -1).mean(dim=1)


class SSIM(Metric):
    """Structural similarity index (SSIM), averaged over images; in ``[-1, 1]``, higher is
    better. Definition and constants in :func:`ssim` (Wang et al., IEEE TIP 2004).

    Args:
        data_range: Intensity range ``R``.
        border: Pixels removed from each side before comparing.
        window: Gaussian window size (odd).
        sigma: Gaussian standard deviation in pixels.
    """

    goal = "max"

    def __init__(self, data_range: float = 1.0, border: int = 0, window: int = 11,
                 sigma: float = 1.5, task: Any = None) -> None:
        self.data_range = float(data_range)
        self.border = int(border)
        self.window = int(window)
        self.sigma = float(sigma)
        self.add_state("_sum", 0.0, "sum")  # float64 tensor on the device once updated
        self.add_state("_count", 0, "sum")  # images (a host int: shapes need no sync)

    def update(self, outputs: torch.Tensor, targets: torch.Tensor) -> None:
        o = _shave(outputs, self.border)
        t = _shave(targets, self.border)
        values = ssim(o, t, self.data_range, self.window, self.sigma)
        self._sum = self._sum + values.sum(dtype=torch.float64)
        self._count += int(o.shape[0])

    def compute(self) -> float | None:
        return float(self._sum) / self._count if self._count else None
