"""Config paths are untrusted: no network access through GDAL/OGR (``/vsicurl/``, URLs,
``/vsis3/``), no VRT (whose XML can read any file or URL) whatever its name, no FIFO that
would block the reader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from thelper.exceptions import DataError

REMOTE = ["/vsicurl/http://127.0.0.1:9/a.tif", "http://127.0.0.1:9/a.tif",
          "/vsis3/bucket/key.tif", "s3://bucket/key.tif",
          '<VRTDataset rasterXSize="1" rasterYSize="1"></VRTDataset>']


@pytest.mark.parametrize("key", ["rasters", "labels.path"])
@pytest.mark.parametrize("remote", REMOTE[:2])
def test_remote_paths_fail_config_validate(tmp_path, key, remote):
    from tests.geo.conftest import EXAMPLES, ROOT

    cfg = yaml.safe_load((EXAMPLES / "geo-elevation" / "config.yaml").read_text())
    params = cfg["datasets"]["rmnp"]["params"]
    if key == "rasters":
        params["rasters"] = [remote]
    else:
        params["labels"]["path"] = remote
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "thelper", "config", "validate", str(path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, text
    where = {"rasters": "datasets.rmnp.params.rasters",
             "labels.path": "datasets.rmnp.params.labels.raster.path"}[key]  # union tag
    assert where in text
    assert "is a remote or GDAL virtual path" in text and "opt-in" in text
    assert "Traceback" not in text


@pytest.mark.parametrize("remote", REMOTE)
def test_every_path_field_refuses_remote(remote):
    from pydantic import ValidationError

    from thelper_geo.interface_params import AgricultureVisionParams, BigEarthNetParams
    from thelper_geo.params import (
        GeoTiffTilesParams,
        RasterLabelParams,
        RegionParams,
        VectorLabelParams,
    )

    for make in (lambda: GeoTiffTilesParams(rasters=[remote]),
                 lambda: RasterLabelParams(path=remote),
                 lambda: VectorLabelParams(kind="vector", path=remote),
                 lambda: RegionParams(vector=remote),
                 lambda: BigEarthNetParams(root=remote),
                 lambda: BigEarthNetParams(root="r", patches=remote),
                 lambda: BigEarthNetParams(root="r", exclude=[remote]),
                 lambda: AgricultureVisionParams(root=remote)):
        with pytest.raises(ValidationError, match="remote or GDAL virtual path"):
            make()
    assert RasterLabelParams(path="data/vsi-dem.tif").path == "data/vsi-dem.tif"


def test_readers_refuse_remote_paths_without_a_request():
    from thelper_geo.labels import read_vector
    from thelper_geo.rasters import open_raster

    with pytest.raises(DataError, match="remote or GDAL virtual path"):
        open_raster(REMOTE[0])
    with pytest.raises(DataError, match="remote or GDAL virtual path"):
        read_vector("/vsicurl/http://127.0.0.1:9/a.geojson")


def small_geotiff(path: Path) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    data = (np.arange(64 * 64, dtype=np.uint16).reshape(1, 64, 64) % 251).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1,
                       dtype="uint8", crs="EPSG:4326",
                       transform=from_origin(-105.7, 40.4, 0.001, 0.001)) as dst:
        dst.write(data)
    return path


def vrt_named_tif(tmp_path: Path) -> Path:
    """A GDAL VRT (XML) over a generated GeoTIFF, saved under a ``.tif`` name."""
    source = small_geotiff(tmp_path / "source.tif")
    path = tmp_path / "innocent.tif"
    path.write_text(
        '<VRTDataset rasterXSize="64" rasterYSize="64">\n'
        '  <SRS>EPSG:4326</SRS>\n'
        '  <GeoTransform>-105.7, 0.001, 0, 40.4, 0, -0.001</GeoTransform>\n'
        '  <VRTRasterBand dataType="Byte" band="1">\n'
        '    <SimpleSource>\n'
        f'      <SourceFilename relativeToVRT="0">{source}</SourceFilename>\n'
        '      <SourceBand>1</SourceBand>\n'
        '    </SimpleSource>\n'
        '  </VRTRasterBand>\n'
        '</VRTDataset>\n')
    return path


def test_vrt_named_tif_is_refused_at_build(geo_registry, tmp_path):
    import rasterio

    vrt = vrt_named_tif(tmp_path)
    with rasterio.open(vrt) as src:  # GDAL does read it, through the other file
        assert src.driver == "VRT" and int(src.read(1).sum()) > 0
    good = small_geotiff(tmp_path / "good.tif")
    for params in ({"rasters": [str(vrt)], "sampling": {"size": 16}},
                   {"rasters": [str(good)], "target": "regression",
                    "labels": {"path": str(vrt)}, "sampling": {"size": 16}}):
        with pytest.raises(DataError) as exc:
            geo_registry.build("dataset", "geotiff_tiles", params)
        msg = str(exc.value)
        assert "innocent.tif" in msg and "\n" not in msg
        assert "VRT files can read other files or URLs; convert it with gdal_translate" in msg
    ds = geo_registry.build("dataset", "geotiff_tiles",
                            {"rasters": [str(good)], "sampling": {"size": 16}})
    assert len(ds) == 16


def test_ogr_vrt_is_refused(tmp_path, glaciers_path):
    from thelper_geo.labels import read_vector

    path = tmp_path / "innocent.geojson"
    path.write_text(f'<OGRVRTDataSource><OGRVRTLayer name="g"><SrcDataSource>{glaciers_path}'
                    '</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>\n')
    with pytest.raises(DataError, match=r"innocent\.geojson.*is a GDAL/OGR VRT: VRT files can "
                                        "read other files or URLs"):
        read_vector(str(path))
    geoms, _, _ = read_vector(str(glaciers_path))
    assert len(geoms) == 134



@pytest.mark.parametrize("kind", ["zip", "tar.gz", "gz", "zip-link", "tar-link"])
def test_archive_holding_a_vrt_or_link_is_refused(tmp_path, glaciers_path, kind):
    """OGR opens a ``.zip``/``.tar``/``.gz`` through ``/vsizip/``... and a VRT inside it
    would read whatever it names (measured: a zipped OGR VRT naming a GeoJSON by relative
    path was read from the working directory); a link member points outside as well."""
    import gzip
    import shutil
    import tarfile
    import zipfile

    from thelper_geo.labels import read_vector

    vrt = (f'<OGRVRTDataSource><OGRVRTLayer name="g"><SrcDataSource>{glaciers_path}'
           '</SrcDataSource></OGRVRTLayer></OGRVRTDataSource>\n')
    (tmp_path / "layer.vrt").write_text(vrt)
    (tmp_path / "hidden.txt").write_text(vrt)  # a VRT by content, not by name
    link = tmp_path / "link.geojson"
    link.symlink_to(glaciers_path)
    if kind == "zip":
        path = tmp_path / "labels.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.write(glaciers_path, "ok.geojson")
            z.write(tmp_path / "hidden.txt", "hidden.txt")
        member = "hidden.txt"
    elif kind == "zip-link":
        path = tmp_path / "labels.zip"
        info = zipfile.ZipInfo("link.geojson")
        info.external_attr = 0o120777 << 16
        with zipfile.ZipFile(path, "w") as z:
            z.writestr(info, str(glaciers_path))
        member = "link.geojson"
    elif kind == "tar.gz":
        path = tmp_path / "labels.tar.gz"
        with tarfile.open(path, "w:gz") as t:
            t.add(tmp_path / "layer.vrt", "layer.vrt")
        member = "layer.vrt"
    elif kind == "tar-link":
        path = tmp_path / "labels.tar"
        with tarfile.open(path, "w") as t:
            t.add(link, "link.geojson")
        member = "link.geojson"
    else:
        path = tmp_path / "labels.geojson.gz"
        with open(tmp_path / "layer.vrt", "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        member = "labels.geojson.gz"
    with pytest.raises(DataError, match=rf"{path.name}.*archive holding a GDAL/OGR VRT or a "
                                        rf"link \('{member}'\)"):
        read_vector(str(path))


def test_zipped_vector_without_vrt_is_read(tmp_path, glaciers_path):
    import zipfile

    from thelper_geo.labels import read_vector

    path = tmp_path / "glaciers.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.write(glaciers_path, "glaciers.geojson")
    geoms, _, _ = read_vector(str(path))
    assert len(geoms) == 134

FIFO_SCRIPT = """
import sys
from thelper.exceptions import DataError
from thelper.plugins import ThelperPluginManager
from thelper_geo.labels import read_vector
from thelper_geo.agrivision import _read
from pathlib import Path

fifo = sys.argv[1]
registry = ThelperPluginManager().registry
for call in (lambda: registry.build("dataset", "geotiff_tiles", {"rasters": [fifo]}),
             lambda: read_vector(fifo), lambda: _read(Path(fifo), "RGB")):
    try:
        call()
    except DataError as exc:
        print("DataError:", exc)
"""


def test_fifo_is_refused_without_blocking(tmp_path):
    """Run in a child process: if the check were missing, opening the FIFO would block
    forever; the timeout only turns that into a failure."""
    from tests.geo.conftest import ROOT

    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-c", FIFO_SCRIPT, str(fifo)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("DataError:")]
    assert proc.returncode == 0 and len(lines) == 3, proc.stdout + proc.stderr
    assert all("pipe.tif" in line and "not a regular file" in line for line in lines), lines


def test_driver_check_after_open_refuses_a_vrt(tmp_path, monkeypatch):
    """Behind the content sniffing, the opened dataset's driver is checked too."""
    from thelper_geo import rasters

    vrt = vrt_named_tif(tmp_path)
    monkeypatch.setattr(rasters, "check_local_file", lambda path, what: None)
    with pytest.raises(DataError, match=r"innocent\.tif' is a GDAL/OGR VRT"):
        rasters.open_raster(str(vrt))
