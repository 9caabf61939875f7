"""Dense CRF: tiled == untiled away from seams, improves a noisy toy map, raster version with workers."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from eo_common.raster import tile_offsets, write_raster
from risk_mapping.config import CRFConfig
from risk_mapping.crf import (
    balanced_offsets,
    core_tiles,
    crf_array_tiled,
    crf_raster,
    dense_crf,
    image_stretch,
)


def _toy(size: int = 96, seed: int = 0):
    """Three regions, a guidance image that shows them, and noisy probabilities (~80 % correct)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((size, size), np.int64)
    truth[:, size // 3 :] = 1
    truth[size // 2 :, 2 * size // 3 :] = 2
    image = np.repeat((truth * 90 + 20).astype(np.uint8)[..., None], 3, axis=2)
    logits = np.eye(3)[truth].transpose(2, 0, 1) * 1.0 + rng.normal(0, 0.9, (3, size, size))
    probs = np.exp(logits) / np.exp(logits).sum(0)
    return truth, np.ascontiguousarray(image), probs.astype(np.float32)


def test_core_tiles_partition_the_raster():
    for h, w, t, o in [(96, 96, 64, 16), (100, 37, 32, 8), (50, 70, 64, 16), (130, 200, 64, 30)]:
        count = np.zeros((h, w), int)
        for tile in core_tiles(h, w, t, o):
            c, r = tile.core, tile.read
            count[c.row_off : c.row_off + c.height, c.col_off : c.col_off + c.width] += 1
            assert r.row_off <= c.row_off and c.row_off + c.height <= r.row_off + r.height
            assert r.col_off <= c.col_off and c.col_off + c.width <= r.col_off + r.width
        assert (count == 1).all()


@pytest.mark.parametrize(
    ("length", "tile", "overlap"),
    [(2048, 1024, 128), (4096, 1024, 128), (300, 128, 48), (1000, 256, 64), (97, 40, 10)],
)
def test_balanced_tiles_fit_the_overlap_and_compute_fewer_pixels(length, tile, overlap):
    offsets, side = balanced_offsets(length, tile, overlap)
    assert len(offsets) == len(tile_offsets(length, tile, overlap))  # as many tiles as before
    assert side <= tile and offsets[0] == 0 and offsets[-1] + side == length
    gaps = np.diff(offsets)
    assert (side - gaps >= overlap).all()  # every neighbour pair still overlaps by >= overlap
    # computed pixels along the axis: never more than the fixed-size layout, usually far fewer
    assert len(offsets) * side <= len(offsets) * min(tile, length)
    if (length, tile, overlap) == (2048, 1024, 128):
        assert len(offsets) * side / length == pytest.approx(1.125)  # was 3 x 1024 / 2048 = 1.5


def test_tiled_crf_labels_equal_the_whole_image_call():
    """Balanced tiles (300 px, tile 128, overlap 48: 4 tiles of 111 px) vs one dense_crf call."""
    truth, image, probs = _toy(size=300, seed=3)
    cfg = CRFConfig(iterations=5, bilateral_sxy=8.0, tile_size=128, overlap=48)
    assert balanced_offsets(300, 128, 48) == ([0, 63, 126, 189], 111)
    whole = dense_crf(probs, image, cfg).argmax(0)
    tiled = crf_array_tiled(probs, image, cfg).argmax(0)
    assert (whole == tiled).mean() >= 0.9999


def test_crf_improves_noisy_segmentation():
    truth, image, probs = _toy()
    before = (probs.argmax(0) == truth).mean()
    q = dense_crf(probs, image, CRFConfig(iterations=5, bilateral_sxy=10.0))
    after = (q.argmax(0) == truth).mean()
    assert before < 0.9 and after > before + 0.05
    assert np.allclose(q.sum(0), 1.0, atol=1e-4)


def test_tiled_crf_equals_untiled_away_from_seams():
    truth, image, probs = _toy(size=128, seed=1)
    cfg = CRFConfig(iterations=5, spatial_weight=3.0, bilateral_sxy=8.0, tile_size=64, overlap=32)
    full = dense_crf(probs, image, cfg)
    tiled = crf_array_tiled(probs, image, cfg)
    # seams are the core boundaries inside the raster; keep pixels at least 8 px away from them
    tiles = core_tiles(128, 128, 64, 32)
    row_cuts = sorted({t.core.row_off for t in tiles} - {0})
    col_cuts = sorted({t.core.col_off for t in tiles} - {0})
    rows, cols = np.arange(128), np.arange(128)
    far_r = np.min(np.abs(rows[:, None] - np.array(row_cuts)[None]), axis=1) >= 8
    far_c = np.min(np.abs(cols[:, None] - np.array(col_cuts)[None]), axis=1) >= 8
    inner = far_r[:, None] & far_c[None, :]
    assert inner.mean() > 0.5
    assert (full.argmax(0)[inner] == tiled.argmax(0)[inner]).all()
    assert (full.argmax(0) == tiled.argmax(0)).mean() >= 0.995
    assert np.abs(full - tiled)[:, inner].mean() < 0.01


def test_dense_crf_input_checks():
    with pytest.raises(ValueError, match="uint8"):
        dense_crf(
            np.full((3, 8, 8), 1 / 3, np.float32), np.zeros((8, 8, 3), np.float32), CRFConfig()
        )
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        dense_crf(np.zeros((8, 8), np.float32), np.zeros((8, 8, 3), np.uint8), CRFConfig())


def test_crf_raster_workers_match_serial_and_keep_georeference(tmp_path):
    truth, image, probs = _toy(size=96, seed=2)
    probs[:, :3, :5] = -9999.0  # nodata corner
    transform = Affine(30.0, 0, 500000.0, 0, -30.0, 4200000.0)
    probs_path = write_raster(
        tmp_path / "probs.tif", probs, crs="EPSG:32633", transform=transform, nodata=-9999.0
    )
    stack = np.concatenate(
        [image.transpose(2, 0, 1).astype(np.float32), np.zeros((1, 96, 96), np.float32)]
    )
    stack_path = write_raster(
        tmp_path / "stack.tif", stack, crs="EPSG:32633", transform=transform, nodata=-9999.0
    )
    results = {}
    for workers in (1, 2):
        cfg = CRFConfig(iterations=3, bilateral_sxy=8.0, tile_size=64, overlap=32, workers=workers)
        out = crf_raster(
            probs_path,
            stack_path,
            tmp_path / f"crf{workers}.tif",
            tmp_path / f"rank{workers}.tif",
            cfg,
            progress=False,
        )
        with rasterio.open(out) as src:
            assert (
                src.crs.to_epsg() == 32633
                and src.transform == transform
                and src.dtypes[0] == "uint8"
            )
            results[workers] = src.read(1)
        with rasterio.open(tmp_path / f"rank{workers}.tif") as src:
            rank = src.read(1)
            assert src.transform == transform
        assert (results[workers][:3, :5] == 255).all() and (rank[:3, :5] == -1).all()
        assert set(np.unique(results[workers][3:])) <= {0, 1, 2}
        assert ((rank[3:] >= 0) & (rank[3:] <= 2)).all()
    assert np.array_equal(results[1], results[2])
    valid = results[1] != 255
    assert (results[1][valid] == truth[valid]).mean() > (
        probs.argmax(0)[valid] == truth[valid]
    ).mean()


def test_image_stretch_band_check(tmp_path):
    path = write_raster(
        tmp_path / "s.tif",
        np.zeros((2, 8, 8), np.float32),
        crs="EPSG:4326",
        transform=Affine(1.0, 0, 0, 0, -1.0, 8.0),
    )
    with pytest.raises(ValueError, match="image_bands"):
        image_stretch(path, [0, 1, 2])


def test_ordinal_compatibility_keeps_thin_medium_band_that_potts_removes():
    rng = np.random.default_rng(3)
    truth = np.zeros((64, 64), np.int64)
    truth[:, 30:34] = 1  # a thin medium band between low and high, as ordinal maps have
    truth[:, 34:] = 2
    image = np.full(
        (64, 64, 3), 128, np.uint8
    )  # no edge information: only the unary and smoothness
    logits = np.eye(3)[truth].transpose(2, 0, 1) * 1.2 + rng.normal(0, 0.6, (3, 64, 64))
    probs = (np.exp(logits) / np.exp(logits).sum(0)).astype(np.float32)
    band = truth == 1
    recall = {}
    for kind in ("potts", "ordinal"):
        cfg = CRFConfig(
            iterations=5,
            compat_spatial=3.0,
            compat_bilateral=3.0,
            bilateral_sxy=10.0,
            compatibility=kind,
        )
        labels = dense_crf(probs, image, cfg).argmax(0)
        recall[kind] = (labels[band] == 1).mean()
    assert recall["ordinal"] > recall["potts"] + 0.2, recall
