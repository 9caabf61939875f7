"""glacier-diagnose: the checks that catch an MCC-0.03 run, and the overfit-one-batch sanity run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster, write_raster
from glacier_seg.data import Normalizer, find_tiles, load_tiles
from glacier_seg.diagnose import (
    channel_statistics,
    class_fractions,
    label_value_histogram,
    main,
    overfit_one_batch,
    trivial_baseline_mcc,
)
from glacier_seg.model import ModelConfig
from sklearn.metrics import matthews_corrcoef

SMALL = (64, 32, 32, 16, 16)


@pytest.mark.slow
def test_overfit_one_batch_reaches_high_mcc_on_a_fake_tile(glacier_root):
    arrays = load_tiles(find_tiles(glacier_root)[:2])
    norm = Normalizer()
    x = torch.from_numpy(np.stack([norm(a.image)[:, :32, :32] for a in arrays]))
    y = torch.from_numpy(np.stack([a.mask[:32, :32].astype(np.int64) for a in arrays]))
    cfg = ModelConfig(encoder_name="resnet18", in_channels=5, decoder_channels=SMALL)
    result = overfit_one_batch(x, y, cfg, steps=150, target_mcc=0.95)
    assert result["passed"] and result["mcc"] > 0.9, result
    assert result["loss_last"] < result["loss_first"]


def test_overfit_one_batch_fails_when_labels_do_not_belong_to_images():
    """Noise labels on constant images: the model cannot separate them, so the check fails."""
    torch.manual_seed(0)
    x = torch.zeros(2, 5, 32, 32)
    y = torch.randint(0, 4, (2, 32, 32))
    cfg = ModelConfig(encoder_name="resnet18", in_channels=5, decoder_channels=SMALL)
    result = overfit_one_batch(x, y, cfg, steps=10, target_mcc=0.9)
    assert not result["passed"] and result["mcc"] < 0.2


def test_trivial_baseline_and_fractions():
    masks = [np.array([[0, 1], [2, 3]], np.uint8), np.zeros((2, 2), np.uint8)]
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


def test_diagnose_cli_reports_a_broken_pairing(glacier_root, tmp_path, capsys):
    root = tmp_path / "gh"
    shutil.copytree(glacier_root, root)
    (root / "Label" / "Y_output_resized_11.tif").unlink()
    code = main(["--data_root", str(root), "--out_dir", str(tmp_path / "diag")])
    assert code == 0
    report = json.loads((tmp_path / "diag" / "report.json").read_text())
    assert (
        not report["pairing"]["ok"] and "tile 11: no file in Label" in report["pairing"]["problems"]
    )
    assert "PAIRING FAILED" in (tmp_path / "diag" / "report.md").read_text()


@pytest.mark.slow
def test_diagnose_cli_full_report(glacier_root, tmp_path, capsys):
    out = tmp_path / "diag"
    code = main(
        [
            "--data_root",
            str(glacier_root),
            "--out_dir",
            str(out),
            "--decoder_channels",
            "64,32,32,16,16",
            "--overfit_steps",
            "10",
            "--overfit_crop",
            "32",
            "--glcm_window",
            "5",
            "--val_ids",
            "5",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pairing"]["ok"] and report["pairing"]["n_paired"] == 4
    assert report["label_values"]["unexpected"] == []
    assert report["split"] == {"train": ["2", "8", "11"], "val": ["5"]}
    assert set(report["channel_statistics"]["train"]) == {
        "B2",
        "B3",
        "B4",
        "B6",
        "B10",
        "glcm_contrast",
        "glcm_homogeneity",
    }
    assert report["trivial_baseline_mcc"] == 0.0
    assert 0.0 <= report["overfit_one_batch"]["mcc"] <= 1.0
    assert (out / "class_fractions.png").stat().st_size > 0 and "overfit one batch" in (
        out / "report.md"
    ).read_text()


@pytest.mark.slow
def test_ablation_trains_5_and_7_channels_and_pretrained_variant(glacier_root, tmp_path):
    import segmentation_models_pytorch as smp
    from glacier_seg.diagnose import run_ablation
    from glacier_seg.train import build_parser, config_from_args

    weights = tmp_path / "rgb.pth"
    torch.save(
        smp.encoders.get_encoder("resnet18", in_channels=3, weights=None).state_dict(), weights
    )
    args = [
        "--data_root",
        str(glacier_root),
        "--encoder_name",
        "resnet18",
        "--decoder_channels",
        "64,32,32,16,16",
        "--crop_size",
        "32",
        "--batch_size",
        "4",
        "--samples_per_epoch",
        "4",
        "--num_workers",
        "0",
        "--val_ids",
        "5",
        "--glcm_window",
        "5",
        "--encoder_weights",
        str(weights),
    ]
    cfg = config_from_args(build_parser().parse_args(args))
    result = run_ablation(cfg, epochs=1, out_dir=tmp_path)
    assert set(result) == {"5ch_bands", "7ch_bands_glcm", "7ch_pretrained"}
    for r in result.values():
        assert r["epochs"] == 1 and -1.0 <= r["best_val_mcc"] <= 1.0
    five = torch.load(
        tmp_path / "ablation" / "5ch_bands" / "checkpoints" / "best.ckpt", weights_only=False
    )
    assert five["hyper_parameters"]["model"]["in_channels"] == 5
    assert cfg.data.include_glcm  # the caller's config is untouched
    # a checkpoint of a pretrained run loads without the initial weights file (weights are inside)
    from glacier_seg.evaluate import load_model

    weights.unlink()
    loaded = load_model(tmp_path / "ablation" / "7ch_pretrained" / "checkpoints" / "best.ckpt")
    assert loaded.module.model_cfg.in_channels == 7 and loaded.include_glcm
