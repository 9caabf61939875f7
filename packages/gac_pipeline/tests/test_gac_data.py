"""Reader, catalogue, bad tiles and padding on fake data in the real layout, and on the real sample."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from gac_pipeline.data import (
    S2_BANDS,
    BadTileError,
    PairedTileDataset,
    build_catalogue,
    load_catalogue,
    read_tile,
    save_catalogue,
)
from gac_pipeline.model import crop_padding, pad_to_multiple


def test_catalogue_splits_order_and_roundtrip(fake_benv2, tmp_path):
    everything = build_catalogue(fake_benv2)
    assert len(everything) == 6
    assert [r.patch_id for r in everything] == sorted(r.patch_id for r in everything)
    train = build_catalogue(fake_benv2, "train")
    assert {r.split for r in train} == {"train"} and len(train) == 2
    assert build_catalogue(fake_benv2, "val") == build_catalogue(fake_benv2, "validation")
    assert len(build_catalogue(fake_benv2, max_tiles=3)) == 3
    assert load_catalogue(save_catalogue(everything, tmp_path / "cat.csv")) == everything
    with pytest.raises(ValueError, match="unknown split"):
        build_catalogue(fake_benv2, "dev")


def test_missing_metadata_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.parquet"):
        build_catalogue(tmp_path)


def test_reader_keeps_values_and_s1_float(fake_benv2):
    record = build_catalogue(fake_benv2)[0]
    tile = read_tile(record)
    assert tile.s1.shape == (2, 120, 120) and tile.s1.dtype == np.float32
    assert tile.s2.shape == (12, 120, 120) and tile.s2.dtype == np.float32
    with rasterio.open(record.s1_band_path("VH")) as src:
        vh = src.read(1)
        assert tile.crs == src.crs
    np.testing.assert_array_equal(tile.s1[1], vh)  # dB kept exactly, fractions included
    assert not np.allclose(tile.s1, np.round(tile.s1))
    with rasterio.open(record.s2_band_path("B04")) as src:  # a 10 m band: read as is
        np.testing.assert_array_equal(
            tile.s2[S2_BANDS.index("B04")], src.read(1).astype(np.float32)
        )
    with rasterio.open(
        record.s2_band_path("B11")
    ) as src:  # a 20 m band: bilinear x2, block means kept
        b11 = src.read(1).astype(np.float64)
    up = tile.s2[S2_BANDS.index("B11")].astype(np.float64)
    block_means = up.reshape(60, 2, 60, 2).mean(axis=(1, 3))
    assert np.abs(block_means - b11)[2:-2, 2:-2].mean() < 0.05 * b11.std() + 1


def test_bad_tiles_raise_with_id_and_file(fake_benv2, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(fake_benv2, root)
    records = build_catalogue(root)
    missing = records[0].s2_band_path("B8A")
    missing.unlink()
    with pytest.raises(BadTileError, match=r"B8A\.tif") as info:
        read_tile(records[0])
    assert records[0].patch_id in str(info.value)
    # wrong size: a 10 m band of 64x64
    path = records[1].s2_band_path("B02")
    with rasterio.open(path) as src:
        profile = src.profile
    profile.update(width=64, height=64, blockxsize=64, blockysize=64, tiled=False)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 64, 64), dtype=profile["dtype"]))
    with pytest.raises(BadTileError, match="expected \\(120, 120\\)"):
        read_tile(records[1])
    # all nodata: every S2 band zero
    for band in S2_BANDS:
        p = records[2].s2_band_path(band)
        with rasterio.open(p, "r+") as dst:
            dst.write(np.zeros((1, dst.height, dst.width), dtype=dst.dtypes[0]))
    with pytest.raises(BadTileError, match="nodata"):
        read_tile(records[2])


@pytest.mark.parametrize("size", [120, 128, 97])
def test_pad_crop_roundtrip(size):
    x = torch.randn(2, 3, size, size + 5)
    padded, pads = pad_to_multiple(x, 16)
    assert padded.shape[-2] % 16 == 0 and padded.shape[-1] % 16 == 0
    assert padded.shape[-2] - size < 16
    torch.testing.assert_close(crop_padding(padded, pads), x, rtol=0, atol=0)


def test_pad_120_to_128_reflects():
    x = torch.arange(120.0).repeat(120, 1)[None, None]
    padded, pads = pad_to_multiple(x)
    assert pads == (4, 4, 4, 4) and padded.shape[-1] == 128
    assert padded[0, 0, 0, :4].tolist() == [4.0, 3.0, 2.0, 1.0]  # reflection, not zeros


def test_nan_and_inf_in_sar_are_missing_one_way(fake_benv2, tmp_path):
    """NaN, +inf, -inf and the nodata value are missing: filled with the band's mean of finite pixels."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(fake_benv2, root)
    record = build_catalogue(root)[0]
    with rasterio.open(record.s1_band_path("VV"), "r+") as dst:
        clean = dst.read(1)
        vv = clean.copy()
        vv[5, 5], vv[6, 7], vv[50, 60] = np.inf, -np.inf, np.nan
        dst.write(vv, 1)
    tile = read_tile(record)
    assert np.isfinite(tile.s1).all()
    keep = np.ones(vv.shape, bool)
    keep[5, 5] = keep[6, 7] = keep[50, 60] = False
    expected_fill = np.float32(clean[keep].astype(np.float32).mean())
    for y, x in ((5, 5), (6, 7), (50, 60)):
        assert tile.s1[0, y, x] == pytest.approx(expected_fill, rel=1e-6)
    np.testing.assert_array_equal(tile.s1[0][keep], clean[keep])
    with rasterio.open(record.s1_band_path("VH"), "r+") as dst:  # a band with nothing finite
        dst.write(np.full((1, 120, 120), np.inf, np.float32))
    with pytest.raises(BadTileError, match=r"no finite pixel.*VH\.tif"):
        read_tile(record)


def test_sar_and_optical_in_different_crs_are_refused(fake_benv2, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(fake_benv2, root)
    record = build_catalogue(root)[0]
    for band in ("VV", "VH"):
        path = record.s1_band_path(band)
        with rasterio.open(path) as src:
            profile, data = src.profile, src.read()
        profile.update(crs="EPSG:32632")
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    with pytest.raises(BadTileError, match="EPSG:32632 but S2 in EPSG:3263"):
        read_tile(record)


def test_paired_dataset_skips_tiles_without_stage1(fake_benv2, tmp_path):
    records = build_catalogue(fake_benv2)
    with pytest.raises(ValueError, match="no usable tiles"):  # an InputError
        PairedTileDataset(records, tmp_path / "nothing")
    ds = PairedTileDataset(records, None)
    item = ds[0]
    assert (
        item["s1"].min() >= 0 and item["s1"].max() <= 1 and item["target"].shape == (12, 120, 120)
    )


@pytest.mark.samples
def test_reader_on_real_sample(tmp_path):
    from eo_common.benv2 import export_benv2_geotiff_layout
    from eo_common.samples import require_samples

    require_samples("benv2_mock")
    root = export_benv2_geotiff_layout(tmp_path / "benv2", max_patches=24)
    records = build_catalogue(root)
    assert len(records) == 24 and {r.split for r in records} == {"train", "validation", "test"}
    for record in records:  # includes Finnish patches whose files carry no CRS
        tile = read_tile(record)
        assert tile.s1.dtype == np.float32 and tile.s2.shape == (12, 120, 120)
        assert np.isfinite(tile.s1).all() and -60 < tile.s1.mean() < 10
        assert not np.allclose(tile.s1, np.round(tile.s1))  # real dB values have fractions
        assert 0 < tile.s2.mean() < 10000
