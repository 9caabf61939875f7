"""Demo: derived labels from spectral indices, GlacierHack layout from the real Landsat-8 scene."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eo_common.samples import require_samples
from glacier_seg.data import load_tiles
from glacier_seg.demo_data import build_demo_layout, derive_labels, landsat_to_glacierhack_bands
from glacier_seg.layout import find_tiles


def test_derive_labels_follow_the_documented_rules():
    rng = np.random.default_rng(0)
    shape = (40, 50)
    bands = {
        "B3": rng.uniform(0.05, 0.4, shape),
        "B5": rng.uniform(0.05, 0.4, shape),
        "B6": rng.uniform(0.05, 0.4, shape),
        "B10": rng.uniform(260, 300, shape),
    }
    classes = derive_labels(bands)
    green, nir, swir, temp = bands["B3"], bands["B5"], bands["B6"], bands["B10"]
    ndsi = (green - swir) / (green + swir)
    ndwi = (green - nir) / (green + nir)
    lake = ndwi >= np.percentile(ndwi, 99)
    glacier = (
        (green >= np.percentile(green, 85))
        & (temp <= np.percentile(temp, 25))
        & (ndsi >= np.median(ndsi))
    )
    assert np.array_equal(classes == 3, lake)
    assert np.array_equal(classes == 1, glacier & ~lake)
    assert (
        (classes == 2) <= ((temp > np.percentile(temp, 25)) & (temp <= np.percentile(temp, 40)))
    ).all()


def test_landsat_calibration_constants():
    out = landsat_to_glacierhack_bands({"B3": np.array([10000]), "B10": np.array([30000])})
    assert out["B3"][0] == pytest.approx(0.1)  # 2e-5 * 10000 - 0.1
    radiance = 3.342e-4 * 30000 + 0.1
    assert out["B10"][0] == pytest.approx(1321.0789 / np.log(774.8853 / radiance + 1), rel=1e-6)


@pytest.mark.samples
def test_demo_layout_from_the_real_scene(tmp_path):
    require_samples("landsat8_scene")
    root = build_demo_layout(tmp_path / "demo", seed=0)
    split = json.loads((root / "split.json").read_text())
    tiles = find_tiles(root)
    assert len(tiles) == 36 and len(split["val"]) == 9
    assert sorted(split["train"] + split["val"], key=int) == [t.tile_id for t in tiles]
    arrays = load_tiles(tiles[:3])
    assert arrays[0].image.shape == (5, 96, 96) and arrays[0].crs.to_epsg() == 32616
    assert 250 < float(np.median(arrays[0].image[4])) < 320  # B10 as brightness temperature (K)
    fractions = split["class_fractions"]
    assert all(f > 0.005 for f in fractions.values())  # every class present in the scene
    assert build_demo_layout(tmp_path / "demo", seed=0) == root  # idempotent


@pytest.mark.slow
@pytest.mark.samples
def test_run_demo_within_a_small_budget(tmp_path):
    require_samples("landsat8_scene")
    from glacier_seg.demo import run_demo

    result = run_demo(tmp_path, seed=0, budget_s=30)
    assert result.metrics["mcc"] == pytest.approx(result.metrics["mcc_sklearn"], abs=1e-9)
    assert "Labels are derived from spectral indices" in result.summary_md
    assert (
        all(f.exists() and f.suffix == ".png" for f in result.figures) and len(result.figures) >= 3
    )
    assert result.metrics["train_seconds"] < 60


@pytest.mark.slow
@pytest.mark.samples
def test_glacier_train_demo_flag(tmp_path):
    require_samples("landsat8_scene")
    from glacier_seg.cli import glacier_train
    from glacier_tiny import TINY_MODEL

    code = glacier_train([
        "--demo", "--data_root", str(tmp_path / "demo"), "--output_dir", str(tmp_path / "run"),
        "--encoder_name", TINY_MODEL["encoder_name"], "--decoder_channels", "[16,16,16,16,16]",
        "--crop_size", "64", "--batch_size", "8", "--samples_per_epoch", "8", "--epochs", "1",
        "--glcm_cache", str(tmp_path / "cache"), "--no_progress", "--threads", "1", "--no_export_smp",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    split = json.loads((tmp_path / "demo" / "split.json").read_text())
    assert (
        summary["extra"]["val_tiles"] == split["val"] and len(summary["extra"]["train_tiles"]) == 27
    )
    # the run folder's config names the demo tiles and the split: --config repeats it exactly
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert str(tmp_path / "demo") in config and "demo: true" in config
