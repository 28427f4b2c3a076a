"""TensorBoard tracker: scalars per split, hyperparameters and metric figures.

Events go to ``output/<name>/{train,valid,test}/``, so ``tensorboard --logdir
<session>/output`` shows the splits as separate runs with the same tags (``loss``,
``accuracy``, ...). The step is the 1-based epoch, except for the per-step scalars of
``thelper_log_scalars`` (tags ``step/loss``, ``step/lr``), whose step is the optimizer step.
"""

from __future__ import annotations

from typing import Any

from thelper.hookspecs import hookimpl

KEY = "tensorboard"


def _writer(session: Any, split: str) -> Any:
    writers = session.extras.setdefault(KEY, {})
    if split not in writers:
        from torch.utils.tensorboard import SummaryWriter

        writers[split] = SummaryWriter(log_dir=str(session.split_dir(split)))
    return writers[split]


@hookimpl
def thelper_epoch_end(session: Any, epoch: int, metrics: dict[str, dict[str, float]]) -> None:
    for split, values in metrics.items():
        w = _writer(session, split)
        for name, value in values.items():
            w.add_scalar(name, value, epoch)
        w.flush()


@hookimpl
def thelper_log_scalars(session: Any, split: str, step: int, values: dict[str, float]) -> None:
    w = _writer(session, split)
    for name, value in values.items():
        if name != "epoch":
            w.add_scalar(f"step/{name}", value, step)


@hookimpl
def thelper_evaluation_end(session: Any, split: str, epoch: int, metrics: dict[str, float]) -> None:
    w = _writer(session, split)
    for name, value in metrics.items():
        w.add_scalar(name, value, epoch)
    hparams = {k: v for k, v in session.hparams.items()
               if isinstance(v, int | float | str | bool)}
    if hparams:
        w.add_hparams(hparams, {f"hparam/{split}/{k}": v for k, v in metrics.items()},
                      run_name=".")
    w.flush()


@hookimpl
def thelper_log_figure(session: Any, split: str, epoch: int, tag: str, figure: Any) -> None:
    w = _writer(session, split)
    image = getattr(figure, "thelper_image", None)  # already rendered for the PNG
    if image is not None:
        w.add_image(tag, image, epoch, dataformats="HWC")
    else:
        w.add_figure(tag, figure, epoch, close=False)
    w.flush()


@hookimpl
def thelper_session_end(session: Any, status: str, error: BaseException | None) -> None:
    for w in session.extras.pop(KEY, {}).values():
        w.close()
