"""Tests of eo_common.raster: GeoTIFF round trips, errors, band stacking, tiling and blending."""

from __future__ import annotations

import math
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.io
from affine import Affine
from eo_common.raster import (
    Raster,
    RasterError,
    RasterNotFoundError,
    blend_weights,
    check_not_all_nodata,
    check_same_grid,
    missing_mask,
    predict_array_tiled,
    read_raster,
    sliding_window_predict,
    stack_bands,
    tile_offsets,
    tile_windows,
    write_raster,
)
from rasterio.crs import CRS
from rasterio.windows import Window

UTM33 = CRS.from_epsg(32633)
# a Sentinel-2 tile origin (T33UUP), 10 m pixels
T10 = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5300040.0)


def _write(path: Path, array: np.ndarray, **kw) -> Path:
    kw.setdefault("crs", UTM33)
    kw.setdefault("transform", T10)
    return write_raster(path, array, **kw)


def _same_nodata(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or a == b


# --------------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "nodata", "shape"),
    [
        ("uint8", 255, (1, 40, 50)),
        ("uint16", 0, (13, 33, 47)),
        ("int16", -32768, (2, 20, 20)),
        ("float32", -9999.0, (6, 256, 300)),  # large enough to be tiled
        ("float32", float("nan"), (2, 17, 9)),
        ("float64", None, (3, 8, 8)),
        ("int32", -1, (1, 5, 7)),
    ],
)
def test_write_read_roundtrip_keeps_everything(tmp_path, dtype, nodata, shape):
    rng = np.random.default_rng(0)
    if np.dtype(dtype).kind == "f":
        array = (rng.standard_normal(shape) * 100).astype(dtype)
        if nodata is not None:
            array[0, 0, :3] = nodata
    else:
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=shape, endpoint=True, dtype=dtype)
    names = [f"B{i:02d}" for i in range(1, shape[0] + 1)]
    transform = Affine(20.0, 0.0, 600000.5, 0.0, -20.0, 4900000.25)
    path = write_raster(
        tmp_path / "sub" / "r.tif",
        array,
        crs="EPSG:32633",
        transform=transform,
        nodata=nodata,
        band_names=names,
    )
    got = read_raster(path)
    assert got.array.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.array, array)  # NaN == NaN for assert_array_equal
    assert got.crs == UTM33
    assert got.transform == transform  # exact, not approximate
    assert _same_nodata(got.nodata, nodata)
    assert got.band_names == names
    # what is on disk, read independently with rasterio
    with rasterio.open(path) as src:
        assert src.compression.name.lower() == "deflate"
        tiled = shape[1] >= 256 and shape[2] >= 256
        assert src.profile.get("tiled", False) == tiled
        if tiled:
            assert src.block_shapes[0] == (256, 256)
    # the profile property reproduces the file
    again = write_raster(tmp_path / "again.tif", got.array, **got.profile)
    got2 = read_raster(again)
    np.testing.assert_array_equal(got2.array, array)
    assert (got2.crs, got2.transform, got2.band_names) == (UTM33, transform, names)
    assert _same_nodata(got2.nodata, nodata)


def test_write_2d_bool_and_dtype_cast(tmp_path):
    mask = np.zeros((10, 12), dtype=bool)
    mask[2:5, 3:7] = True
    r = read_raster(_write(tmp_path / "m.tif", mask))
    assert r.array.shape == (1, 10, 12) and r.array.dtype == np.uint8
    np.testing.assert_array_equal(r.array[0], mask.astype(np.uint8))
    assert r.band_names == ["band_1"]  # every band gets a description
    r = read_raster(_write(tmp_path / "c.tif", np.full((1, 4, 4), 3.7), dtype="float32"))
    assert r.array.dtype == np.float32
    assert read_raster(tmp_path / "c.tif", dtype="float64").array.dtype == np.float64


def test_write_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = _write(tmp_path / "keep.tif", np.ones((1, 8, 8), dtype=np.uint8))

    def broken_write(self, *args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(rasterio.io.DatasetWriter, "write", broken_write)
    with pytest.raises(OSError, match="simulated"):
        _write(path, np.zeros((1, 8, 8), dtype=np.uint8))
    monkeypatch.undo()
    np.testing.assert_array_equal(read_raster(path).array, 1)  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tif"]  # no temp file left


def test_read_bands_and_window_match_slicing(tmp_path):
    rng = np.random.default_rng(1)
    array = rng.integers(0, 10000, size=(4, 30, 40), dtype=np.uint16)
    path = _write(tmp_path / "s2.tif", array, band_names=["B02", "B03", "B04", "B08"])
    window = Window(col_off=7, row_off=5, width=20, height=11)
    r = read_raster(path, bands=[4, 1], window=window)
    np.testing.assert_array_equal(r.array, array[[3, 0], 5:16, 7:27])
    assert r.band_names == ["B08", "B02"]
    # the window's own transform: its upper-left corner is pixel (row 5, col 7) of the file
    assert r.transform == T10 @ Affine.translation(7, 5)
    assert r.transform.c == 399960.0 + 70.0 and r.transform.f == 5300040.0 - 50.0
    assert r.bounds.left == r.transform.c and r.bounds.right == r.transform.c + 200.0
    # a window read written back sits exactly at its place in the file's grid
    piece = write_raster(tmp_path / "piece.tif", r.array, **r.profile)
    with rasterio.open(path) as src, rasterio.open(piece) as p:
        assert src.window(*p.bounds) == Window(7, 5, 20, 11)
    single = read_raster(path, bands=2)
    np.testing.assert_array_equal(single.array, array[1:2])


# --------------------------------------------------------------------------------------------------
# errors name the file
# --------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(RasterNotFoundError, match="nope.tif") as info:
        read_raster(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)
    assert info.value.path == path


def test_unreadable_and_folder(tmp_path):
    bad = tmp_path / "not_a_raster.tif"
    bad.write_text("hello")
    with pytest.raises(RasterError, match=r"not_a_raster\.tif: not a readable raster"):
        read_raster(bad)
    with pytest.raises(RasterError, match="is a folder"):
        read_raster(tmp_path)


def test_wrong_band_count_band_index_and_window(tmp_path):
    path = _write(tmp_path / "s2_12.tif", np.zeros((12, 8, 8), dtype=np.uint16))
    with pytest.raises(RasterError, match=r"s2_12\.tif: expected 13 band\(s\), found 12"):
        read_raster(path, expected_bands=13)
    assert read_raster(path, expected_bands=12).count == 12
    with pytest.raises(RasterError, match=r"s2_12\.tif: band index 13 out of range"):
        read_raster(path, bands=[1, 13])
    with pytest.raises(RasterError, match=r"s2_12\.tif: band index 0"):
        read_raster(path, bands=[0])
    with pytest.raises(RasterError, match=r"s2_12\.tif: window .* not inside"):
        read_raster(path, window=Window(4, 4, 5, 2))


def test_check_same_grid_names_both_files_and_the_difference(tmp_path):
    a = _write(tmp_path / "stack.tif", np.zeros((2, 10, 10), dtype=np.float32))
    same = _write(tmp_path / "labels.tif", np.zeros((1, 10, 10), dtype=np.uint8))
    check_same_grid([a, same])  # different band counts and dtypes are fine
    other_crs = _write(tmp_path / "crs.tif", np.zeros((1, 10, 10)), crs="EPSG:32634")
    other_shape = _write(tmp_path / "shape.tif", np.zeros((1, 10, 11)))
    other_tf = _write(
        tmp_path / "tf.tif", np.zeros((1, 10, 10)), transform=T10 @ Affine.translation(1, 0)
    )
    for path, what in [(other_crs, "CRS"), (other_shape, "shape 10x11"), (other_tf, "transform")]:
        with pytest.raises(RasterError) as info:
            check_same_grid([a, same, path])
        msg = str(info.value)
        assert msg.startswith(str(path)) and str(a) in msg and what in msg
    with pytest.raises(RasterNotFoundError, match="gone.tif"):
        check_same_grid([a, tmp_path / "gone.tif"])


def test_check_not_all_nodata_and_missing_mask():
    tile = np.full((2, 4, 4), -9999.0, dtype=np.float32)
    with pytest.raises(RasterError, match=r"^stack\.tif window 3: tile is entirely nodata"):
        check_not_all_nodata(tile, -9999.0, "stack.tif window 3")
    tile[1, 2, 2] = np.nan  # NaN counts as missing too
    with pytest.raises(RasterError):
        check_not_all_nodata(tile, -9999.0, "x.tif")
    with pytest.raises(RasterError):
        check_not_all_nodata(np.full((3, 3), np.nan), None, "x.tif")
    tile[0, 1, 1] = 0.5
    check_not_all_nodata(tile, -9999.0, "x.tif")  # one valid value is enough
    # missing_mask: 'any' vs 'all' over bands, NaN counts as missing
    x = np.array([[[1.0, -9999.0, np.nan, -9999.0]], [[2.0, 3.0, 4.0, -9999.0]]])
    assert missing_mask(x, -9999.0, "any").tolist() == [[False, True, True, True]]
    assert missing_mask(x, -9999.0, "all").tolist() == [[False, False, False, True]]
    assert missing_mask(x, None).tolist() == [[False, False, True, False]]


def test_write_errors_name_the_file(tmp_path):
    with pytest.raises(RasterError, match=r"lab\.tif: nodata 300 does not fit dtype uint8"):
        _write(tmp_path / "lab.tif", np.zeros((1, 4, 4), dtype=np.uint8), nodata=300)
    with pytest.raises(RasterError, match=r"lab\.tif: nodata nan does not fit"):
        _write(tmp_path / "lab.tif", np.zeros((1, 4, 4), dtype=np.uint8), nodata=float("nan"))
    with pytest.raises(RasterError, match=r"lab\.tif: 1 band names for 2 band"):
        _write(tmp_path / "lab.tif", np.zeros((2, 4, 4)), band_names=["a"])
    with pytest.raises(RasterError, match=r"lab\.tif: array must have shape"):
        _write(tmp_path / "lab.tif", np.zeros(4))
    with pytest.raises(RasterError, match="multiple of 16"):
        _write(tmp_path / "lab.tif", np.zeros((1, 4, 4)), blocksize=100)
    assert not (tmp_path / "lab.tif").exists()


# --------------------------------------------------------------------------------------------------
# stacking 10 m / 20 m / 60 m bands
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def s2_bands(tmp_path):
    """One 10 m band (12x12), one 20 m band (6x6), one 60 m band (2x2) over the same 120 m extent."""
    b02 = np.arange(144, dtype=np.uint16).reshape(1, 12, 12)
    b05 = (np.arange(36, dtype=np.uint16).reshape(1, 6, 6) * 10 + 1000).astype(np.uint16)
    b01 = np.array([[[7, 8], [9, 11]]], dtype=np.uint16)
    paths = [
        _write(tmp_path / "B02.tif", b02),
        _write(tmp_path / "B05.tif", b05, transform=Affine(20, 0, T10.c, 0, -20, T10.f)),
        _write(tmp_path / "B01.tif", b01, transform=Affine(60, 0, T10.c, 0, -60, T10.f)),
    ]
    return paths, (b02, b05, b01)


def test_stack_bands_nearest_onto_10m(s2_bands):
    paths, (b02, b05, b01) = s2_bands
    s = stack_bands(paths, reference=0, resampling="nearest")
    assert s.array.shape == (3, 12, 12) and s.array.dtype == np.uint16
    assert (s.crs, s.transform) == (UTM33, T10)
    assert s.band_names == ["B02", "B05", "B01"]
    np.testing.assert_array_equal(s.array[0], b02[0])
    # nearest upsampling by 2 and 6 = each coarse pixel repeated (hand-made expectation)
    np.testing.assert_array_equal(s.array[1], np.kron(b05[0], np.ones((2, 2), dtype=np.uint16)))
    np.testing.assert_array_equal(s.array[2], np.kron(b01[0], np.ones((6, 6), dtype=np.uint16)))


def test_stack_bands_average_onto_20m_and_explicit_shape(tmp_path, s2_bands):
    paths, (b02, b05, b01) = s2_bands
    fine = np.random.default_rng(2).random((1, 12, 12)).astype(np.float32)
    fine_path = _write(tmp_path / "fine.tif", fine)
    s = stack_bands([fine_path, paths[1]], reference=1, resampling="average")
    assert s.array.shape == (2, 6, 6) and s.transform == Affine(20, 0, T10.c, 0, -20, T10.f)
    block_means = fine[0].reshape(6, 2, 6, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(s.array[0], block_means, rtol=1e-6)
    np.testing.assert_array_equal(s.array[1], b05[0])
    # explicit (height, width) on the extent of the first file
    s = stack_bands([fine_path], reference=(4, 4), resampling="average")
    assert s.array.shape == (1, 4, 4) and s.transform == Affine(30, 0, T10.c, 0, -30, T10.f)
    np.testing.assert_allclose(s.array[0], fine[0].reshape(4, 3, 4, 3).mean(axis=(1, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="unknown resampling 'fancy'"):
        stack_bands(paths, resampling="fancy")


def test_stack_bands_refuses_other_crs_unless_asked(tmp_path, s2_bands):
    paths, _ = s2_bands
    # the same place in UTM 32N, 10 m pixels, constant value
    with rasterio.open(paths[0]) as src:
        left, bottom, right, top = rasterio.warp.transform_bounds(UTM33, "EPSG:32632", *src.bounds)
    t32 = Affine(10, 0, left - 200, 0, -10, top + 200)
    w = int((right - left) / 10) + 40
    h = int((top - bottom) / 10) + 40
    other = _write(
        tmp_path / "utm32.tif", np.full((1, h, w), 5, np.uint16), crs="EPSG:32632", transform=t32
    )
    with pytest.raises(RasterError, match=r"utm32\.tif: CRS EPSG:32632 differs from the reference"):
        stack_bands([paths[0], other])
    s = stack_bands([paths[0], other], reproject=True, resampling="nearest")
    assert s.array.shape == (2, 12, 12) and s.crs == UTM33
    np.testing.assert_array_equal(s.array[1], 5)


def test_stack_bands_without_crs_uses_the_transforms(tmp_path):
    """Files without a CRS (e.g. exported without georeference) still stack by their pixel grids."""
    coarse = np.array([[[1, 2], [3, 4]]], dtype=np.uint16)
    fine = _write(
        tmp_path / "fine.tif",
        np.zeros((1, 4, 4), np.uint16),
        crs=None,
        transform=Affine(10, 0, 0, 0, -10, 0),
    )
    coarse_path = _write(
        tmp_path / "coarse.tif", coarse, crs=None, transform=Affine(20, 0, 0, 0, -20, 0)
    )
    s = stack_bands([fine, coarse_path], reference=0, resampling="nearest")
    assert s.crs is None and s.array.shape == (2, 4, 4)
    np.testing.assert_array_equal(s.array[1], np.kron(coarse[0], np.ones((2, 2), np.uint16)))
    with pytest.raises(RasterError, match="CRS None differs"):
        stack_bands([_write(tmp_path / "geo.tif", np.zeros((1, 4, 4), np.uint16)), coarse_path])


def test_stack_bands_nodata_disagreement(tmp_path):
    a = _write(tmp_path / "a.tif", np.zeros((1, 4, 4), np.float32), nodata=-9999)
    b = _write(tmp_path / "b.tif", np.zeros((1, 4, 4), np.float32), nodata=0)
    with pytest.raises(RasterError, match="disagree on nodata"):
        stack_bands([a, b])


# --------------------------------------------------------------------------------------------------
# tiling
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tile_size", "overlap"), [(8, 0), (8, 3), (16, 0), (16, 5), (16, 15), (5, 2)]
)
def test_tile_windows_cover_every_pixel(tile_size, overlap):
    """Property over many sizes: sizes below, at, and above the tile, exact multiples of the stride."""
    stride = tile_size - overlap
    sizes = sorted(set(range(1, 3 * tile_size + 2)) | {tile_size + k * stride for k in range(6)})
    for height in sizes[::3] + [tile_size]:
        for width in sizes:
            windows = tile_windows(height, width, tile_size, overlap)
            cover = np.zeros((height, width), dtype=np.int32)
            for w in windows:
                assert w.row_off >= 0 and w.col_off >= 0
                assert w.row_off + w.height <= height and w.col_off + w.width <= width
                assert (w.height, w.width) == (min(tile_size, height), min(tile_size, width))
                cover[w.row_off : w.row_off + w.height, w.col_off : w.col_off + w.width] += 1
            assert cover.min() >= 1, (height, width)
            rows = tile_offsets(height, tile_size, overlap)
            cols = tile_offsets(width, tile_size, overlap)
            assert len(windows) == len(rows) * len(cols)
            for offs, n in [(rows, height), (cols, width)]:
                # as few tiles as the stride allows, steps never larger than the stride
                expected = 1 if n <= tile_size else math.ceil((n - tile_size) / stride) + 1
                assert len(offs) == expected
                assert all(0 < b - a <= stride for a, b in zip(offs, offs[1:]))
                assert offs[-1] + min(tile_size, n) == n  # the last tile ends at the border
            if overlap == 0 and height % tile_size == 0 and width % tile_size == 0:
                assert cover.max() == 1  # exact multiples without overlap tile exactly


def test_tile_windows_small_raster_and_bad_arguments():
    assert tile_windows(5, 3, 16, 4) == [Window(0, 0, 3, 5)]
    with pytest.raises(ValueError, match="overlap"):
        tile_windows(10, 10, 8, 8)
    with pytest.raises(ValueError, match="tile_size"):
        tile_windows(10, 10, 0, 0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize(("tile_size", "overlap"), [(16, 4), (32, 8), (9, 3), (8, 0), (10, 7)])
def test_blend_weights_positive_symmetric_and_complementary(kind, tile_size, overlap):
    w = blend_weights(tile_size, overlap, kind)
    assert w.shape == (tile_size, tile_size) and w.dtype == np.float32
    assert w.min() > 0 and w.max() <= 1.0
    if 2 * overlap < tile_size:
        assert w.max() == 1.0
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_array_equal(w, w[::-1, ::-1])
    row = w[tile_size // 2].astype(np.float64)
    if 2 * overlap <= tile_size:
        # the falling ramp of a tile plus the rising ramp of its neighbour = 1 over the overlap
        if overlap:
            np.testing.assert_allclose(row[-overlap:] + row[:overlap], 1.0, rtol=1e-6)
        assert np.all(row[overlap : tile_size - overlap] == 1.0)
    np.testing.assert_array_equal(blend_weights(tile_size, overlap, "none"), 1.0)


def test_blend_weights_known_values():
    np.testing.assert_allclose(blend_weights(4, 1, "linear")[0], [0.25, 0.5, 0.5, 0.25])
    # cosine ramp over 3 pixels: (1 - cos(pi * k / 4)) / 2 for k = 1, 2, 3
    expected = [(1 - math.cos(math.pi * k / 4)) / 2 for k in (1, 2, 3)]
    np.testing.assert_allclose(blend_weights(8, 3, "cosine")[4, :3], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown blend kind"):
        blend_weights(8, 2, "gaussian")


# --------------------------------------------------------------------------------------------------
# sliding-window prediction
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def float_raster(tmp_path):
    rng = np.random.default_rng(3)
    array = (rng.random((3, 75, 130)) * 1000).astype(np.float32)
    path = _write(tmp_path / "src.tif", array, band_names=["a", "b", "c"])
    return path, array


@pytest.mark.parametrize("blend", ["linear", "cosine", "none"])
def test_identity_prediction_reproduces_the_input(tmp_path, float_raster, blend):
    path, array = float_raster
    out = sliding_window_predict(
        path,
        tmp_path / "out.tif",
        lambda t: t,
        out_bands=3,
        tile_size=32,
        overlap=8,
        blend=blend,
        progress=False,
    )
    r = read_raster(out)
    np.testing.assert_allclose(r.array, array, rtol=1e-6)
    assert (r.crs, r.transform, r.array.dtype) == (UTM33, T10, np.float32)
    np.testing.assert_allclose(
        predict_array_tiled(array, lambda t: t, out_bands=3, tile_size=32, overlap=8, blend=blend),
        array,
        rtol=1e-6,
    )


def test_identity_integer_output_is_exact(tmp_path):
    array = np.random.default_rng(4).integers(0, 10000, size=(2, 50, 41), dtype=np.uint16)
    src = _write(tmp_path / "dn.tif", array)
    out = sliding_window_predict(
        src,
        tmp_path / "o.tif",
        lambda t: t,
        out_bands=2,
        tile_size=16,
        overlap=5,
        out_dtype="uint16",
        progress=False,
    )
    r = read_raster(out)
    assert r.array.dtype == np.uint16
    np.testing.assert_array_equal(r.array, array)


@pytest.mark.parametrize("blend", ["linear", "cosine", "none"])
@pytest.mark.parametrize(
    ("height", "width", "overlap"), [(208, 256, 16), (113, 300, 16), (150, 170, 24)]
)
def test_per_tile_offsets_blend_without_seams(tmp_path, blend, height, width, overlap):
    """predict_fn adds a random constant per tile; blending must spread each jump over the overlap.

    The output is a convex combination of the tile offsets. Between neighbouring pixels the blended
    weights change by at most pi/2 / (overlap + 1) (cosine; 1 / (overlap + 1) linear), so no seam is
    larger than 2 / (overlap + 1) of the offset spread. Plain averaging ("none") keeps hard seams.
    """
    rng = np.random.default_rng(5)
    offsets: list[float] = []

    def add_offset(tile: np.ndarray) -> np.ndarray:
        offsets.append(float(rng.uniform(0, 10)))
        return tile[:1] + offsets[-1]

    src = _write(tmp_path / "zeros.tif", np.zeros((1, height, width), np.float32))
    out = sliding_window_predict(
        src,
        tmp_path / "o.tif",
        add_offset,
        out_bands=1,
        tile_size=64,
        overlap=overlap,
        blend=blend,
        progress=False,
    )
    y = read_raster(out).array[0].astype(np.float64)
    spread = max(offsets) - min(offsets)
    assert y.min() >= min(offsets) - 1e-4 and y.max() <= max(offsets) + 1e-4
    seam = max(np.abs(np.diff(y, axis=0)).max(), np.abs(np.diff(y, axis=1)).max())
    bound = 2.0 / (overlap + 1) * spread
    if blend == "none":
        assert seam > bound  # the check above can fail: hard seams are caught
    else:
        assert seam <= bound


def test_reads_are_one_tile_row_band_at_most(tmp_path, monkeypatch):
    """The memory bound: every source read is a window of at most tile_size rows, never the raster."""
    height, width, tile, overlap = 200, 90, 32, 8
    array = np.random.default_rng(6).random((2, height, width)).astype(np.float32)
    src = _write(tmp_path / "big.tif", array)
    reads: list[tuple[int, int, tuple[int, ...]]] = []
    original_read = rasterio.io.DatasetReader.read

    def recording_read(self, *args, **kwargs):
        result = original_read(self, *args, **kwargs)
        window = kwargs.get("window")
        assert window is not None, "a read without a window loads the whole raster"
        reads.append((int(window.row_off), int(window.height), result.shape))
        return result

    monkeypatch.setattr(rasterio.io.DatasetReader, "read", recording_read)
    out = sliding_window_predict(
        src,
        tmp_path / "o.tif",
        lambda t: t * 2,
        out_bands=2,
        tile_size=tile,
        overlap=overlap,
        progress=False,
    )
    monkeypatch.undo()
    row_offsets = tile_offsets(height, tile, overlap)
    assert [r[0] for r in reads] == row_offsets  # one read per tile row, top to bottom
    for _, rows, shape in reads:
        assert rows <= tile and shape[1] <= tile and shape[2] == width
        assert np.prod(shape) <= 2 * tile * width
    np.testing.assert_allclose(read_raster(out).array, array * 2, rtol=1e-6)


def test_peak_memory_does_not_grow_with_height(tmp_path):
    """tracemalloc peak (numpy buffers included) of a 16x taller raster stays about the same."""
    width, tile, overlap = 64, 32, 8
    peaks = {}
    for height in (128, 2048):
        src = _write(tmp_path / f"h{height}.tif", np.ones((4, height, width), np.float32))
        tracemalloc.start()
        sliding_window_predict(
            src,
            tmp_path / f"o{height}.tif",
            lambda t: t[:2] + 1,
            out_bands=2,
            tile_size=tile,
            overlap=overlap,
            progress=False,
        )
        peaks[height] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    whole_tall_raster = 4 * 2048 * width * 4
    assert peaks[2048] < 1.5 * peaks[128] + 64 * 1024, peaks
    assert peaks[2048] < whole_tall_raster / 2, peaks


def test_small_raster_is_padded_by_reflection_and_cropped(tmp_path):
    array = np.random.default_rng(7).random((2, 11, 20)).astype(np.float32)
    src = _write(tmp_path / "small.tif", array)
    seen = []

    def fn(t):
        seen.append(t.copy())
        return np.stack([t[0] * 2 + 1, t[1] - t[0]])

    out = sliding_window_predict(
        src, tmp_path / "o.tif", fn, out_bands=2, tile_size=32, overlap=8, progress=False
    )
    assert len(seen) == 1 and seen[0].shape == (2, 32, 32) and seen[0].dtype == np.float32
    # the padding is numpy's reflection of the raster (an independent reference)
    np.testing.assert_array_equal(
        seen[0], np.pad(array, ((0, 0), (0, 21), (0, 12)), mode="reflect")
    )
    r = read_raster(out)
    assert r.array.shape == (2, 11, 20)
    np.testing.assert_allclose(
        r.array, np.stack([array[0] * 2 + 1, array[1] - array[0]]), rtol=1e-6
    )
    # one dimension smaller than the tile, the other larger
    tall = np.random.default_rng(8).random((1, 70, 9)).astype(np.float32)
    np.testing.assert_allclose(
        predict_array_tiled(tall, lambda t: t, out_bands=1, tile_size=16, overlap=4),
        tall,
        rtol=1e-6,
    )


def test_nodata_pixels_stay_nodata(tmp_path):
    height, width = 64, 80
    array = np.random.default_rng(9).random((2, height, width)).astype(np.float32) + 1.0
    array[:, :5, :] = -9999.0  # nodata border at the top, all bands
    array[:, :, -3:] = -9999.0
    array[1, 30, 40] = -9999.0  # one band missing: the pixel counts as missing
    array[0, 50, 10] = np.nan  # NaN counts as missing
    array[:, 32:, :32] = -9999.0  # a whole tile of nodata: not predicted at all
    src = _write(tmp_path / "stack.tif", array, nodata=-9999.0)
    calls = []

    def fn(t):
        calls.append(t.shape)
        return t.sum(axis=0, keepdims=True)

    out = sliding_window_predict(
        src, tmp_path / "o.tif", fn, out_bands=1, tile_size=32, overlap=0, progress=False
    )
    r = read_raster(out)
    missing = (array == -9999.0).any(axis=0) | np.isnan(array).any(axis=0)
    assert r.nodata == -9999.0
    np.testing.assert_array_equal(r.array[0] == -9999.0, missing)
    np.testing.assert_allclose(r.array[0][~missing], array.sum(axis=0)[~missing], rtol=1e-6)
    n_tiles = len(tile_windows(height, width, 32, 0))
    assert len(calls) == n_tiles - 1  # the all-nodata tile was skipped
    # integer output with an explicit nodata value
    out8 = sliding_window_predict(
        src,
        tmp_path / "o8.tif",
        lambda t: np.ones((1, 32, 32)),
        out_bands=1,
        tile_size=32,
        overlap=8,
        out_dtype="uint8",
        nodata=255,
        progress=False,
    )
    r8 = read_raster(out8)
    assert r8.nodata == 255 and r8.array.dtype == np.uint8
    np.testing.assert_array_equal(r8.array[0], np.where(missing, 255, 1))


def test_sliding_window_errors_and_atomic_output(tmp_path, float_raster):
    path, _ = float_raster
    out = tmp_path / "out.tif"
    with pytest.raises(ValueError, match=r"predict_fn returned shape \(3, 32, 32\)"):
        sliding_window_predict(
            path, out, lambda t: t, out_bands=1, tile_size=32, overlap=8, progress=False
        )
    calls = []

    def fails_late(t):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("model crashed")
        return t

    with pytest.raises(RuntimeError, match="model crashed"):
        sliding_window_predict(
            path, out, fails_late, out_bands=3, tile_size=32, overlap=8, progress=False
        )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tif"]  # no temp file left behind
    nodata_src = _write(tmp_path / "nd.tif", np.zeros((1, 8, 8), np.float32), nodata=-9999.0)
    with pytest.raises(
        RasterError, match=r"out\.tif: output nodata -9999.0 does not fit out_dtype uint8"
    ):
        sliding_window_predict(
            nodata_src,
            out,
            lambda t: t,
            out_bands=1,
            tile_size=8,
            overlap=0,
            out_dtype="uint8",
            progress=False,
        )
    with pytest.raises(RasterNotFoundError, match="missing.tif"):
        sliding_window_predict(
            tmp_path / "missing.tif", out, lambda t: t, out_bands=1, tile_size=8, overlap=0
        )
    with pytest.raises(RasterError, match=r"src\.tif: band index 4"):
        sliding_window_predict(
            path, out, lambda t: t, out_bands=1, tile_size=8, overlap=0, bands=[4]
        )


def test_bands_selection_and_strip_layout(tmp_path, float_raster):
    path, array = float_raster
    out = sliding_window_predict(
        path,
        tmp_path / "o.tif",
        lambda t: t[::-1],
        out_bands=2,
        tile_size=24,
        overlap=6,
        bands=[3, 1],
        progress=False,
    )
    np.testing.assert_allclose(read_raster(out).array, array[[0, 2]], rtol=1e-6)
    with rasterio.open(out) as dst:
        assert dst.compression.name.lower() == "deflate"
        assert dst.block_shapes[0] == (16, 130)  # strips of 16 rows
        profile, values = dst.profile, dst.read()
    # each strip was written once, whole: the file is as small as a one-shot write of the same pixels
    profile.update(predictor=3, zlevel=1)  # creation options are not part of the read profile
    with rasterio.open(tmp_path / "one_shot.tif", "w", **profile) as ref:
        ref.write(values)
    assert out.stat().st_size == (tmp_path / "one_shot.tif").stat().st_size


def test_raster_dataclass():
    r = Raster(np.zeros((2, 3, 4), np.uint16), UTM33, T10, 0, ["a", "b"])
    assert (r.count, r.height, r.width) == (2, 3, 4)
    assert r.profile == {
        "crs": UTM33,
        "transform": T10,
        "nodata": 0,
        "dtype": np.dtype("uint16"),
        "band_names": ["a", "b"],
    }
    assert r.bounds == (T10.c, T10.f - 30, T10.c + 40, T10.f)
