"""CLI commands on trained sessions (``split``, ``export``, ``infer``), added through the
``thelper_add_commands`` hook like any plugin's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thelper.cli_options import AllowImportOption, SetOption, allowed_imports
from thelper.hookspecs import hookimpl


def split_cmd(
    config: Annotated[Path, typer.Argument(help="Session config (YAML or JSON).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Archive to write (.h5).")],
    compression: Annotated[str, typer.Option(
        help="Default compression of every key: none, gzip or lz4.")] = "lz4",
    key_compression: Annotated[list[str] | None, typer.Option(
        "--key-compression", metavar="KEY=CODEC",
        help="Per-key compression, e.g. --key-compression label=none (repeatable).")] = None,
    encode: Annotated[str, typer.Option(
        help="Store uint8 images encoded: none, png or jpeg.")] = "none",
    sets: SetOption = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing archive.")
                     ] = False,
    allow_import: AllowImportOption = None,
) -> None:
    """Write the session's train/valid/test splits into one HDF5 archive.

    Samples are stored raw (before transforms) with their source dataset and index, the
    task, class names and seeds. Train on it with datasets of type 'hdf5'
    (params: {path: ARCHIVE.h5, split: train}).

    Examples:

    \b
      thelper split cfg.yaml -o data.h5
      thelper split cfg.yaml -o data.h5 --compression gzip --encode png
    """
    from rich.progress import Progress

    from thelper.build import assemble
    from thelper.config import load_config, validate_document
    from thelper.exceptions import ConfigError
    from thelper.logs import console, is_interactive, setup_logging
    from thelper.plugins import get_plugin_manager
    from thelper.session import draw_seeds
    from thelper.tools.archive import COMPRESSIONS, check_codecs, write_archive

    allow = allowed_imports(allow_import)
    per_key = {}
    for item in key_compression or []:
        k, sep, v = item.partition("=")
        if not sep or not k:
            raise ConfigError(f"--key-compression {item!r}: expected KEY=CODEC with CODEC one "
                              f"of {', '.join(COMPRESSIONS)}, e.g. --key-compression label=none")
        per_key[k] = v
    check_codecs(compression, per_key, encode)  # usage errors before any dataset is built
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    setup_logging()
    pm = get_plugin_manager()
    cfg = validate_document(load_config(config, sets or []), pm.registry, allow_imports=allow)
    seeds = draw_seeds(cfg.seeds.model_dump())
    data = assemble(cfg, seeds, pm.registry, model=False).data
    total = sum(len(i) for idx in data.indices.values() for i in idx.values())
    with Progress(console=console, transient=False, disable=not is_interactive()) as prog:
        bar = prog.add_task("writing archive", total=total)
        write_archive(data, out, compression=compression, key_compression=per_key,
                      encode=encode, meta={"seeds": seeds, "session": cfg.name,
                                           "indices": data.indices},
                      progress=lambda n: prog.update(bar, advance=n))
    typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {total} samples: " + ", ".join(
        f"{s} {sum(len(i.get(s, [])) for i in data.indices.values())}"
        for s in ("train", "valid", "test")) + ")")


def export_cmd(
    source: Annotated[Path, typer.Argument(help="Session directory or checkpoint file.")],
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="torchscript, onnx or exported-program.")] = "torchscript",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output file (default: SESSION/export/model.<ext>).")] = None,
    input_shape: Annotated[str | None, typer.Option(
        help="Per-sample input shape C,H,W for random inputs instead of the session's data.")
    ] = None,
    tolerance: Annotated[float, typer.Option(
        help="Largest accepted |original - export| on the check inputs.")] = 1e-4,
    allow_import: AllowImportOption = None,
) -> None:
    """Export a trained model and verify the export reproduces it.

    Runs the original and the exported model on samples of the session's data (batch and
    batch size 1) and fails when the largest absolute difference exceeds --tolerance.
    Writes <file>.meta.pt / <file>.meta.json (task, class names, input shape, transforms)
    beside it, e.g. model.onnx.meta.pt, so every format of a session can sit in one folder.

    Examples:

    \b
      thelper export sessions/digits-classification
      thelper export sessions/digits-classification --format onnx
    """
    from thelper.exceptions import ConfigError
    from thelper.tools.export import FORMATS, export_model

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: unknown export format; choose one of "
                          f"{', '.join(FORMATS)}")
    shape = None
    if input_shape:
        try:
            shape = tuple(int(v) for v in input_shape.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ConfigError(f"--input-shape {input_shape!r}: expected positive integers "
                              "C,H,W separated by commas, e.g. --input-shape 3,224,224")
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from thelper.logs import console, is_interactive

    stages = ("load", "export", "verify", "metadata")
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False, disable=not is_interactive()) as prog:
        task = prog.add_task(f"export {fmt}", total=len(stages))

        def stage(name: str) -> None:
            prog.update(task, completed=stages.index(name),
                        description=f"export {fmt}: {name}")

        result = export_model(source, fmt, out, input_shape=shape, tolerance=tolerance,
                              allow_imports=allowed_imports(allow_import), stage=stage)
        prog.update(task, completed=len(stages), description=f"export {fmt}: done")
    typer.echo(f"exported {result.path} ({fmt}); max |difference| {result.max_abs_diff:.3g} "
               f"on inputs {list(result.input_shape)}; metadata {result.meta_path}")


def infer_cmd(
    model: Annotated[Path, typer.Argument(help="Session dir, checkpoint or export file.")],
    inputs: Annotated[list[Path] | None, typer.Argument(help="Image files or folders.")
                      ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")
                   ] = Path("predictions"),
    split: Annotated[str | None, typer.Option(
        help="Predict this split of the session's config (train, valid or test).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.", min=1)] = 32,
    top_k: Annotated[int, typer.Option(help="Classes listed per image.", min=1)] = 3,
    allow_import: AllowImportOption = None,
    tile_size: Annotated[int | None, typer.Option(
        help="Sliding window (geo rasters): window side in pixels [default: the training "
        "tiles'].", min=1)] = None,
    overlap: Annotated[int | None, typer.Option(
        help="Sliding window: pixels shared by neighbouring windows, blended with weights "
        "[default: tile size / 4].", min=0)] = None,
    probabilities: Annotated[str, typer.Option(
        help="Sliding window: also write per-class probabilities: none, uint8 or float32.")
    ] = "none",
    cog: Annotated[bool, typer.Option(
        "--cog", help="Sliding window: write Cloud Optimized GeoTIFFs.")] = False,
    polygons: Annotated[bool, typer.Option(
        "--polygons/--no-polygons", help="Sliding window: also write the class map's "
        "polygons as GeoJSON.")] = True,
    gdal_cache_mb: Annotated[int | None, typer.Option(
        help="Sliding window: GDAL block cache cap in MiB [default: the dataset's].", min=1)
    ] = None,
) -> None:
    """Run a trained model on images (or a split) and write predictions.

    Classification: predictions.csv with top-k class names and scores; segmentation: PNG
    masks; detection: detections.json; regression: predictions.csv. Sessions trained on
    rasters (thelper-geo) predict whole rasters with a sliding window instead: GeoTIFFs
    with the input's grid (class map, probabilities or regression map) and GeoJSON polygons.

    Examples:

    \b
      thelper infer sessions/digits-classification --split test
      thelper infer sessions/digits-classification img1.png img2.png -o preds
    """
    from thelper.tools.infer import infer

    result = infer(model, inputs or [], out, split=split, batch_size=batch_size, top_k=top_k,
                   allow_imports=allowed_imports(allow_import), tile_size=tile_size,
                   overlap=overlap, probabilities=probabilities, cog=cog, polygons=polygons,
                   gdal_cache_mb=gdal_cache_mb)
    typer.echo(f"predictions written to {result}")


@hookimpl
def thelper_add_commands(app: typer.Typer) -> None:
    app.command("split")(split_cmd)
    app.command("export")(export_cmd)
    app.command("infer")(infer_cmd)
