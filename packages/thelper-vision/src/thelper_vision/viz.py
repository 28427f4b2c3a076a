"""``thelper viz CONFIG``: PNG grids of transformed batches, to check data and augmentation
before training.

Builds the session's datasets, splits, transforms and loaders exactly as ``thelper run``
does (same seeds, so the same samples and augmentations as the first epoch), takes the
first batches of a split and draws them: class names over classification images, masks
over segmentation images, boxes over detection images, input | target pairs for
super-resolution. Nothing is trained; no session directory is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from thelper.cli_options import AllowImportOption, SetOption, allowed_imports
from thelper.hookspecs import hookimpl

__all__ = ["draw_batch", "write_batches", "show_batches", "viz_cmd", "thelper_add_commands"]


def _caption(task: Any, batch: dict[str, Any], i: int) -> str:
    """Caption of sample ``i``: its file name (or ``#i``), after its label when that is one
    value: the class name for tasks with class names, else the number (regression).
    Labels that are masks, boxes or images add nothing."""
    paths = batch.get("path")
    caption = Path(str(paths[i])).name if paths is not None else f"#{i}"
    label = batch.get(getattr(task, "label_key", None) or "")
    try:
        value = label[i] if label is not None else None
    except (IndexError, KeyError, TypeError):
        value = None
    if value is None:
        return caption
    if not isinstance(value, str | int | float):
        if getattr(value, "numel", lambda: 0)() != 1:
            return caption
        value = value.item()
    names = list(getattr(task, "class_names", None) or [])
    if names:
        if isinstance(value, str):
            index = names.index(value) if value in names else -1
        else:
            index = int(value) if float(value).is_integer() else -1
        return f"{names[index]} - {caption}" if 0 <= index < len(names) else caption
    if isinstance(value, str):
        return f"{value} - {caption}"
    return f"{value:.4g} - {caption}"


def _tiles(task: Any, batch: dict[str, Any], limit: int) -> list[tuple[Any, str]]:
    """``[(RGB uint8 (3, H, W), caption)]`` of the first ``limit`` samples of a batch."""
    import torch

    from thelper_vision import draw

    images = batch[task.input_key]
    n = min(limit, len(images))
    kind = getattr(task, "type_name", "")
    palette = task.palette() if hasattr(task, "palette") else None
    names = list(getattr(task, "class_names", None) or [])
    out = []
    for i in range(n):
        caption = _caption(task, batch, i)
        image = images[i]
        if kind == "segmentation":
            canvas = draw.overlay_mask(image, batch[task.label_key][i], palette or [], 0.45)
        elif kind == "detection":
            t = batch[task.label_key][i]
            canvas = draw.draw_boxes(image, t["boxes"], t["labels"], names, palette, width=1)
            caption += f" ({len(t['boxes'])} boxes)"
        elif kind == "super_resolution":
            target = batch[task.label_key][i]
            canvas = draw.grid([image, target], nrow=2)
            caption += " (input | target)"
        else:
            canvas = draw.to_rgb_uint8(image if isinstance(image, torch.Tensor)
                                       else torch.as_tensor(image))
        out.append((canvas, caption))
    return out


def _input_kind(task: Any, batch: dict[str, Any]) -> str:
    """``"vectors"`` for a batch of 1-D feature vectors ``(B, F)``, ``"images"`` for a
    batch of images ``(B, C, H, W)`` or ``(B, H, W)`` (a list of them for detection).

    Raises:
        ConfigError: The inputs are neither (e.g. scalars or text), with their shape.
    """
    import torch

    from thelper.exceptions import ConfigError

    inputs = batch[task.input_key]
    if isinstance(inputs, torch.Tensor):
        if inputs.ndim == 2:
            return "vectors"
        if inputs.ndim in (3, 4):
            return "images"
        shape = tuple(inputs.shape[1:])
    elif isinstance(inputs, (list, tuple)) and inputs and all(
            isinstance(x, torch.Tensor) and x.ndim in (2, 3) for x in inputs):
        return "images"
    else:
        shape = type(inputs[0]).__name__ if len(inputs) else "empty"
    raise ConfigError(f"viz draws images and 1-D feature vectors; this dataset's samples "
                      f"({task.input_key!r}) are {shape}")


def _draw_vectors(task: Any, batch: dict[str, Any], limit: int, title: str) -> Any:
    """A heat map of feature vectors: one row per sample ``(F,)``, captioned with its label
    (class name for classification, value for regression); colour bar in input units."""
    import matplotlib.pyplot as plt

    x = batch[task.input_key][:limit].detach().cpu().float()  # (n, F)
    n, f = x.shape
    captions = [_caption(task, batch, i) for i in range(n)]
    fig, ax = plt.subplots(figsize=(min(max(6.0, 0.12 * f + 2.5), 16.0), 0.3 * n + 1.6))
    im = ax.imshow(x.numpy(), aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_yticks(range(n), captions, fontsize=7)
    ax.set_xlabel(f"feature ({f} per sample)", fontsize=8)
    ax.tick_params(axis="x", labelsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def draw_batch(task: Any, batch: dict[str, Any], path: Path, limit: int = 16,
               title: str = "") -> Path:
    """Draw the first ``limit`` samples of a collated batch into one PNG at ``path``.

    Images (``(B, C, H, W)`` or a list of ``(C, H, W)``) are drawn as a grid of tiles with
    the task's targets over them; 1-D feature vectors (``(B, F)``, tabular data) as a heat
    map with one row per sample.

    Raises:
        ConfigError: The inputs are neither images nor feature vectors.
    """
    import math

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if _input_kind(task, batch) == "vectors":
        fig = _draw_vectors(task, batch, limit, title)
    else:
        tiles = _tiles(task, batch, limit)
        cols = min(4, len(tiles))
        rows = math.ceil(len(tiles) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows + 0.4),
                                 squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        for ax, (canvas, caption) in zip(axes.ravel(), tiles, strict=False):
            ax.imshow(canvas.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(caption, fontsize=8)
        if title:
            fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_batches(config: Path, out: Path, split: str = "train", batches: int = 1,
                  limit: int = 16, sets: list[str] | None = None,
                  allow_imports: tuple[str, ...] = ()) -> list[Path]:
    """Build the data of ``config`` and draw the first ``batches`` batches of ``split``.

    Returns:
        The PNG files written (``out/<name>/<split>_batch<k>.png``).

    Raises:
        ConfigError: Invalid config, or ``split`` has no samples.
    """
    from thelper.build import assemble
    from thelper.config import load_config, validate_document
    from thelper.exceptions import ConfigError
    from thelper.logs import setup_logging
    from thelper.plugins import get_plugin_manager
    from thelper.session import draw_seeds

    setup_logging()
    pm = get_plugin_manager()
    cfg = validate_document(load_config(config, sets or []), pm.registry,
                            allow_imports=allow_imports)
    data = assemble(cfg, draw_seeds(cfg.seeds.model_dump()), pm.registry, model=False).data
    loader = data.loaders.get(split)
    if loader is None:
        raise ConfigError(f"split {split!r} is empty in this config; choose one of "
                          f"{', '.join(data.loaders)}")
    written = []
    for k, batch in enumerate(loader):
        if k >= batches:
            break
        path = out / cfg.name / f"{split}_batch{k}.png"
        title = f"{cfg.name}: {split} batch {k} ({data.task.type_name}, after transforms)"
        written.append(draw_batch(data.task, batch, path, limit, title))
    return written


def show_batches(config: Path, split: str = "train", limit: int = 16,
                 sets: list[str] | None = None, allow_imports: tuple[str, ...] = ()) -> int:
    """Show the batches of ``split`` in a window, through a registered ``viewer`` component
    (thelper-gui registers ``window``); returns how many batches were drawn.

    Raises:
        ConfigError: No viewer is installed (``pip install thelper-gui``), no display (from
            the viewer), an invalid config, or ``split`` has no samples.
    """
    from thelper import cli
    from thelper.build import assemble
    from thelper.config import load_config, validate_document
    from thelper.exceptions import ConfigError
    from thelper.logs import setup_logging
    from thelper.session import draw_seeds

    pm = cli._pm()  # the command line's plugins: '-p no:gui' blocks the viewer
    viewers = pm.registry.names("viewer")
    if not viewers:
        raise ConfigError("thelper viz --window needs a viewer component and none is "
                          "registered; install one with 'pip install thelper-gui' (or drop "
                          "--window to write PNG files)")
    setup_logging()
    cfg = validate_document(load_config(config, sets or []), pm.registry,
                            allow_imports=allow_imports)
    viewer = pm.registry.build("viewer", viewers[0], None)  # checks the display first
    data = assemble(cfg, draw_seeds(cfg.seeds.model_dump()), pm.registry, model=False).data
    loader = data.loaders.get(split)
    if loader is None:
        raise ConfigError(f"split {split!r} is empty in this config; choose one of "
                          f"{', '.join(data.loaders)}")
    return viewer.run(data.task, iter(loader), title=f"{cfg.name}: {split}", limit=limit)


def viz_cmd(
    config: Annotated[Path, typer.Argument(help="Session config (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("viz"),
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "train",
    batches: Annotated[int, typer.Option(help="Number of batches to draw.", min=1)] = 1,
    limit: Annotated[int, typer.Option(help="Samples drawn per batch.", min=1)] = 16,
    window: Annotated[bool, typer.Option(
        "--window", help="Show the batches in a window instead (n/p: next/previous batch, "
                         "m/b: masks/boxes, h: help); needs a viewer plugin (thelper-gui) "
                         "and a display.")] = False,
    sets: SetOption = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Write PNG grids of transformed batches (masks and boxes drawn over images).

    Uses the config's datasets, splits, transforms and seeds, so the training split shows
    the augmentations of the first epoch. Writes OUT/<name>/<split>_batch<k>.png, or with
    --window shows the batches in a window of the installed viewer.
    """
    if window:
        show_batches(config, split, limit, sets, allowed_imports(allow_import))
        return
    for path in write_batches(config, out, split, batches, limit, sets,
                              allowed_imports(allow_import)):
        typer.echo(f"wrote {path}")


@hookimpl
def thelper_add_commands(app: typer.Typer) -> None:
    """Add ``thelper viz``."""
    app.command("viz")(viz_cmd)
