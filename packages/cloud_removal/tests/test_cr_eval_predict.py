"""cr-eval against hand-computed metrics, cr-predict keeps georeference and handles NaN (identity
checkpoints), checkpoints of release 0.1.0 still load, foreign and corrupt checkpoints are one line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from cloud_removal.cli import cr_eval, cr_predict
from cloud_removal.config import eval_metrics
from cloud_removal.data import SEN12MSCRDataset
from cloud_removal.evaluate import load_task
from eo_common.raster import read_raster, write_raster
from skimage.metrics import structural_similarity

DATA = Path(__file__).resolve().parent / "data"
OLD_CKPT = DATA / "cr_train_v0.1.0.ckpt"  # written by cr-train of release 0.1.0 (commit bcbb749)
OLD_REF = json.loads((DATA / "cr_train_v0.1.0.json").read_text())


def _read_split(root, split="test"):
    ds = SEN12MSCRDataset(root, split=split, load_size=48, crop_size=48, train=False)
    out = []
    for sm in ds.samples:
        clear, cloudy = (
            rasterio.open(p).read().astype(np.float64) for p in (sm.s2_clear, sm.s2_cloudy)
        )
        out.append((np.clip(cloudy, 0, 10000) / 1e4, np.clip(clear, 0, 10000) / 1e4))
    return out


def _eval(argv: list[str]) -> dict:
    assert cr_eval([*argv, "--no_progress"]) == 0
    out = Path(argv[argv.index("--out") + 1])
    return json.loads((out / "summary.json").read_text())


def test_cr_eval_matches_hand_computed_metrics(fake_root, identity_checkpoint, tmp_path):
    summary = _eval(
        ["--checkpoint", str(identity_checkpoint), "--split", "test", "--out", str(tmp_path / "ev")]
        + ["--input_data_folder", str(fake_root), "--load_size", "48", "--panels", "1"]
    )
    pairs = _read_split(fake_root)
    cloudy = np.stack([c for c, _ in pairs])
    clear = np.stack([t for _, t in pairs])
    assert summary["status"] == "finished" and summary["command"] == "cr-eval"
    m = summary["extra"]["metrics"]
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
    assert summary["metrics"]["test/psnr"] == m["model"]["all"]["psnr"]
    # exactly the names cr-eval declares for the split (LPIPS only with --lpips_weights)
    assert set(summary["metrics"]) == set(eval_metrics("test")) - {"test/lpips"}
    assert set(summary["metrics"]) <= set(cr_eval.metrics)
    assert summary["metrics"]["test/psnr_gain"] == pytest.approx(0.0, abs=1e-9)
    with open(summary["paths"]["per_image_csv"]) as f:
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
    assert summary["extra"]["n_images"] == 2 and summary["extra"]["normalization"] == "glf-cr"
    assert all(
        (tmp_path / "ev" / f"panels_{k}.png").stat().st_size > 1000 for k in ("best", "worst")
    )


def test_release_0_1_0_checkpoint_still_loads(fake_root, tmp_path):
    """A cr-train checkpoint of release 0.1.0 (in tests/data, with the outputs that release computed
    from it) loads into today's network, and cr-eval / cr-predict reproduce those outputs."""
    task = load_task(OLD_CKPT)
    rng = np.random.default_rng(0)
    optical = torch.from_numpy(rng.uniform(0, 0.6, (1, 13, 32, 32)).astype(np.float32))
    sar = torch.from_numpy(rng.uniform(0, 1, (1, 2, 32, 32)).astype(np.float32))
    with torch.no_grad():
        out = task(optical, sar)
    residual = (out.prediction - optical).abs().sum((0, 2, 3)).double().numpy()
    np.testing.assert_allclose(residual, OLD_REF["residual_abs_sum_per_band"], rtol=1e-4)
    assert float(out.confidence.mean()) == pytest.approx(OLD_REF["confidence_mean"], rel=1e-5)
    # cr-eval on the same fake data (tests/data/sen12mscr.py = the generator of that release)
    summary = _eval(
        ["--checkpoint", str(OLD_CKPT), "--split", "test", "--out", str(tmp_path / "ev")]
        + ["--input_data_folder", str(fake_root), "--load_size", "48", "--crop_size", "48"]
        + ["--panels", "0"]
    )
    for k, v in OLD_REF["cr_eval_test_model_all"].items():
        assert summary["extra"]["metrics"]["model"]["all"][k] == pytest.approx(
            v, rel=1e-5, abs=1e-7
        )
    # cr-predict on the reference scene
    rng = np.random.default_rng(1)
    t = Affine(10.0, 0, 500000.0, 0, -10.0, 4400000.0)
    s2 = rng.integers(100, 5000, size=(13, 64, 48)).astype(np.uint16)
    s1 = rng.uniform(-25, -5, size=(2, 64, 48)).astype(np.float32)
    p2 = write_raster(tmp_path / "s2.tif", s2, crs="EPSG:32633", transform=t)
    p1 = write_raster(tmp_path / "s1.tif", s1, crs="EPSG:32633", transform=t)
    argv = ["--checkpoint", str(OLD_CKPT), "--s2", str(p2), "--s1", str(p1)]
    argv += ["--output_dir", str(tmp_path / "p"), "--tile_size", "32", "--overlap", "8"]
    # the release's square-tile layout (today's default stretches the last tiles)
    assert cr_predict([*argv, "--pad", "16", "--last_tile", "shift", "--no_progress"]) == 0
    pred = read_raster(tmp_path / "p" / "s2_cloudfree.tif").array.astype(np.float64)
    np.testing.assert_allclose(pred.mean((1, 2)), OLD_REF["cr_predict_band_mean_dn"], atol=0.05)


def test_foreign_and_corrupt_checkpoints_are_one_line(fake_root, tmp_path, capsys):
    foreign = tmp_path / "glacier.ckpt"
    torch.save(
        {
            "state_dict": {"model.encoder.conv1.weight": torch.zeros(64, 7, 7, 7)},
            "hyper_parameters": {"encoder": "resnet34", "in_channels": 7},
        },
        foreign,
    )
    other = tmp_path / "other_net.ckpt"
    data = torch.load(OLD_CKPT, weights_only=False)
    data["hyper_parameters"]["model_config"]["base_width"] = 8  # tensors no longer fit
    torch.save(data, other)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(OLD_CKPT.read_bytes()[:5000])
    for path, expect in (
        (foreign, "not a cr-train checkpoint (no model_name, model_config, loss_config"),
        (other, "not a cr-train checkpoint of this network:"),
        (truncated, "not a readable torch checkpoint (truncated or corrupt?)"),
        (tmp_path / "missing.ckpt", "checkpoint not found"),
    ):
        argv = ["--checkpoint", str(path), "--input_data_folder", str(fake_root)]
        assert cr_eval([*argv, "--out", str(tmp_path / f"ev_{path.stem}")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expect in err[0] and str(path) in err[0], err
        assert len(err[0]) < 400  # no list of missing keys
        assert not (tmp_path / f"ev_{path.stem}").exists()  # refused before the folder is made


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


def _predict(ckpt, p2, p1, out, *extra) -> int:
    argv = ["--checkpoint", str(ckpt), "--s2", str(p2), "--s1", str(p1), "--output_dir", str(out)]
    return cr_predict([*argv, "--tile_size", "32", "--overlap", "8", "--no_progress", *extra])


def test_cr_predict_keeps_georeference_and_identity(identity_checkpoint, tmp_path):
    p2, p1, s2, t = _write_scene(tmp_path)
    assert _predict(identity_checkpoint, p2, p1, tmp_path / "run") == 0
    out = tmp_path / "run" / "s2_cloudfree.tif"
    with rasterio.open(out) as dst:
        assert dst.crs.to_epsg() == 32633 and dst.transform == t
        assert dst.count == 13 and dst.dtypes[0] == "uint16" and dst.shape == (80, 72)
        pred = dst.read()
    np.testing.assert_array_equal(pred, s2)  # identity model + blending reproduces the input DN
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["paths"]["prediction"] == str(out)
    before = out.read_bytes()
    assert _predict(identity_checkpoint, p2, p1, tmp_path / "run") == 2  # the rerun rule
    assert out.read_bytes() == before


def test_cr_predict_nan_input_is_nodata(identity_checkpoint, tmp_path, capsys):
    """NaN in the inputs is filled for the network and written as nodata (0), as the README says;
    no message about a temporary VRT or an API argument."""
    rng = np.random.default_rng(0)
    t = Affine(10.0, 0, 500000.0, 0, -10.0, 4400000.0)
    s2 = rng.uniform(100, 5000, size=(13, 64, 64)).astype(np.float32)
    s2[:, 10:14, 20:30] = np.nan  # a hole in every band
    s2[3, 40, 40] = np.nan  # one band of one pixel
    s1 = rng.uniform(-25, -5, size=(2, 64, 64)).astype(np.float32)
    s1[0, 50:52, 5:7] = np.nan
    p2 = write_raster(tmp_path / "s2.tif", s2, crs="EPSG:32633", transform=t)
    p1 = write_raster(tmp_path / "s1.tif", s1, crs="EPSG:32633", transform=t)
    assert _predict(identity_checkpoint, p2, p1, tmp_path / "run") == 0, capsys.readouterr().err
    with rasterio.open(tmp_path / "run" / "s2_cloudfree.tif") as dst:
        assert dst.nodata == 0
        pred = dst.read()
    missing = np.isnan(s2).any(0) | np.isnan(s1).any(0)
    assert (pred[:, missing] == 0).all()
    valid = ~missing
    # identity model: the input DN back (float input: +-1 DN from rounding through reflectance)
    np.testing.assert_allclose(pred[:, valid], s2[:, valid], atol=1.0)
    assert _predict(identity_checkpoint, p2, p1, tmp_path / "f", "--out_dtype", "float32") == 0
    with rasterio.open(tmp_path / "f" / "s2_cloudfree.tif") as dst:
        f = dst.read()
    assert np.isnan(f[:, missing]).all() and np.isfinite(f[:, valid]).all()


def test_cr_predict_bad_inputs(identity_checkpoint, tmp_path, capsys):
    p2, p1, _, _ = _write_scene(tmp_path, s1_shift=3.0)
    assert _predict(identity_checkpoint, p2, p1, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "s1.tif" in err and "grid differs" in err and len(err.strip().splitlines()) == 1
    sub = tmp_path / "b"
    sub.mkdir()
    p2, p1, _, _ = _write_scene(sub, s2_bands=12)
    assert _predict(identity_checkpoint, p2, p1, sub / "o") == 2
    assert "expected 13 Sentinel-2 bands" in capsys.readouterr().err
    assert not (sub / "o").exists()  # inputs are checked before the run folder is made
    p2, p1, _, _ = _write_scene(sub)
    assert _predict(identity_checkpoint, p2, p1, sub / "o", "--tile_size", "40") == 2
    assert "multiples of the network stride 16" in capsys.readouterr().err
