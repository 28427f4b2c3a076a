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

__all__ = ["segmentation", "classification", "boxes", "viewer"]


def _context(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs.pop(k) for k in ("from_session", "review", "min_score", "device")
            if k in kwargs}


def segmentation(*, datasets: Any, task: Any, session_dir: Path, config_name: str = "",
                 **kwargs: Any) -> Any:
    """The segmentation annotator (:class:`thelper_gui.segmentation.SegmentationAnnotator`)."""
    from thelper_gui.params import LabelSpec, SegmentationAnnotatorParams
    from thelper_gui.segmentation import SegmentationAnnotator, resolve_labels

    context = _context(kwargs)
    raw = kwargs.get("labels")
    labels = resolve_labels([LabelSpec(**x) for x in raw] if raw else None, task)
    return build_annotator(SegmentationAnnotator, kwargs, SegmentationAnnotatorParams,
                           datasets=datasets, task=task, session_dir=session_dir,
                           config_name=config_name, kind="segmentation", labels=labels,
                           **context)


def classification(*, datasets: Any, task: Any, session_dir: Path, config_name: str = "",
                   **kwargs: Any) -> Any:
    """The classification annotator
    (:class:`thelper_gui.classification.ClassificationAnnotator`)."""
    from thelper_gui.classification import ClassificationAnnotator, resolve_classes
    from thelper_gui.params import ClassificationAnnotatorParams

    context = _context(kwargs)
    names = resolve_classes(kwargs.get("classes"), task)
    return build_annotator(ClassificationAnnotator, kwargs, ClassificationAnnotatorParams,
                           datasets=datasets, task=task, session_dir=session_dir,
                           config_name=config_name, kind="classification", labels=names,
                           **context)


def boxes(*, datasets: Any, task: Any, session_dir: Path, config_name: str = "",
          **kwargs: Any) -> Any:
    """The bounding-box annotator (:class:`thelper_gui.boxes.BoxAnnotator`)."""
    from thelper_gui.boxes import BoxAnnotator
    from thelper_gui.classification import resolve_classes
    from thelper_gui.params import BoxAnnotatorParams

    context = _context(kwargs)
    names = resolve_classes(kwargs.get("classes"), task)
    return build_annotator(BoxAnnotator, kwargs, BoxAnnotatorParams, datasets=datasets,
                           task=task, session_dir=session_dir, config_name=config_name,
                           kind="boxes", labels=names, **context)


def viewer(**params: Any) -> Any:
    """The batch viewer of ``thelper viz --window`` (:class:`thelper_gui.viewer.BatchViewer`).

    Raises:
        DisplayError: No usable display (checked before any window function).
    """
    from thelper_gui.display import require_display
    from thelper_gui.params import ViewerParams
    from thelper_gui.viewer import BatchViewer

    require_display("thelper viz --window")
    return BatchViewer(ViewerParams(**params))
