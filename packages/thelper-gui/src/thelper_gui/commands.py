"""``thelper annot CONFIG``: open the config's annotator on its datasets' samples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from thelper.cli_options import AllowImportOption, SetOption, allowed_imports

__all__ = ["annotate", "annot_cmd"]


def annotate(config: Path, save_dir: Path = Path("annotations"), *,
             sets: list[str] | None = None, allow_imports: tuple[str, ...] = (),
             from_session: str | None = None, review: bool = False, min_score: float = 0.5,
             device: str = "cpu") -> Path:
    """Run an annotation session; returns its directory ``save_dir/<name>``.

    Args:
        config: Session config with an ``annotator`` section.
        save_dir: Where the annotation session directory ``<name>/`` is created (or
            resumed).
        sets: ``--set`` overrides.
        allow_imports: ``--allow-import`` modules.
        from_session: Session directory, checkpoint or export whose predictions pre-fill
            the samples without annotation.
        review: Show only annotated samples, most disputed by the model first (needs
            ``from_session``).
        min_score: Lowest score of a pre-filled box.
        device: Where the model of ``from_session`` runs.

    Raises:
        DisplayError: No usable display (checked before any window function).
        ConfigError: No ``annotator`` section, or ``--review`` without ``--from``.
    """
    from thelper import cli
    from thelper.build import build_data
    from thelper.config import load_config, validate_document
    from thelper.exceptions import ConfigError
    from thelper.logs import setup_logging
    from thelper.session import draw_seeds
    from thelper_gui.display import require_display

    if review and not from_session:
        raise ConfigError("--review orders samples by the model's disagreement: give the "
                          "model with --from SESSION")
    setup_logging()
    pm = cli._pm()  # the command line's plugins (-p NAME, -p no:NAME)
    cfg = validate_document(load_config(config, sets or []), pm.registry,
                            allow_imports=allow_imports)
    section = getattr(cfg, "annotator", None)
    if section is None:
        raise ConfigError(f"{config}: no 'annotator' section; add e.g. 'annotator: {{type: "
                          "segmentation, params: {labels: [{id: 1, name: fg, color: [255, 0, "
                          "0]}]}}' (see docs/gui.md)")
    require_display("thelper annot")
    slot = section.root
    data = build_data(cfg, draw_seeds(cfg.seeds.model_dump()), pm.registry)
    root = Path(save_dir) / cfg.name
    annotator = slot.build(pm.registry, datasets=data.datasets, task=data.task,
                           session_dir=root, config_name=cfg.name,
                           from_session=from_session, review=review, min_score=min_score,
                           device=device)
    annotator.run()
    return root


def annot_cmd(
    config: Annotated[Path, typer.Argument(help="Session config with an 'annotator' section.")],
    save_dir: Annotated[Path, typer.Option(
        "--save-dir", "-o", help="Where the annotation session <name>/ is created or resumed."
    )] = Path("annotations"),
    from_session: Annotated[str | None, typer.Option(
        "--from", metavar="SESSION",
        help="Pre-fill samples without annotation with this trained session's predictions "
             "(a session directory, checkpoint or export).")] = None,
    review: Annotated[bool, typer.Option(
        "--review", help="Step through annotated samples, most disputed by the --from "
                         "model first.")] = False,
    min_score: Annotated[float, typer.Option(
        "--min-score", min=0.0, max=1.0, help="Lowest score of a pre-filled box.")] = 0.5,
    device: Annotated[str, typer.Option(help="Device of the --from model.")] = "cpu",
    sets: SetOption = None,
    allow_import: AllowImportOption = None,
) -> None:
    """Annotate the config's datasets in a window (segmentation masks, class labels or
    boxes, per the 'annotator' section); press h in the window for the keys.

    Every change is on disk at once (SAVE_DIR/<name>/: masks/*.png, labels.csv or
    boxes.json); running the command again resumes at the sample shown last. Needs a display
    (a desktop, 'ssh -X' or Xvfb).
    """
    root = annotate(config, save_dir, sets=sets, allow_imports=allowed_imports(allow_import),
                    from_session=from_session, review=review, min_score=min_score,
                    device=device)
    typer.echo(f"annotations saved in {root}")


def build_annotator(cls: Any, params: dict[str, Any], params_model: Any, *, datasets: Any,
                    task: Any, session_dir: Path, config_name: str, kind: str,
                    labels: Any, from_session: str | None = None, review: bool = False,
                    min_score: float = 0.5, device: str = "cpu") -> Any:
    """Shared factory body of the annotator components (see :mod:`thelper_gui.factories`)."""
    from thelper_gui.assist import load_predictor, predict_samples, review_order
    from thelper_gui.samples import SampleSource
    from thelper_gui.store import open_store

    p = params_model(**params)
    source = SampleSource(datasets, task, p.sample_input_key)
    predictions = None
    if from_session:
        predictor = load_predictor(from_session, kind, device)
        predictions = predict_samples(predictor, source, kind, labels, min_score)
    store = open_store(session_dir, kind, labels, config_name, p.save_interval)
    try:
        order = review_order(kind, source, store, predictions) if review else None
        return cls(p, source, store, predictions=predictions, order=order)
    except BaseException:
        store.close()
        raise
