"""Batched sliding-window prediction: N tiles per forward give the one-tile output, memory stays flat."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from affine import Affine
from eo_common.raster import (
    predict_array_tiled,
    read_raster,
    resolve_batch_size,
    sliding_window_predict,
    tile_spans,
    torch_batch_predictor,
    write_raster,
)
from eo_common.raster.batching import AUTO_CPU_BATCH

T10 = Affine(10.0, 0.0, 399960.0, 0.0, -10.0, 5300040.0)


def _net(in_bands: int, out_bands: int) -> torch.nn.Module:
    """A small conv net with zero padding: its output near a tile edge depends on where the tile is."""
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_bands, 6, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(6, out_bands, 5, padding=2),
    ).eval()


def _per_tile(net: torch.nn.Module):
    """The one-tile path: (C, t, t) -> (K, t, t), one forward per tile."""

    def fn(tile: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(tile)[None])[0].numpy()

    return fn


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [
        (70, 90, 32, 8),  # last row and column of tiles shifted inwards (edge tiles)
        (20, 50, 32, 8),  # lower than one tile: rows padded by reflection
        (45, 21, 32, 4),  # narrower than one tile: one tile per row, groups of several rows
        (100, 33, 16, 5),
        (64, 64, 16, 0),  # no overlap
    ],
)
@pytest.mark.parametrize("batch_size", [2, 3, 8, 64, "auto"])
@pytest.mark.parametrize("stretch", [0, 8])
def test_batched_equals_one_tile_path(height, width, tile, overlap, batch_size, stretch):
    rng = np.random.default_rng(height + width)
    array = rng.normal(size=(3, height, width)).astype(np.float32)
    net = _net(3, 2)
    kw = dict(out_bands=2, tile_size=tile, overlap=overlap, blend="cosine", stretch=stretch)
    one = predict_array_tiled(array, _per_tile(net), **kw)
    calls: list[int] = []
    shapes: set[tuple[int, ...]] = set()
    batched_fn = torch_batch_predictor(net)

    areas: list[tuple[int, int]] = []  # (tiles, pixels) per call

    def counting(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        shapes.add(batch.shape[2:])
        areas.append((len(batch), batch.shape[0] * batch.shape[2] * batch.shape[3]))
        return batched_fn(batch)

    many = predict_array_tiled(array, counting, batch_size=batch_size, batched=True, **kw)
    np.testing.assert_allclose(many, one, rtol=0, atol=1e-5)
    for side in {s for shape in shapes for s in shape}:
        assert tile <= side <= 2 * tile - overlap + stretch
        assert side == tile or (stretch and side % stretch == 0)
    n = AUTO_CPU_BATCH if batch_size == "auto" else batch_size
    assert max(calls) <= n
    # a call holds at most the pixels of N regular tiles (larger stretched tiles: fewer of them)
    assert all(k == 1 or px <= n * tile * tile for k, px in areas)
    n_tiles = sum(calls)
    assert len(calls) < n_tiles or n_tiles == 1 or n == 1  # several tiles per call


def test_batched_file_path_with_nodata_equals_one_tile_path(tmp_path):
    """A GeoTIFF with a nodata block (one tile entirely missing) and NaN pixels; uint16 output."""
    rng = np.random.default_rng(1)
    array = rng.uniform(0, 100, size=(3, 75, 83)).astype(np.float32)
    array[:, :24, :24] = -9999.0  # covers the first tile (24 px, overlap 6) completely
    array[1, 50, 60] = np.nan
    src = write_raster(tmp_path / "in.tif", array, crs="EPSG:32633", transform=T10, nodata=-9999.0)
    net = _net(3, 2)

    def clean(x: np.ndarray) -> np.ndarray:  # the model needs finite input
        return np.nan_to_num(np.where(x == -9999.0, 0.0, x), nan=0.0) / 100.0

    def one_tile(t):
        return _per_tile(net)(clean(t).astype(np.float32)) * 1000 + 5000

    def many_tiles(b):
        return torch_batch_predictor(net)(clean(b)) * 1000 + 5000

    kw = dict(out_bands=2, tile_size=24, overlap=6, out_dtype="uint16", nodata=0, progress=False)
    a = read_raster(sliding_window_predict(src, tmp_path / "one.tif", one_tile, **kw)).array
    seen: list[int] = []

    def counting(b):
        seen.append(len(b))
        return many_tiles(b)

    b = read_raster(
        sliding_window_predict(
            src, tmp_path / "many.tif", counting, batch_size=5, batched=True, **kw
        )
    ).array
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # rounding of equal floats to uint16
    assert (a[:, :24, :24] == 0).all() and (b[:, :24, :24] == 0).all()
    assert (b[:, 50, 60] == 0).all()
    n_tiles = len(
        [1 for r in (0, 18, 36, 51) for c in (0, 18, 36, 54, 59) if (r, c) != (0, 0)]
    )  # tile_offsets(75, 24, 6) = [0, 18, 36, 51]; (83) = [0, 18, 36, 54, 59]
    assert sum(seen) == n_tiles and max(seen) <= 5


def test_predict_fn_attribute_selects_the_batched_call():
    array = np.random.default_rng(2).normal(size=(2, 40, 40)).astype(np.float32)
    shapes = []

    def fn(batch):
        shapes.append(batch.shape)
        return batch[:, :1] * 2

    fn.batched = True
    out = predict_array_tiled(array, fn, out_bands=1, tile_size=16, overlap=4, batch_size=4)
    np.testing.assert_allclose(out, array[:1] * 2, rtol=1e-6)
    assert all(len(s) == 4 and s[1:] == (2, 16, 16) for s in shapes)


def test_batched_shape_error_names_the_batch():
    def wrong(batch):
        return batch[:, :1, :8]

    with pytest.raises(ValueError, match="batch of shape"):
        predict_array_tiled(
            np.zeros((2, 30, 30), np.float32), wrong, out_bands=1, tile_size=16, overlap=4,
            batch_size=3, batched=True,
        )  # fmt: skip


def test_resolve_batch_size():
    assert resolve_batch_size(6) == 6
    assert resolve_batch_size(6, batched=False) == 1
    assert resolve_batch_size("auto") == AUTO_CPU_BATCH  # no GPU in the test environment
    for bad in (0, -2, 2.5, "many", True):
        with pytest.raises(ValueError, match="batch_size"):
            resolve_batch_size(bad)


def test_batched_memory_flat_with_height(tmp_path):
    """Traced peak of 8 tiles per call: the same for 4x the rows (one group of rows at a time)."""
    peaks = []
    for height in (256, 1024):
        array = np.ones((2, height, 96), np.float32)
        src = write_raster(tmp_path / f"h{height}.tif", array, crs="EPSG:32633", transform=T10)

        def fn(batch):
            return batch[:, :1] + 1

        tracemalloc.start()
        sliding_window_predict(
            src, tmp_path / f"o{height}.tif", fn, out_bands=1, tile_size=32, overlap=8,
            batch_size=8, batched=True, progress=False,
        )  # fmt: skip
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] < 1.2 * peaks[0]


def test_channels_last_predictor_equals_the_default_layout():
    """channels-last (the default) converts the module once and gives the same numbers."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)
    ).eval()
    x = np.random.default_rng(0).random((3, 4, 16, 16), dtype=np.float32)
    plain = torch_batch_predictor(net, channels_last=False)(x)
    assert net[0].weight.is_contiguous()  # untouched without channels_last
    fast = torch_batch_predictor(net)(x)
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.flags.c_contiguous and fast.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-6)
    # a plain function over a module: `weights` names the module to convert
    other = torch.nn.Conv2d(4, 2, 3, padding=1).eval()
    torch_batch_predictor(lambda t: other(t).softmax(1), "cpu", weights=other)(x)
    assert other.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("length", [1, 31, 32, 33, 57, 100, 256, 1000, 1024, 1025])
@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (256, 32), (16, 0)])
def test_stretched_layout_covers_with_the_overlap_and_fewer_pixels(length, tile, overlap):
    fixed = tile_spans(length, tile, overlap)
    spans = tile_spans(length, tile, overlap, stretch=8)
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length  # covers [0, length)
    for (a, n), (b, _) in zip(spans, spans[1:], strict=False):
        assert b - a == tile - overlap and a + n - b == overlap  # regular steps, exact overlap
    assert all(n == min(tile, length) for _, n in spans[:-1])
    if len(spans) > 1:
        assert tile < spans[-1][1] <= 2 * tile - overlap
    assert len(spans) == max(1, len(fixed) - 1)
    assert sum(n for _, n in spans) <= sum(n for _, n in fixed)
    if (length, tile, overlap) == (1024, 256, 32):
        assert sum(n for _, n in spans) == 1120 and sum(n for _, n in fixed) == 1280


def test_stretched_identity_reproduces_a_file_with_nodata(tmp_path):
    """Identity through the stretched layout (padded tiles cropped back) gives the input back."""
    rng = np.random.default_rng(3)
    array = rng.uniform(1, 100, size=(2, 70, 90)).astype(np.float32)
    array[:, 60:, :10] = -9999.0
    src = write_raster(tmp_path / "in.tif", array, crs="EPSG:32633", transform=T10, nodata=-9999.0)
    seen: set[tuple[int, ...]] = set()

    def identity(batch: np.ndarray) -> np.ndarray:
        seen.add(batch.shape[2:])
        return batch

    out = sliding_window_predict(
        src, tmp_path / "out.tif", identity, out_bands=2, tile_size=32, overlap=8, stretch=16,
        batch_size=4, batched=True, progress=False, nodata=-9999.0,
    )  # fmt: skip
    np.testing.assert_allclose(read_raster(out).array, array, rtol=1e-6)
    assert seen == {(32, 32), (32, 48), (48, 32), (48, 48)}  # 70 = 24 + 24 + 22 -> 46 -> 48
