"""glacier-diagnose: the checks that catch an MCC-0.03 run, and the overfit-one-batch sanity run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster, write_raster
from glacier_seg.cli import glacier_diagnose
from glacier_seg.config import ModelConfig
from glacier_seg.data import Normalizer, load_tiles
from glacier_seg.diagnose import (
    channel_statistics,
    class_fractions,
    label_value_histogram,
    overfit_one_batch,
    trivial_baseline_mcc,
)
from glacier_seg.layout import find_tiles
from glacier_tiny import TINY_MODEL
from sklearn.metrics import matthews_corrcoef

SMALL = [64, 32, 32, 16, 16]
TINY = [
    "--encoder_name",
    TINY_MODEL["encoder_name"],
    "--decoder_channels",
    json.dumps(TINY_MODEL["decoder_channels"]),
]


@pytest.mark.slow
def test_overfit_one_batch_reaches_high_mcc_on_a_fake_tile(glacier_root):
    arrays = load_tiles(find_tiles(glacier_root)[:2])
    norm = Normalizer()
    x = torch.from_numpy(np.stack([norm(a.image)[:, :32, :32] for a in arrays]))
    y = torch.from_numpy(np.stack([a.mask[:32, :32].astype(np.int64) for a in arrays]))
    cfg = ModelConfig(encoder_name="resnet18", decoder_channels=SMALL)
    result = overfit_one_batch(x, y, cfg, steps=150, target_mcc=0.95)
    assert result["passed"] and result["mcc"] > 0.9, result
    assert result["loss_last"] < result["loss_first"]


def test_overfit_one_batch_fails_when_labels_do_not_belong_to_images():
    """Noise labels on constant images: the model cannot separate them, so the check fails."""
    torch.manual_seed(0)
    x = torch.zeros(2, 5, 32, 32)
    y = torch.randint(0, 4, (2, 32, 32))
    cfg = ModelConfig(encoder_name="resnet18", decoder_channels=SMALL)
    result = overfit_one_batch(x, y, cfg, steps=10, target_mcc=0.9)
    assert not result["passed"] and result["mcc"] < 0.2


def test_trivial_baseline_and_fractions():
    masks = [np.array([[0, 1], [2, 3]], np.uint8), np.zeros((2, 2), np.uint8)]
    with_nodata = [*masks, np.full((2, 2), 255, np.uint8)]  # invalid pixels count nowhere
    assert trivial_baseline_mcc(with_nodata) == 0.0 and class_fractions(
        with_nodata
    ) == class_fractions(masks)
    assert (
        trivial_baseline_mcc(masks)
        == matthews_corrcoef(np.r_[0, 1, 2, 3, 0, 0, 0, 0], np.zeros(8))
        == 0.0
    )
    assert class_fractions(masks) == {
        "background": 5 / 8,
        "glacier": 1 / 8,
        "debris": 1 / 8,
        "lake": 1 / 8,
    }
    stats = channel_statistics([np.array([[[1.0, 3.0]]]), np.array([[[np.nan, 5.0]]])], ["b"])
    assert stats["b"]["mean"] == 3.0 and stats["b"]["nan"] == 1 and stats["b"]["max"] == 5.0


def test_label_histogram_flags_unexpected_values(glacier_root, tmp_path):
    root = tmp_path / "gh"
    shutil.copytree(glacier_root, root)
    path = root / "Label" / "Y_output_resized_02.tif"
    r = read_raster(path)
    bad = r.array.copy()
    bad[0, :2, :2] = 1
    write_raster(path, bad, crs=r.crs, transform=r.transform)
    hist = label_value_histogram([t.label_path for t in find_tiles(root, require_labels=True)])
    assert hist["unexpected"] == [1] and list(hist["per_file_unexpected"]) == [str(path)]
    assert hist["counts"][1] == 4 and set(hist["counts"]) == {0, 1, 85, 170, 255}
    # the command stops there, and every report file it names exists (the first release named a
    # report.md it never wrote)
    out = tmp_path / "diag"
    assert (
        glacier_diagnose(["--data_root", str(root), "--output_dir", str(out), "--no_progress"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["extra"]["unexpected_label_values"] == [1]
    assert all(Path(p).is_file() for p in summary["paths"].values())
    assert "UNEXPECTED MASK VALUES" in (out / "report.md").read_text()


def test_diagnose_reports_a_broken_pairing(glacier_root, tmp_path):
    root = tmp_path / "gh"
    shutil.copytree(glacier_root, root)
    (root / "Label" / "Y_output_resized_11.tif").unlink()
    out = tmp_path / "diag"
    assert glacier_diagnose(["--data_root", str(root), "--output_dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert (
        not report["pairing"]["ok"] and "tile 11: no file in Label" in report["pairing"]["problems"]
    )
    assert "PAIRING FAILED" in (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert all(Path(p).is_file() for p in summary["paths"].values())
    assert set(summary["paths"]) == {"config", "report_json", "report_md"}


@pytest.mark.slow
def test_diagnose_full_report_with_ablation(glacier_root, glcm_cache, tmp_path):
    import segmentation_models_pytorch as smp

    weights = tmp_path / "rgb.pth"
    encoder = smp.encoders.get_encoder(TINY_MODEL["encoder_name"], in_channels=3, weights=None)
    torch.save(encoder.state_dict(), weights)
    out = tmp_path / "diag"
    code = glacier_diagnose([
        "--data_root", str(glacier_root), "--output_dir", str(out), *TINY, "--overfit_steps", "5",
        "--overfit_crop", "32", "--glcm_window", "5", "--glcm_levels", "16", "--val_ids", "5",
        "--glcm_cache", str(glcm_cache), "--ablation_epochs", "1", "--crop_size", "32",
        "--batch_size", "4", "--samples_per_epoch", "4", "--encoder_weights", str(weights),
        "--no_progress", "--threads", "1",
    ])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairing"]["ok"] and report["pairing"]["n_paired"] == 4
    assert report["label_values"]["unexpected"] == []
    assert report["split"] == {"train": ["2", "8", "11"], "val": ["5"]}
    assert set(report["channel_statistics"]["train"]) == {
        "B2", "B3", "B4", "B6", "B10", "glcm_contrast", "glcm_homogeneity",
    }  # fmt: skip
    assert report["trivial_baseline_mcc"] == 0.0
    assert 0.0 <= report["overfit_one_batch"]["mcc"] <= 1.0
    assert set(report["ablation"]) == {"5ch_bands", "7ch_bands_glcm", "7ch_pretrained"}
    for r in report["ablation"].values():
        assert r["epochs"] == 1 and -1.0 <= r["best_val_mcc"] <= 1.0
    five = torch.load(
        out / "ablation" / "5ch_bands" / "checkpoints" / "best.ckpt", weights_only=False
    )
    assert five["hyper_parameters"]["model"]["in_channels"] == 5
    summary = json.loads((out / "summary.json").read_text())
    assert all(Path(p).is_file() for p in summary["paths"].values())
    assert tuple(summary["metrics"]) == glacier_diagnose.metrics  # every check and ablation ran
    assert "overfit one batch" in (out / "report.md").read_text()
    # a checkpoint of a pretrained run loads without the initial weights file (weights are inside)
    from glacier_seg.inference import load_model

    weights.unlink()
    loaded = load_model(out / "ablation" / "7ch_pretrained" / "checkpoints" / "best.ckpt")
    assert loaded.module.in_channels == 7 and loaded.include_glcm
