"""Factories of the annotator components (``annotator: {type, params}``).

An annotator component is called with its params as keyword arguments plus the context
``thelper annot`` passes: ``datasets`` (``{name: dataset}``), ``task``, ``session_dir``,
``config_name``, ``from_session``, ``review``, ``min_score`` and ``device``; it returns an
object whose ``run()`` opens the window and returns when the user quits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from thelper_gui.commands import build_annotator

__all__ = ["segmentation"]


def segmentation(*, datasets: Any, task: Any, session_dir: Path, config_name: str = "",
                 **kwargs: Any) -> Any:
    """The segmentation annotator (:class:`thelper_gui.segmentation.SegmentationAnnotator`)."""
    from thelper_gui.params import LabelSpec, SegmentationAnnotatorParams
    from thelper_gui.segmentation import SegmentationAnnotator, resolve_labels

    context = {k: kwargs.pop(k) for k in ("from_session", "review", "min_score", "device")
               if k in kwargs}
    raw = kwargs.get("labels")
    labels = resolve_labels([LabelSpec(**x) for x in raw] if raw else None, task)
    return build_annotator(SegmentationAnnotator, kwargs, SegmentationAnnotatorParams,
                           datasets=datasets, task=task, session_dir=session_dir,
                           config_name=config_name, kind="segmentation", labels=labels,
                           **context)
