"""Drawing helpers: masks and boxes over images, grids and PNG files.

Images are ``(C, H, W)`` tensors; what is drawn is RGB uint8 ``(3, H, W)``. Built on
``torchvision.utils`` (``draw_segmentation_masks``, ``draw_bounding_boxes``, ``make_grid``)
and Pillow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["to_rgb_uint8", "colorize", "overlay_mask", "draw_boxes", "grid", "save_png",
           "save_index_png", "figure_of"]


def to_rgb_uint8(image: torch.Tensor) -> torch.Tensor:
    """Displayable RGB uint8 ``(3, H, W)`` from an image ``(C, H, W)``.

    uint8 images are used as they are; float images in ``[0, 1]`` are scaled by 255; other
    float images (e.g. normalised) are min-max stretched to ``[0, 255]``. One channel is
    repeated three times; more than three channels keep the first three.
    """
    x = image.detach().cpu()
    if x.ndim == 2:
        x = x[None]
    if x.dtype != torch.uint8:
        x = x.float()
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            x = (x - lo) / max(hi - lo, 1e-12)
        x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[:3].contiguous()


def colorize(mask: torch.Tensor, palette: Sequence[Sequence[int]],
             ignore_index: int | None = None) -> torch.Tensor:
    """RGB uint8 ``(3, H, W)`` of a class-index mask ``(H, W)``; ignored pixels are white,
    other out-of-range values black."""
    m = mask.detach().cpu().long()
    lut = torch.zeros(256, 3, dtype=torch.uint8)
    for i, rgb in enumerate(palette[:256]):
        lut[i] = torch.tensor(rgb[:3], dtype=torch.uint8)
    if ignore_index is not None and 0 <= ignore_index < 256:
        lut[ignore_index] = 255
    return lut[m.clamp(0, 255)].permute(2, 0, 1).contiguous()


def overlay_mask(image: torch.Tensor, mask: torch.Tensor, palette: Sequence[Sequence[int]],
                 alpha: float = 0.5, skip_background: bool = True) -> torch.Tensor:
    """An image with the classes of ``mask`` ``(H, W)`` painted over it (``alpha``
    opacity); class 0 is left unpainted when ``skip_background``."""
    from torchvision.utils import draw_segmentation_masks

    rgb = to_rgb_uint8(image)
    m = mask.detach().cpu().long()
    first = 1 if skip_background else 0
    classes = list(range(first, len(palette)))
    if not classes:
        return rgb
    masks = torch.stack([m == c for c in classes])
    colors = [tuple(int(v) for v in palette[c][:3]) for c in classes]
    return draw_segmentation_masks(rgb, masks, alpha=alpha, colors=colors)


def draw_boxes(image: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor | None = None,
               class_names: Sequence[str] | None = None,
               palette: Sequence[Sequence[int]] | None = None,
               scores: torch.Tensor | None = None, width: int | None = 2,
               color: Sequence[int] | None = None, scaled: bool = False) -> torch.Tensor:
    """An image with XYXY ``boxes`` ``(K, 4)`` drawn over it, captioned with class names
    (and scores); colours from ``palette`` by label, or one ``color`` for all. With
    ``scaled``, the caption font and (when ``width`` is None) the line width follow the
    image's size (:func:`label_font`)."""
    from torchvision.utils import draw_bounding_boxes

    rgb = to_rgb_uint8(image)
    b = boxes.detach().cpu().float().reshape(-1, 4)
    if b.shape[0] == 0:
        return rgb
    lab = labels.detach().cpu().long().reshape(-1) if labels is not None else None
    captions = None
    if lab is not None and class_names is not None:
        captions = [class_names[int(i)] if 0 <= int(i) < len(class_names) else str(int(i))
                    for i in lab]
        if scores is not None:
            captions = [f"{c} {float(s):.2f}" for c, s in zip(captions, scores.cpu(),
                                                                strict=True)]
    if color is not None:
        colors: Any = [tuple(int(v) for v in color[:3])] * b.shape[0]
    elif palette is not None and lab is not None:
        colors = [tuple(int(v) for v in palette[int(i) % len(palette)][:3]) for i in lab]
    else:
        colors = None
    font, size = label_font(rgb.shape[1], rgb.shape[2]) if scaled else (None, None)
    if width is None:
        width = max(1, round(min(rgb.shape[1], rgb.shape[2]) / 200))
    if font is None:
        return draw_bounding_boxes(rgb, b, labels=captions, colors=colors, width=width)
    return draw_bounding_boxes(rgb, b, labels=captions, colors=colors, width=width,
                               font=font, font_size=size)


def grid(images: Sequence[torch.Tensor], nrow: int = 4, padding: int = 2) -> torch.Tensor:
    """One uint8 image ``(3, H', W')`` tiling ``images`` (smaller ones are padded)."""
    from torchvision.utils import make_grid

    imgs = [to_rgb_uint8(i) for i in images]
    h = max(i.shape[1] for i in imgs)
    w = max(i.shape[2] for i in imgs)
    padded = [torch.nn.functional.pad(i, (0, w - i.shape[2], 0, h - i.shape[1])) for i in imgs]
    return make_grid(torch.stack(padded), nrow=nrow, padding=padding, pad_value=255)


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Write an image ``(C, H, W)`` (anything :func:`to_rgb_uint8` accepts) as PNG."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_rgb_uint8(image).permute(1, 2, 0).numpy()).save(path)
    return path


def save_index_png(mask: torch.Tensor, palette: Sequence[Sequence[int]], path: str | Path,
                   ignore_index: int | None = None) -> Path:
    """Write a class-index mask ``(H, W)`` as a palette PNG: pixel values are the class
    indices (read back with Pillow or ``segmentation_folder``), shown in the class
    colours (ignored pixels white)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    m = mask.detach().cpu().clamp(0, 255).to(torch.uint8).numpy()
    flat = [0] * 768
    for i, rgb in enumerate(palette[:256]):
        flat[3 * i:3 * i + 3] = [int(v) for v in rgb[:3]]
    if ignore_index is not None and 0 <= ignore_index < 256:
        flat[3 * ignore_index:3 * ignore_index + 3] = [255, 255, 255]
    image = Image.frombytes("P", (m.shape[1], m.shape[0]), m.tobytes())
    image.putpalette(flat)
    image.save(path)
    return path


def figure_of(image: torch.Tensor, title: str = "",
              legend: Sequence[tuple[str, Sequence[int]]] | None = None) -> Any:
    """A matplotlib figure showing one RGB image (for TensorBoard and the report PNGs).

    Args:
        image: Anything :func:`to_rgb_uint8` accepts, ``(C, H, W)``.
        title: The figure's title (the metric, split and epoch).
        legend: ``[(class name, (r, g, b))]``: a colour legend beside the image.
    """
    from matplotlib.patches import Patch

    from thelper.metrics import new_figure

    rgb = to_rgb_uint8(image).permute(1, 2, 0).numpy()
    h, w = rgb.shape[:2]
    scale = min(12 / max(w, 1), 12 / max(h, 1), 0.05)
    extra = 2.2 if legend else 0.0
    width = max(2.0, w * scale, 0.075 * len(title))  # the title fits
    fig = new_figure(width + extra, max(2.0, h * scale))  # not pyplot: the report thread
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize="medium")
    if legend:
        handles = [Patch(facecolor=tuple(v / 255 for v in color[:3]), edgecolor="black",
                         label=name) for name, color in legend]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure of :func:`figure_of` as PNG (atomically; rendered once, the image is
    kept for TensorBoard: :func:`thelper.metrics.render_figure`)."""
    from thelper.metrics import render_figure

    return render_figure(fig, path)


def label_font(height: int, width: int) -> tuple[str | None, int]:
    """A TrueType font (matplotlib's DejaVu Sans) and a size about 1/30 of the image's
    shorter side (at least 10 px), so box captions stay readable on large images."""
    try:
        from matplotlib import font_manager

        path = font_manager.findfont("DejaVu Sans", fallback_to_default=True)
    except Exception:  # noqa: BLE001 - captions then use PIL's fixed bitmap font
        path = None
    return path, max(10, round(min(height, width) / 30))
