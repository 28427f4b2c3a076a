"""``thelper infer``: run a trained model (session, checkpoint or export) on files or a split.

A thin client of :class:`thelper.predict.Predictor` (the model, its task and its
training-time preprocessing) and of the task type's output writer (:mod:`thelper.writers`):
classification → ``predictions.csv`` (top-k class names and softmax scores); regression →
``predictions.csv`` (values in target units); segmentation → ``masks/<stem>.png`` (class
index per pixel); detection → ``detections.json``; super-resolution and autoencoding →
``images/<stem>.png`` (or ``.tif`` for float data). ``inference.yaml`` (the command's
settings) and ``training-config.yaml`` (the session's config) are written beside them.

Sessions whose dataset type registers an *infer runner* (a component of kind
``infer_runner`` named after the dataset type, see :attr:`thelper.predict.Predictor.runner`)
predict whole files through it instead: thelper-geo's ``geotiff_tiles`` runs a sliding
window over each raster and writes GeoTIFFs with the input's grid. The window options
(:data:`RUNNER_OPTIONS`: ``tile_size``, ``overlap``, ``probabilities``, ``cog``,
``polygons``, ``gdal_cache_mb``) are passed to the runner; they are refused for sessions
without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import yaml

from thelper.exceptions import ConfigError, DataError
from thelper.logs import console, is_interactive

__all__ = ["IMAGE_EXTENSIONS", "RUNNER_OPTIONS", "infer", "find_inputs"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

#: Options of infer runners, ``{name: (command-line flag, value meaning "not given")}``.
RUNNER_OPTIONS: dict[str, tuple[str, Any]] = {
    "tile_size": ("--tile-size", None),
    "overlap": ("--overlap", None),
    "probabilities": ("--probabilities", "none"),
    "cog": ("--cog", False),
    "polygons": ("--polygons/--no-polygons", True),
    "gdal_cache_mb": ("--gdal-cache-mb", None),
}


def find_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files given directly, and image files found (recursively, sorted) in folders.

    Raises:
        DataError: A path does not exist, or no image was found.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            files.append(p)
        else:
            raise DataError(f"input {str(p)!r} does not exist")
    if not files:
        raise DataError(f"no image found in {', '.join(map(str, paths))} "
                        f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files


def infer(model_path: str | Path, inputs: Sequence[str | Path], out: str | Path, *,
          split: str | None = None, batch_size: int = 32, top_k: int = 3,
          allow_imports: tuple[str, ...] = (), device: str = "cpu",
          tile_size: int | None = None, overlap: int | None = None,
          probabilities: str = "none", cog: bool = False, polygons: bool = True,
          gdal_cache_mb: int | None = None) -> Path:
    """Run inference and write predictions under ``out``.

    Files are decoded as the session's training dataset decodes its own, then go through
    ``loaders.base_transforms`` (see :mod:`thelper.predict`); ``split`` predicts the
    session's own samples (same seeds, so the same samples as in training).

    Args:
        model_path: Session directory, thelper checkpoint, or an export from
            ``thelper export`` (``.ts.pt``, ``.pt2``, ``.onnx`` with its ``<file>.meta.pt``).
        inputs: Files or folders of images (may be empty when ``split`` is given).
        out: Output directory (created).
        split: Also/instead predict this split (``train``, ``valid``, ``test``) of the
            session's config (needs a checkpoint, not an export).
        batch_size: Samples per forward pass.
        top_k: Classes listed per input (classification).
        allow_imports: Modules the command line allows the stored config to import.
        device: Where a checkpoint's model runs (``cpu``, ``cuda``, ``auto``); exports run
            on the CPU.
        tile_size: Infer runners: window side in pixels (default: the training tiles').
        overlap: Infer runners: pixels shared by neighbouring windows (default: a quarter
            of the tile size).
        probabilities: Infer runners: also write per-class probabilities, ``none``,
            ``uint8`` (0..255) or ``float32``.
        cog: Infer runners: write Cloud Optimized GeoTIFFs.
        polygons: Infer runners: also write the class map's polygons as GeoJSON.
        gdal_cache_mb: Infer runners: GDAL block cache cap in MiB (default: the dataset's).

    Returns:
        The output directory.

    Raises:
        DataError: Missing or undecodable inputs, or inputs the model fails on.
        ConfigError: Nothing to predict, a split requested from an export, files given to a
            model whose inputs are not files, no writer for the task type, or runner
            options for a session without an infer runner.
    """
    from thelper.predict import Predictor

    model_path = Path(model_path)
    out = Path(out)
    options = {"tile_size": tile_size, "overlap": overlap, "probabilities": probabilities,
               "cog": cog, "polygons": polygons, "gdal_cache_mb": gdal_cache_mb}
    predictor = Predictor.load(model_path, device=device, batch_size=batch_size)
    runner = predictor.runner
    if runner is None:
        given = [flag.split("/")[0] for name, (flag, unset) in RUNNER_OPTIONS.items()
                 if options[name] != unset]
        if given:
            raise ConfigError(
                f"{', '.join(given)}: only for sessions whose dataset type has an infer "
                f"runner (e.g. thelper-geo's geotiff_tiles); {model_path} was trained on "
                f"{(predictor.decoder_spec or {}).get('type', 'data without a file decoder')}")
    files = find_inputs(inputs) if inputs else []
    data = None
    if split is not None:
        data = predictor.session_data(allow_imports)
        if split not in data.splits:
            raise ConfigError(f"split {split!r} is empty or undefined in the session "
                              f"(available: {', '.join(data.splits)})")
    if not files and data is None:
        raise ConfigError("nothing to predict: give image files/folders or --split")
    if runner is not None and files:  # whole files through the runner, then the split
        ran = list(runner(predictor, files, out, **options))
        extra, ran_count = {"runner": dict(options)}, len(files)
        if data is None:
            return _settings(out, predictor, model_path, inputs, split=None,
                             batch_size=batch_size, top_k=top_k, count=ran_count,
                             written=ran, extra=extra)
        files = []
    else:
        ran, extra, ran_count = [], None, 0
    if files:
        _ = predictor.decoder  # refuse files before writing anything
    writer = predictor.writer(out, top_k=top_k)
    total = len(files) + (len(data.splits[split]) if data is not None else 0)
    batches = chain(predictor.predict_files(files) if files else (),
                    predictor.predict_split(data, split) if data is not None else ())
    progress = None
    if is_interactive():
        from rich.progress import Progress

        progress = Progress(console=console, transient=True)
        progress.start()
        bar = progress.add_task("inference", total=total)
    count = 0
    try:
        for sources, predictions in batches:
            writer.write(sources, predictions)
            count += len(sources)
            if progress is not None:
                progress.update(bar, advance=len(sources))
    finally:
        if progress is not None:
            progress.stop()
        written = writer.close()
    return _settings(out, predictor, model_path, inputs, split=split, batch_size=batch_size,
                     top_k=top_k, count=count + ran_count,
                     written=[*ran, *written], extra=extra)


def _settings(out: Path, predictor: Any, model_path: Path, inputs: Sequence[str | Path], *,
              split: str | None, batch_size: int, top_k: int, count: int,
              written: Sequence[Path], extra: dict[str, Any] | None = None) -> Path:
    """Write ``inference.yaml`` and ``training-config.yaml`` under ``out``; return ``out``."""
    settings: dict[str, Any] = {
        "model": str(model_path), "inputs": [str(p) for p in inputs], "split": split,
        "batch_size": batch_size, "top_k": top_k, "device": str(predictor.device),
        "task": predictor.task.to_dict(), "input_decoder": predictor.decoder_spec,
        "base_transforms": predictor.transform_specs, "predictions": count,
        **(extra or {}),
        "outputs": sorted({p.relative_to(out).parts[0] for p in written}),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    if predictor.config:
        (out / "training-config.yaml").write_text(yaml.safe_dump(predictor.config,
                                                                 sort_keys=False))
    return out

