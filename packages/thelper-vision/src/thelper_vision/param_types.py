"""Field types shared by the vision params models (no models here: cheap to import)."""

from typing import Annotated, Literal

from pydantic import Field

__all__ = ["RGB", "ColorMap", "ImageMode", "unique_class_names"]

#: An RGB colour, three integers in [0, 255].
RGB = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]
#: Class name -> RGB colour.
ColorMap = dict[str, RGB]
#: How images are decoded: ``RGB``, ``L`` (luminance) or as stored.
ImageMode = Literal["RGB", "L", "unchanged"]


def unique_class_names(value: list[str]) -> list[str]:
    """``value`` unchanged.

    Raises:
        ValueError: A class name appears more than once (names them).
    """
    dupes = sorted({v for v in value if value.count(v) > 1})
    if dupes:
        raise ValueError(f"class names must be unique; repeated: {', '.join(dupes)}")
    return value
