"""The thelper plugin of thelper-geo (entry point ``thelper.plugins: geo``).

Registration is data only: factories and params models are lazy ``"module:attr"`` strings,
so importing this module (every ``thelper`` command does) never imports pydantic, torch,
rasterio, shapely, pyproj or pyogrio. The params models live in :mod:`thelper_geo.params`
and :mod:`thelper_geo.interface_params`, which import only pydantic.
"""

from __future__ import annotations

from thelper.hookspecs import hookimpl
from thelper.registry import ComponentInfo

__all__ = ["thelper_register_components"]


def _data_components() -> list[ComponentInfo]:
    C = ComponentInfo
    return [
        C("dataset", "geotiff_tiles", "thelper_geo.datasets:GeoTiffTiles",
          "thelper_geo.params:GeoTiffTilesParams", aliases=("geotiff", "raster_tiles"),
          description="Tiles of GeoTIFFs (windowed reads) with label-raster or vector targets",
          metadata={"provides_task": True}),
        C("dataset", "bigearthnet", "thelper_geo.bigearthnet:BigEarthNet",
          "thelper_geo.interface_params:BigEarthNetParams", aliases=("bigearthnet_s2",),
          description="BigEarthNet-S2 v1.0 patch folders: Sentinel-2 bands on a 120x120 grid, "
                      "multi-label CORINE classes (19 or 43)",
          metadata={"provides_task": True, "task": "multilabel_classification",
                    "paths": ("root",)}),
        C("dataset", "agriculture_vision", "thelper_geo.agrivision:AgricultureVision",
          "thelper_geo.interface_params:AgricultureVisionParams", aliases=("agrivision",),
          description="Agriculture-Vision fields: RGB+NIR images, per-class anomaly masks, "
                      "pixels outside boundary/valid mask ignored",
          metadata={"provides_task": True, "task": "segmentation", "paths": ("root",)}),
        C("model", "dense_cnn", "thelper_geo.models:dense_cnn",
          "thelper_geo.params:DenseCNNParams",
          description="Small dilated fully convolutional net: per-pixel classes or values"),
        C("metric", "r2", "thelper_geo.metrics:R2", "thelper_geo.params:R2Params",
          aliases=("r2_score",), metadata={"goal": "max", "tasks": ("regression",)},
          description="coefficient of determination R² (scikit-learn's r2_score), pooled"),
    ]


@hookimpl
def thelper_register_components() -> list[ComponentInfo]:
    """The geo datasets, models and metrics, and the sliding-window inference components
    of :mod:`thelper_geo.inference` (``components()``, light to import)."""
    from importlib.util import find_spec

    infos = _data_components()
    if find_spec("thelper_geo.inference") is None:
        return infos
    from thelper_geo import inference

    components = getattr(inference, "components", None)  # None while it is being written
    return [*infos, *components()] if components is not None else infos
