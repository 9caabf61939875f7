"""cr-eval against hand-computed metrics, cr-predict keeps georeference (identity checkpoints)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from cloud_removal.data import SEN12MSCRDataset
from cloud_removal.evaluate import EvalConfig, evaluate
from cloud_removal.evaluate import main as eval_main
from cloud_removal.predict import main as predict_main
from eo_common.raster import write_raster
from skimage.metrics import structural_similarity


def _read_split(root, split="test"):
    ds = SEN12MSCRDataset(root, split=split, load_size=48, crop_size=48, train=False)
    out = []
    for row in ds.rows:
        s1, clear, cloudy = (rasterio.open(p).read().astype(np.float64) for p in row.paths(root))
        out.append((np.clip(cloudy, 0, 10000) / 1e4, np.clip(clear, 0, 10000) / 1e4))
    return out


def test_cr_eval_matches_hand_computed_metrics(fake_root, identity_checkpoint, tmp_path):
    summary = evaluate(
        EvalConfig(
            checkpoint=identity_checkpoint,
            split="test",
            out=tmp_path / "ev",
            input_data_folder=fake_root,
            load_size=48,
            panels=1,
        ),
        progress=False,
    )
    pairs = _read_split(fake_root)
    cloudy = np.stack([c for c, _ in pairs])
    clear = np.stack([t for _, t in pairs])
    m = summary["metrics"]
    # the identity checkpoint predicts the cloudy input exactly: model == identity, delta == 0
    for k in ("psnr", "ssim", "sam_deg", "mae", "rmse"):
        assert m["model"]["all"][k] == pytest.approx(m["identity"]["all"][k], abs=1e-9)
        assert m["delta"]["all"][k] == pytest.approx(0.0, abs=1e-9)
    mse = np.mean((cloudy - clear) ** 2)
    assert m["identity"]["all"]["psnr"] == pytest.approx(10 * np.log10(1 / mse), abs=1e-4)
    assert m["identity"]["all"]["mae"] == pytest.approx(np.mean(np.abs(cloudy - clear)), abs=1e-6)
    assert m["identity"]["all"]["rmse"] == pytest.approx(np.sqrt(mse), abs=1e-6)
    cos = (cloudy * clear).sum(1) / (np.linalg.norm(cloudy, axis=1) * np.linalg.norm(clear, axis=1))
    assert m["identity"]["all"]["sam_deg"] == pytest.approx(
        np.degrees(np.arccos(np.clip(cos, -1, 1))).mean(), abs=1e-3
    )
    cloud = np.abs(cloudy - clear).mean(1) / 0.1 > 0.2  # difference mask, threshold 0.2
    err_cloudy = ((cloudy - clear) ** 2).transpose(1, 0, 2, 3)[:, cloud]
    assert m["identity"]["cloudy"]["psnr"] == pytest.approx(
        10 * np.log10(1 / err_cloudy.mean()), abs=1e-4
    )
    err_clear = ((cloudy - clear) ** 2).transpose(1, 0, 2, 3)[:, ~cloud]
    assert m["identity"]["clear"]["psnr"] == pytest.approx(
        10 * np.log10(1 / err_clear.mean()), abs=1e-4
    )
    with open(summary["per_image_csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    for row, (c, t) in zip(rows, pairs):
        ref = structural_similarity(
            c,
            t,
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        assert float(row["identity_all_ssim"]) == pytest.approx(ref, abs=1e-5)
    saved = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert saved["n_images"] == 2 and saved["normalization"] == "glf-cr"
    assert all(
        (tmp_path / "ev" / f"panels_{k}.png").stat().st_size > 1000 for k in ("best", "worst")
    )


def test_cr_eval_cli_errors(tmp_path, capsys):
    assert eval_main(["--checkpoint", str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt: checkpoint not found" in capsys.readouterr().err


def _write_scene(tmp_path, h=80, w=72, s1_shift=0.0, s2_bands=13):
    rng = np.random.default_rng(0)
    t = Affine(10.0, 0, 500000.0, 0, -10.0, 4400000.0)
    s2 = rng.integers(100, 5000, size=(s2_bands, h, w)).astype(np.uint16)
    s1 = rng.uniform(-25, -5, size=(2, h, w)).astype(np.float32)
    p2 = write_raster(tmp_path / "s2.tif", s2, crs="EPSG:32633", transform=t)
    p1 = write_raster(
        tmp_path / "s1.tif", s1, crs="EPSG:32633", transform=t @ Affine.translation(s1_shift, 0)
    )
    return p2, p1, s2, t


def test_cr_predict_keeps_georeference_and_identity(identity_checkpoint, tmp_path):
    p2, p1, s2, t = _write_scene(tmp_path)
    out = tmp_path / "out.tif"
    rc = predict_main(
        [
            "--checkpoint",
            str(identity_checkpoint),
            "--s2",
            str(p2),
            "--s1",
            str(p1),
            "--out",
            str(out),
            "--tile_size",
            "32",
            "--overlap",
            "8",
        ]
    )
    assert rc == 0
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32633 and dst.transform == t
        assert dst.count == 13 and dst.dtypes[0] == "uint16" and dst.shape == (80, 72)
        pred = dst.read()
    np.testing.assert_array_equal(pred, s2)  # identity model + blending reproduces the input DN


def test_cr_predict_bad_inputs(identity_checkpoint, tmp_path, capsys):
    p2, p1, _, _ = _write_scene(tmp_path, s1_shift=3.0)
    args = [
        "--checkpoint",
        str(identity_checkpoint),
        "--s2",
        str(p2),
        "--s1",
        str(p1),
        "--out",
        str(tmp_path / "o.tif"),
    ]
    assert predict_main(args) == 2
    err = capsys.readouterr().err
    assert "s1.tif" in err or "s2.tif" in err
    sub = tmp_path / "b"
    sub.mkdir()
    p2, p1, _, _ = _write_scene(sub, s2_bands=12)
    assert (
        predict_main(
            [
                "--checkpoint",
                str(identity_checkpoint),
                "--s2",
                str(p2),
                "--s1",
                str(p1),
                "--out",
                str(sub / "o.tif"),
                "--tile_size",
                "32",
                "--overlap",
                "8",
            ]
        )
        == 2
    )
    assert "expected 13 Sentinel-2 bands" in capsys.readouterr().err
    assert (
        predict_main(
            [
                "--checkpoint",
                str(identity_checkpoint),
                "--s2",
                str(p2),
                "--s1",
                str(p1),
                "--out",
                str(sub / "o.tif"),
                "--tile_size",
                "40",
            ]
        )
        == 2
    )
