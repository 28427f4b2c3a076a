"""The thelper plugin of thelper-gui (entry point ``thelper.plugins: gui``).

Registers the ``annotator:`` config section, the segmentation, classification and boxes
annotators, the ``window`` viewer of ``thelper viz --window``, the ``image_files`` and
``annotations`` datasets, and adds the ``thelper annot`` command. Registration is data only: nothing here imports
pydantic, torch, numpy or OpenCV.
"""

from __future__ import annotations

import typer

from thelper.hookspecs import hookimpl
from thelper.registry import ComponentInfo

__all__ = ["thelper_register_components", "thelper_add_commands"]


@hookimpl
def thelper_register_components() -> list[ComponentInfo]:
    """The ``annotator`` section, annotators and datasets of thelper-gui."""
    C = ComponentInfo
    p = "thelper_gui.params"
    return [
        C("section", "annotator", f"{p}:AnnotatorSection", f"{p}:AnnotatorSection",
          description="the annotation tool of 'thelper annot' ({type, params})"),
        C("annotator", "segmentation", "thelper_gui.factories:segmentation",
          f"{p}:SegmentationAnnotatorParams",
          aliases=("thelper.gui.ImageSegmentAnnotator",
                   "thelper.gui.annotators.ImageSegmentAnnotator"),
          description="brush, eraser and fill painting label masks (masks/<stem>.png)"),
        C("annotator", "classification", "thelper_gui.factories:classification",
          f"{p}:ClassificationAnnotatorParams",
          description="one class per image, number keys or a click in the list "
                      "(labels.csv)"),
        C("annotator", "boxes", "thelper_gui.factories:boxes", f"{p}:BoxAnnotatorParams",
          aliases=("bounding_boxes", "detection"),
          description="draw, move, resize and delete boxes, change their class (COCO "
                      "boxes.json)"),
        C("viewer", "window", "thelper_gui.factories:viewer", f"{p}:ViewerParams",
          description="'thelper viz --window': batches in an OpenCV window (masks, boxes)"),
        C("dataset", "image_files", "thelper_gui.datasets:ImageFiles",
          "thelper_gui.dataset_params:ImageFilesParams",
          metadata={"paths": ("root",)},
          description="images in a folder, without labels (to annotate; give a task block)"),
        C("dataset", "annotations", "thelper_gui.datasets:annotations",
          "thelper_gui.dataset_params:AnnotationsParams",
          metadata={"provides_task": True, "paths": ("session",)},
          description="what 'thelper annot' saved: images with masks, labels or boxes"),
    ]


@hookimpl
def thelper_add_commands(app: typer.Typer) -> None:
    """Add ``thelper annot``."""
    from thelper_gui.commands import annot_cmd

    app.command("annot")(annot_cmd)
