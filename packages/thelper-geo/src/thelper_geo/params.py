"""Params models of the geo components.

This module imports only pydantic and :mod:`thelper.params`: ``thelper config validate`` and
``thelper plugins list`` never import rasterio, shapely, pyproj, pyogrio or torch.
"""

# No ``from __future__ import annotations`` here, on purpose: pydantic would have to evaluate
# every field annotation from its string when the models are built.

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from thelper.params import Params, unique_class_names

__all__ = [
    "local_path", "RESAMPLING", "RegionParams", "GridSamplingParams", "RandomSamplingParams",
    "RasterLabelParams", "VectorLabelParams", "SpatialSplitParams", "AlignParams",
    "GeoTiffTilesParams", "DenseCNNParams", "R2Params",
]

#: Resampling methods accepted by ``resampling`` keys (names of ``rasterio.enums.Resampling``).
RESAMPLING = Literal["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average",
                     "mode", "max", "min", "med", "q1", "q3", "sum", "rms"]

def local_path(value: str | None) -> str | None:
    """A config path, refused when GDAL/OGR would fetch it over the network or through a
    virtual file system (``/vsicurl/...``, ``/vsis3/...``, ``http://...``), or read as
    inline VRT XML (``<VRTDataset...``).

    Raises:
        ValueError: The path starts with ``/vsi`` or ``<``, or holds ``://``.
    """
    if value is not None and (value.startswith(("/vsi", "<")) or "://" in value):
        raise ValueError(f"{value!r} is a remote or GDAL virtual path (or inline XML); thelper reads local "
                         "files only (remote data will need an explicit opt-in, not available "
                         "yet): download the data and give its local path")
    return value


Number = float | int
PerBand = float | list[float]


class RegionParams(Params):
    """A region of interest: ``bounds``, ``polygon``, ``vector``, ``west_of``/``east_of`` or
    ``south_of``/``north_of`` (exactly one), in ``crs`` (default: the raster's CRS)."""

    bounds: list[float] | None = Field(default=None, min_length=4, max_length=4)
    """``[xmin, ymin, xmax, ymax]`` in ``crs`` units (degrees for EPSG:4326)."""
    polygon: str | None = None
    """A polygon as WKT, e.g. ``POLYGON ((x y, ...))``, in ``crs`` units."""
    vector: str | None = None
    """A vector file (GeoJSON, shapefile, GeoPackage...) whose geometries (their union) form
    the region; its own CRS is used (``crs`` is then ignored)."""
    west_of: float | None = None
    """Everything with ``x`` below this value (a longitude in EPSG:4326)."""
    east_of: float | None = None
    """Everything with ``x`` above this value."""
    south_of: float | None = None
    """Everything with ``y`` below this value (a latitude in EPSG:4326)."""
    north_of: float | None = None
    """Everything with ``y`` above this value."""
    crs: str | None = None
    """CRS of ``bounds``/``polygon``/half-planes (e.g. ``EPSG:4326``); default: the raster's."""

    _local = field_validator("vector")(local_path)

    @model_validator(mode="after")
    def _one(self) -> "RegionParams":
        given = [k for k in ("bounds", "polygon", "vector", "west_of", "east_of", "south_of",
                             "north_of") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of bounds, polygon, vector, west_of, east_of, "
                             f"south_of, north_of (got {', '.join(given) or 'none'})")
        if self.bounds is not None and not (self.bounds[0] < self.bounds[2]
                                            and self.bounds[1] < self.bounds[3]):
            raise ValueError(f"bounds must be [xmin, ymin, xmax, ymax] with xmin < xmax and "
                             f"ymin < ymax (got {self.bounds})")
        return self


class GridSamplingParams(Params):
    """Tiles on a regular grid: every ``stride`` pixels, ``size`` pixels wide."""

    mode: Literal["grid"] = "grid"
    size: int = Field(default=64, ge=1)
    """Tile side in pixels (square tiles ``size × size``)."""
    stride: int | None = Field(default=None, ge=1)
    """Pixels between tile origins (default ``size``: no overlap; smaller overlaps)."""
    roi: RegionParams | None = None
    """Keep only tiles inside this region (whole tile footprint)."""


class RandomSamplingParams(Params):
    """``count`` tiles at random positions inside a region of interest (seeded)."""

    mode: Literal["random"]
    size: int = Field(default=64, ge=1)
    """Tile side in pixels."""
    count: int = Field(default=1000, ge=1)
    """Number of tiles drawn (fewer when the region cannot hold valid tiles)."""
    roi: RegionParams | None = None
    """Region the tiles must lie in (whole footprint); default: the whole raster."""
    seed: int = 0
    """Seed of the positions (``numpy.random.default_rng``); the tiles are fixed at
    construction, so every epoch sees the same ones."""


Sampling = Annotated[GridSamplingParams | RandomSamplingParams, Field(discriminator="mode")]


class RasterLabelParams(Params):
    """Targets from a second raster, resampled onto each input raster's grid."""

    kind: Literal["raster"] = "raster"
    path: str = Field(min_length=1)
    """The label raster (a local file rasterio reads; not a VRT, not remote)."""
    _local = field_validator("path")(local_path)
    band: int = Field(default=1, ge=1)
    """Band of the label raster (1-based)."""
    resampling: RESAMPLING | None = None
    """How the label raster is resampled onto the input grid; required when the grids differ
    (another CRS, resolution or origin): nothing is resampled silently. ``nearest`` for
    classes, ``bilinear`` for continuous values."""
    nodata: float | None = None
    """Label value meaning "no data" (default: the label raster's own nodata)."""
    thresholds: list[float] | None = Field(default=None, min_length=1)
    """Segmentation/classification only: class index = number of thresholds the value
    exceeds (``[3500]``: class 0 at or below 3500, class 1 above)."""
    values: dict[str, str] | None = None
    """Segmentation/classification only: raster value → class name (other values are
    ignored pixels)."""

    @model_validator(mode="after")
    def _classes(self) -> "RasterLabelParams":
        if self.thresholds is not None and self.values is not None:
            raise ValueError("give thresholds or values, not both")
        if self.thresholds is not None and self.thresholds != sorted(self.thresholds):
            raise ValueError(f"thresholds must increase (got {self.thresholds})")
        return self


class VectorLabelParams(Params):
    """Targets from vector features (GeoJSON, shapefile, GeoPackage...), rasterized onto each
    tile's grid with ``rasterio.features.rasterize``."""

    kind: Literal["vector"]
    path: str = Field(min_length=1)
    """The vector file (read with pyogrio; reprojected with pyproj to the raster's CRS)."""
    _local = field_validator("path")(local_path)
    layer: str | None = None
    """Layer name (default: the first)."""
    attribute: str | None = None
    """Attribute holding each feature's class; without it every feature is ``class_names[1]``
    (index 1; 0 is the background)."""
    classes: dict[str, str] | None = None
    """Attribute value → class name (values not listed are skipped); default: the attribute
    value is the class name."""
    buffer: float = Field(default=0.0, ge=0.0)
    """Buffer around each geometry, in units of the raster's CRS (degrees for EPSG:4326);
    points and lines need one to cover pixels (or set ``all_touched``)."""
    all_touched: bool = False
    """Burn every pixel a geometry touches (default: pixels whose centre is inside)."""


Labels = Annotated[RasterLabelParams | VectorLabelParams, Field(discriminator="kind")]


class SpatialSplitParams(Params):
    """Group tiles so that ``loaders.*_split`` never put overlapping or neighbouring tiles in
    different splits (see ``docs/geo.md``)."""

    block_size: int = Field(default=256, ge=1)
    """Side of the square blocks in pixels; the ratios of ``loaders.*_split`` draw whole
    blocks. Tiles that cross a block edge are dropped."""
    buffer: int = Field(default=0, ge=0)
    """Pixels a tile must keep from its block's edges (a gap between tiles of neighbouring
    blocks)."""
    regions: dict[Literal["train", "valid", "test"], RegionParams] = Field(default_factory=dict)
    """Fixed regions: tiles inside ``regions[split]`` go to that split whatever the ratios say;
    tiles crossing a region's edge are dropped; the ratios split the blocks outside every
    region."""


class AlignParams(Params):
    """Resample every input raster onto one target grid (only when asked: rasters whose grid
    differs are otherwise an error)."""

    crs: str | None = None
    """Target CRS (default: the first raster's)."""
    resolution: float | list[float] | None = None
    """Target pixel size in CRS units, one value or ``[x, y]`` (default: the first raster's)."""
    resampling: RESAMPLING = "bilinear"
    """Resampling of the inputs (``nearest`` keeps classes/values unmixed)."""


class GeoTiffTilesParams(Params):
    """Tiles of georeferenced rasters with raster or vector labels."""

    rasters: list[str] = Field(min_length=1)
    """Input rasters (GeoTIFF or anything rasterio reads); each is tiled separately and must
    hold the bands of ``bands``."""
    bands: list[int] | None = Field(default=None, min_length=1)
    """Bands to read (1-based, rasterio's convention), in order; default: all."""
    nodata: float | None = None
    """Input value meaning "no data" (default: each raster's own nodata, or its mask)."""
    offset: PerBand = 0.0
    """Input normalisation ``(value - offset) / scale``, one number or one per band."""
    scale: PerBand = 1.0
    """Input normalisation divisor (e.g. ``255`` for uint8 imagery), one or one per band."""
    fill: float = 0.0
    """Normalised value written into nodata input pixels."""
    target: Literal["segmentation", "regression", "classification"] = "segmentation"
    """``segmentation``: a class per pixel; ``regression``: a value per pixel; ``classification``:
    one class per tile."""
    labels: Labels | None = None
    """Where the targets come from (a label raster or vector features); none: inputs only
    (inference)."""
    class_names: list[str] | None = Field(default=None, min_length=1)
    """Classes, in index order (segmentation/classification); vector labels: index 0 is the
    background."""
    tile_label: Literal["any", "majority"] = "any"
    """classification: ``any``: the highest class index present in the tile (``min_pixels``
    pixels at least), else 0; ``majority``: the most frequent class of the valid pixels."""
    min_pixels: int = Field(default=1, ge=1)
    """classification with ``any``: pixels of a class needed for the tile to hold it."""
    sampling: Sampling = Field(default_factory=GridSamplingParams)
    """How tiles are placed (``mode: grid`` or ``mode: random``)."""
    min_valid_fraction: float = Field(default=0.5, ge=0.0, le=1.0)
    """Drop tiles with fewer valid input pixels (not nodata) than this fraction; segmentation
    tiles also need this fraction of labelled pixels, regression tiles every target pixel."""
    spatial_split: SpatialSplitParams | None = None
    """Group tiles by block and region for leak-free splits (default: by tile index)."""
    align: AlignParams | None = None
    """Resample the inputs onto one target grid (only when asked)."""
    gdal_cache_mb: int = Field(default=64, ge=1)
    """GDAL block cache cap in MiB (passed in bytes as ``GDAL_CACHEMAX`` to rasterio.Env)."""

    @field_validator("class_names")
    @classmethod
    def _unique(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else unique_class_names(value)

    @field_validator("sampling", mode="before")
    @classmethod
    def _default_mode(cls, value: object) -> object:
        if isinstance(value, dict) and "mode" not in value:
            return {"mode": "grid", **value}
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _default_kind(cls, value: object) -> object:
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "raster", **value}
        return value

    @field_validator("rasters", mode="before")
    @classmethod
    def _one_raster(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("rasters")
    @classmethod
    def _local_rasters(cls, value: list[str]) -> list[str]:
        for path in value:
            local_path(path)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "GeoTiffTilesParams":
        if self.target in ("segmentation", "classification") and self.labels is not None \
                and not self.class_names:
            raise ValueError(f"target {self.target!r} needs class_names (e.g. [background, "
                             "glacier])")
        if self.target == "regression" and isinstance(self.labels, VectorLabelParams):
            raise ValueError("regression targets come from a label raster (labels.kind: "
                             "raster), not vector features")
        if self.target == "regression" and isinstance(self.labels, RasterLabelParams) and (
                self.labels.thresholds or self.labels.values):
            raise ValueError("labels.thresholds/values make classes; use target: "
                             "segmentation or classification, or drop them for regression")
        n = len(self.bands) if self.bands else None
        for key in ("offset", "scale"):
            value = getattr(self, key)
            if isinstance(value, list) and n is not None and len(value) != n:
                raise ValueError(f"{key} has {len(value)} values but bands selects {n}")
        scales = self.scale if isinstance(self.scale, list) else [self.scale]
        if any(s == 0 for s in scales):
            raise ValueError("scale must not be 0")
        return self


class DenseCNNParams(Params):
    """Params of ``dense_cnn``."""

    in_channels: int = Field(default=3, ge=1)
    """Input channels ``C``."""
    channels: int = Field(default=32, ge=1)
    """Channels of the hidden layers."""
    dilations: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    """Dilation of each 3×3 convolution (one hidden layer each): the receptive field grows
    without down-sampling."""
    out_channels: int | None = Field(default=None, ge=1)
    """Output channels (default: the task's classes, or the regression target's channels)."""


class R2Params(Params):
    """The coefficient of determination takes no params."""
