"""Tests for eo_common.normalize: exact clip bounds per convention, round trips, NaN filling, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from eo_common.normalize import (
    S1_CONVENTIONS,
    S2_CONVENTIONS,
    BandStats,
    RunningBandStats,
    denormalize_s1,
    denormalize_s2,
    fill_nan,
    normalize_s1,
    normalize_s2,
    percentile_stretch,
)

# (convention, VV bounds, VH bounds, SAR output max, S2 divisor) from the published reference code.
CONVENTIONS = [
    ("glf-cr", (-25.0, 0.0), (-32.5, 0.0), 1.0, 10000.0),
    ("dsen2-cr", (-25.0, 0.0), (-32.5, 0.0), 2.0, 2000.0),
    ("uncrtaints", (-25.0, 0.0), (-25.0, 0.0), 1.0, 10000.0),
]


def test_convention_tables_cover_the_three_names():
    assert set(S1_CONVENTIONS) == set(S2_CONVENTIONS) == {"glf-cr", "dsen2-cr", "uncrtaints"}


@pytest.mark.parametrize(("name", "vv", "vh", "sar_max", "divisor"), CONVENTIONS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_s1_exact_values_at_and_beyond_clip_bounds(name, vv, vh, sar_max, divisor, as_tensor):
    # columns: far below, lower bound, middle, upper bound, far above
    vv_row = [vv[0] - 10, vv[0], (vv[0] + vv[1]) / 2, vv[1], vv[1] + 7]
    vh_row = [vh[0] - 10, vh[0], (vh[0] + vh[1]) / 2, vh[1], vh[1] + 7]
    x = np.array([[vv_row], [vh_row]], dtype=np.float64)  # (2, 1, 5)
    if as_tensor:
        x = torch.from_numpy(x)
    out = normalize_s1(x, name)
    assert type(out) is type(x)
    out = np.asarray(out)
    assert out.dtype == np.float32
    expected_row = [0.0, 0.0, sar_max / 2, sar_max, sar_max]
    np.testing.assert_array_equal(out[:, 0], np.array([expected_row, expected_row], np.float32))


@pytest.mark.parametrize(("name", "vv", "vh", "sar_max", "divisor"), CONVENTIONS)
@pytest.mark.parametrize("as_tensor", [False, True])
def test_s2_exact_values_at_and_beyond_clip_bounds(name, vv, vh, sar_max, divisor, as_tensor):
    x = np.array([[[-100.0, 0.0, 2000.0, 10000.0, 15000.0]]] * 13)  # (13, 1, 5)
    if as_tensor:
        x = torch.from_numpy(x)
    out = np.asarray(normalize_s2(x, name))
    expected = np.array(
        [0.0, 0.0, 2000.0 / divisor, 10000.0 / divisor, 10000.0 / divisor], np.float32
    )
    np.testing.assert_allclose(out[:, 0], np.tile(expected, (13, 1)), rtol=0, atol=1e-7)
    assert out.dtype == np.float32


@pytest.mark.parametrize("name", ["glf-cr", "dsen2-cr", "uncrtaints"])
def test_round_trip_on_unclipped_range(name):
    rng = np.random.default_rng(0)
    conv = S1_CONVENTIONS[name]
    sar = np.stack(
        [rng.uniform(conv.clip_min[b], conv.clip_max[b], size=(8, 8)) for b in range(2)]
    ).astype(np.float32)
    np.testing.assert_allclose(denormalize_s1(normalize_s1(sar, name), name), sar, atol=1e-4)
    opt = rng.uniform(0, 10000, size=(2, 13, 8, 8)).astype(np.float32)  # batched
    np.testing.assert_allclose(
        denormalize_s2(normalize_s2(opt, name), name), opt, rtol=1e-6, atol=1e-3
    )
    opt_t = torch.from_numpy(opt)
    torch.testing.assert_close(
        denormalize_s2(normalize_s2(opt_t, name), name), opt_t, rtol=1e-6, atol=1e-3
    )


def test_convention_names_are_checked_and_spelling_tolerant():
    x = np.zeros((2, 2, 2))
    np.testing.assert_array_equal(normalize_s1(x, "GLF_CR"), normalize_s1(x, "glf-cr"))
    with pytest.raises(ValueError, match="unknown normalisation convention"):
        normalize_s1(x, "sen12ms")
    with pytest.raises(ValueError, match="expected 2 bands"):
        normalize_s1(np.zeros((3, 2, 2)))


def test_nan_passes_through_scaling():
    x = np.array([[[np.nan, -10.0]], [[-10.0, np.nan]]])
    out = normalize_s1(x)
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[1, 0, 1])


@pytest.mark.parametrize("as_tensor", [False, True])
def test_fill_nan_band_mean_ignores_nodata_and_nan(as_tensor):
    x = np.array([[[1.0, np.nan], [3.0, 5.0]], [[-9999.0, 10.0], [np.inf, 20.0]]], dtype=np.float32)
    if as_tensor:
        x = torch.from_numpy(x)
    out = np.asarray(fill_nan(x, nodata=-9999.0))
    expected = np.array([[[1.0, 3.0], [3.0, 5.0]], [[15.0, 10.0], [15.0, 20.0]]], np.float32)
    np.testing.assert_array_equal(out, expected)
    const = np.asarray(fill_nan(x, value=0.0, nodata=-9999.0))
    expected_const = np.array([[[1.0, 0.0], [3.0, 5.0]], [[0.0, 10.0], [0.0, 20.0]]], np.float32)
    np.testing.assert_array_equal(const, expected_const)


def test_fill_nan_all_invalid_band_raises():
    with pytest.raises(ValueError, match="no valid pixel"):
        fill_nan(np.full((1, 2, 2), np.nan))


def test_percentile_stretch_matches_numpy_percentiles():
    rng = np.random.default_rng(1)
    x = rng.gamma(2.0, 500.0, size=(3, 16, 16))
    x[1, 0, 0] = -9999.0
    out = percentile_stretch(x, 2, 98, per_band=True, nodata=-9999.0)
    for c in range(3):
        valid = x[c][x[c] != -9999.0]
        lo, hi = np.percentile(valid, [2, 98])
        expected = np.clip((x[c] - lo) / (hi - lo), 0, 1)
        expected[x[c] == -9999.0] = 0.0
        np.testing.assert_allclose(out[c], expected, atol=1e-6)
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    joint = percentile_stretch(x, 2, 98, per_band=False)
    lo, hi = np.percentile(x, [2, 98])
    np.testing.assert_allclose(joint, np.clip((x - lo) / (hi - lo), 0, 1), atol=1e-6)
    out_t = percentile_stretch(torch.from_numpy(x), nodata=-9999.0)
    assert isinstance(out_t, torch.Tensor)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-7)


def test_band_stats_streaming_equals_numpy_on_concatenation(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [
        rng.normal(
            loc=[[[100.0]], [[-3.0]], [[0.5]]], scale=[[[7.0]], [[2.0]], [[0.1]]], size=(3, h, 9)
        )
        for h in (4, 11, 1, 6)
    ]
    stats = BandStats.from_arrays(iter(arrays))
    flat = np.concatenate([a.reshape(3, -1) for a in arrays], axis=1)
    np.testing.assert_allclose(stats.mean, flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, flat.std(axis=1), rtol=1e-10)
    np.testing.assert_array_equal(stats.count, [flat.shape[1]] * 3)

    path = stats.save(tmp_path / "stats" / "band_stats.json")
    loaded = BandStats.load(path)
    np.testing.assert_array_equal(loaded.mean, stats.mean)
    np.testing.assert_array_equal(loaded.std, stats.std)
    assert json.loads(path.read_text())["count"] == [float(flat.shape[1])] * 3

    z = stats.standardize(arrays[0])
    np.testing.assert_allclose(
        z, (arrays[0] - flat.mean(1)[:, None, None]) / flat.std(1)[:, None, None]
    )
    np.testing.assert_allclose(stats.destandardize(z), arrays[0], rtol=1e-12)
    zt = stats.standardize(torch.from_numpy(arrays[0]).float()[None])  # batched tensor
    assert zt.dtype == torch.float32 and zt.shape == (1, 3, 4, 9)
    np.testing.assert_allclose(zt[0].numpy(), z, atol=1e-5)


def test_band_stats_nodata_and_batches():
    x = np.array([[[1.0, 2.0], [-9999.0, 3.0]], [[5.0, np.nan], [7.0, 9.0]]])
    stats = BandStats.from_arrays([x[None], x[None]], nodata=-9999.0)
    np.testing.assert_allclose(stats.mean, [2.0, 7.0])
    np.testing.assert_allclose(stats.std, [np.std([1, 2, 3.0]), np.std([5, 7, 9.0])])
    rs = RunningBandStats()
    with pytest.raises(ValueError, match="no array"):
        rs.finalize()


def test_band_stats_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        BandStats.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mean": [1]}')
    with pytest.raises(ValueError, match="bad.json"):
        BandStats.load(bad)
    stats = BandStats(mean=[0.0, 0.0], std=[1.0, 0.0])
    with pytest.raises(ValueError, match="expected 2 bands"):
        stats.standardize(np.zeros((3, 2, 2)))
    # a zero std band is only centred, never divided by zero
    np.testing.assert_array_equal(stats.standardize(np.ones((2, 1, 1))), np.ones((2, 1, 1)))
