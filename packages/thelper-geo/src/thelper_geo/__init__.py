"""thelper-geo: georeferenced rasters and vector labels for thelper."""

__version__ = "0.7.0.dev0"
