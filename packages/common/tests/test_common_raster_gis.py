"""GIS-ready outputs: tiled, compressed, overviews, descriptions, COG, class maps with colours and
names, and GDAL virtual paths as inputs."""

from __future__ import annotations

import re
import zipfile
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
from affine import Affine
from eo_common.raster import (
    ClassInfo,
    finalize_geotiff,
    read_class_names,
    read_raster,
    write_class_map,
    write_raster,
)
from rio_cogeo.cogeo import cog_validate

UTM = "EPSG:32633"
T = Affine(10, 0, 400000, 0, -10, 5300000)
RISK = [
    ClassInfo(0, "low", (26, 150, 65)),
    ClassInfo(1, "medium", (253, 174, 97)),
    ClassInfo(2, "high", (215, 25, 28)),
]


def _field(shape=(600, 700), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(2, *shape)).astype(np.float32)


def test_geotiff_is_tiled_compressed_with_overviews_and_descriptions(tmp_path):
    path = write_raster(tmp_path / "x.tif", _field(), crs=UTM, transform=T, nodata=-9999.0)
    with rasterio.open(path) as src:
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.compression.name.lower() == "deflate"
        assert src.overviews(1) == [2, 4] and src.overviews(2) == [2, 4]
        assert src.descriptions == ("band_1", "band_2")
        assert src.nodata == -9999.0
    small = write_raster(tmp_path / "s.tif", _field((40, 50)), crs=UTM, transform=T)
    with rasterio.open(small) as src:
        assert src.overviews(1) == []  # one tile: nothing to overview


def test_cog_is_valid_and_keeps_values(tmp_path):
    values = _field()
    path = write_raster(
        tmp_path / "c.tif", values, crs=UTM, transform=T, cog=True, band_names=["vv", "vh"]
    )
    valid, errors, _ = cog_validate(str(path), quiet=True)
    assert valid, errors
    r = read_raster(path)
    np.testing.assert_array_equal(r.array, values)
    assert r.band_names == ["vv", "vh"] and r.transform == T
    # a plain tiled GeoTIFF is not a COG until finalize_geotiff makes it one (streamed outputs)
    plain = write_raster(tmp_path / "p.tif", values, crs=UTM, transform=T)
    assert not cog_validate(str(plain), quiet=True)[0]
    finalize_geotiff(plain)
    assert cog_validate(str(plain), quiet=True)[0]
    np.testing.assert_array_equal(read_raster(plain).array, values)


def test_class_map_opens_with_colours_names_and_overviews(tmp_path):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=(700, 600)).astype(np.uint8)
    labels[:20] = 255
    path = write_class_map(
        tmp_path / "risk.tif", labels, crs=UTM, transform=T, classes=RISK, description="risk class"
    )
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as src:
        cmap = src.colormap(1)
        assert cmap[0][:3] == (26, 150, 65) and cmap[2][:3] == (215, 25, 28)
        assert cmap[255][3] == 0  # nodata transparent
        assert src.descriptions == ("risk class",) and src.nodata == 255
        assert src.overviews(1) == [2, 4]
        overview = src.read(1, out_shape=(350, 300))  # read from the first overview
    # mode resampling: an overview holds only codes that exist (never 1.5 or 0.33)
    assert set(np.unique(overview)) <= {0, 1, 2, 255}
    np.testing.assert_array_equal(read_raster(path).array[0], labels)
    assert read_class_names(path) == {0: "low", 1: "medium", 2: "high"}
    # GDAL's category names (PAM sidecar) and the QGIS style sidecar
    root = ElementTree.parse(f"{path}.aux.xml").getroot()
    assert [c.text for c in root.iter("Category")] == ["low", "medium", "high"]
    qml = (tmp_path / "risk.qml").read_text()
    assert re.findall(r'label="(\w+)"', qml) == ["low", "medium", "high"]
    assert 'type="paletted"' in qml and "#d7191c" in qml


def test_class_map_refuses_fractional_codes(tmp_path):
    with pytest.raises(ValueError, match="integers"):
        write_class_map(
            tmp_path / "x.tif", np.full((4, 4), 1.5), crs=UTM, transform=T, classes=RISK
        )


def test_gdal_virtual_paths_are_inputs(tmp_path):
    values = _field((30, 40))
    path = write_raster(tmp_path / "b.tif", values, crs=UTM, transform=T)
    with zipfile.ZipFile(tmp_path / "scene.zip", "w") as z:
        z.write(path, "scene/b.tif")
    r = read_raster(f"/vsizip/{tmp_path / 'scene.zip'}/scene/b.tif")
    np.testing.assert_array_equal(r.array, values)
    with rasterio.MemoryFile(path.read_bytes()) as mem:
        assert mem.name.startswith("/vsimem/")
        np.testing.assert_array_equal(read_raster(mem.name).array, values)
    with pytest.raises(FileNotFoundError, match="GDAL cannot open"):
        read_raster(f"/vsizip/{tmp_path / 'scene.zip'}/scene/missing.tif")


def test_streamed_prediction_gets_band_names_and_becomes_a_cog(tmp_path):
    """sliding_window_predict names the output bands; finalize_geotiff keeps names, nodata and
    values while making the strip-organised stream a tiled COG with overviews."""
    from eo_common.raster import sliding_window_predict

    values = _field()
    values[:, 5:9, 7:11] = -9999.0
    src = write_raster(tmp_path / "in.tif", values, crs=UTM, transform=T, nodata=-9999.0)

    def fn(t):
        return np.stack([t[0] + t[1], t[0] - t[1], t[0] * 2])

    out = sliding_window_predict(
        src, tmp_path / "out.tif", fn, out_bands=3, tile_size=128, overlap=16, progress=False,
        band_names=["sum", "difference", "double vv"],
    )  # fmt: skip
    streamed = read_raster(out).array
    with rasterio.open(out) as s:
        assert s.descriptions == ("sum", "difference", "double vv") and not s.profile["tiled"]
    finalize_geotiff(out)
    valid, errors, _ = cog_validate(str(out), quiet=True)
    assert valid, errors
    with rasterio.open(out) as s:
        assert s.descriptions == ("sum", "difference", "double vv")
        assert s.nodata == -9999.0 and s.overviews(1) == [2, 4] and s.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(s.read(), streamed)
        assert (s.read(1)[5:9, 7:11] == -9999.0).all()
    with pytest.raises(ValueError, match="2 names for 3 output bands"):
        sliding_window_predict(
            src, tmp_path / "bad.tif", fn, out_bands=3, tile_size=128, overlap=16,
            progress=False, band_names=["a", "b"],
        )  # fmt: skip
    assert not (tmp_path / "bad.tif").exists()
