"""Nodata stored as NaN (and +-inf): masked out of loss and metrics, never fed to the network, and a
training whose steps go non-finite stops with one line instead of a finished-looking run."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster
from glacier_fake_data import make_organisers_train
from glacier_seg.cli import glacier_predict, glacier_train
from glacier_seg.layout import find_tiles, read_bands
from glacier_tiny import tiny_train_args


@pytest.fixture(scope="module")
def nan_root(tmp_path_factory):
    """4 tiles whose bands are float32 with a NaN block over a fifth of each tile and two inf pixels."""
    return make_organisers_train(tmp_path_factory.mktemp("nan_tiles"), n=4, size=64, nodata="nan")


def test_nan_tiles_with_dataset_normalisation_train_on_the_valid_pixels(
    nan_root, glcm_cache, tmp_path
):
    """The first release fed NaN to the network: every step skipped, NaN BatchNorm statistics in
    last.ckpt, best val MCC 0.0, exit 0."""
    run = tmp_path / "run"
    code = glacier_train(
        tiny_args := tiny_train_args(nan_root, run, glcm_cache, "--normalization", "dataset")
    )
    assert code == 0, tiny_args
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished"
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    stats = {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}
    assert len(stats) > 10 and all(torch.isfinite(v).all() for v in stats.values())
    assert all(torch.isfinite(v).all() for k, v in state.items() if v.is_floating_point()), (
        "weights"
    )
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train_losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(train_losses) == 2 and all(math.isfinite(v) for v in train_losses)
    assert {float(r["train/nonfinite_steps"]) for r in rows if r.get("train/nonfinite_steps")} == {
        0.0
    }
    # val/mcc is scored on the valid pixels of the validation tile only
    val = [r for r in rows if r.get("val/mcc")]
    (tile,) = [t for t in find_tiles(nan_root) if t.tile_id == "5"]
    _, valid, _, _ = read_bands(tile)
    supports = sum(
        float(val[-1][f"val/per_class/{c}/support"])
        for c in ("background", "glacier", "debris", "lake")
    )
    assert supports == valid.sum() < valid.size
    assert math.isfinite(summary["metrics"]["val/mcc"])


def test_predict_marks_nodata_in_the_class_map(nan_root, glcm_cache, tmp_path):
    run = tmp_path / "run"
    assert (
        glacier_train(
            tiny_train_args(nan_root, run, glcm_cache, "--epochs", "1", "--no_export_smp")
        )
        == 0
    )
    out = tmp_path / "pred"
    assert glacier_predict(["--checkpoint", str(run / "checkpoints" / "best.ckpt"), "--input", str(nan_root),
                            "--output_dir", str(out), "--glcm_cache", str(glcm_cache), "--no_progress"]) == 0  # fmt: skip
    tile = find_tiles(nan_root)[0]
    _, valid, _, _ = read_bands(tile)
    classes = read_raster(out / "class_maps" / "B2_B2_masked_02.tif").array[0]
    mask = read_raster(out / "masks" / "B2_B2_masked_02.tif").array[0]
    assert (classes[~valid] == 255).all() and (classes[valid] < 4).all()
    assert (mask[~valid] == 0).all()  # the competition format has no nodata value: background
    np.testing.assert_array_equal(np.asarray([0, 85, 170, 255])[classes[valid]], mask[valid])


def test_a_diverging_run_stops_with_one_line_and_a_failed_summary(
    glacier_root, glcm_cache, tmp_path, capsys
):
    """The NaN guard's stop was printed as a traceback by the first release."""
    run = tmp_path / "run"
    code = glacier_train(tiny_train_args(glacier_root, run, glcm_cache, "--lr", "1e30", "--max_bad_steps", "1",
                                         "--epochs", "3"))  # fmt: skip
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert code == 2 and "Traceback" not in err
    assert len(errors) == 1 and "NaN/inf" in errors[0] and "--lr" in errors[0], errors
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed" and "NonFiniteLossError" in summary["error"]


def test_skipped_steps_leave_no_trace_in_the_batchnorm_statistics(
    glacier_root, glcm_cache, tmp_path
):
    """After one applied step at lr 1e30 every further forward pass overflows: those steps are
    skipped, and the BatchNorm statistics their forward passes computed must not reach last.ckpt (the
    first release's guard skipped the optimizer step but kept the NaN statistics)."""
    run = tmp_path / "run"
    args = ["--lr", "1e30", "--max_bad_steps", "10", "--epochs", "1", "--samples_per_epoch", "16"]
    assert (
        glacier_train(tiny_train_args(glacier_root, run, glcm_cache, *args, "--no_export_smp")) == 0
    )
    with open(run / "metrics.csv") as f:
        skipped = [
            float(r["train/nonfinite_steps"])
            for r in csv.DictReader(f)
            if r.get("train/nonfinite_steps")
        ]
    assert skipped == [3.0]  # 4 steps: the first applied, the next three skipped
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    stats = [v for k, v in state.items() if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.isfinite(v).all() for v in stats)
