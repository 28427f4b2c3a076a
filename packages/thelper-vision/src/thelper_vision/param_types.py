"""Field types shared by the vision params models (no models here: cheap to import), and
:func:`thelper.params.unique_class_names`, their ``class_names`` validator."""

from typing import Annotated, Literal

from pydantic import Field

from thelper.params import unique_class_names

__all__ = ["RGB", "ColorMap", "ImageMode", "unique_class_names"]

#: An RGB colour, three integers in [0, 255].
RGB = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
#: Class name -> RGB colour.
ColorMap = dict[str, RGB]
#: How images are decoded: ``RGB``, ``L`` (luminance) or as stored.
ImageMode = Literal["RGB", "L", "unchanged"]
