"""train -> eval -> predict on fake tiles; competition MCC vs scikit-learn; resume; CLI errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster
from glacier_seg.data import Normalizer, find_tiles, load_tiles
from glacier_seg.evaluate import EvalConfig, evaluate, load_model
from glacier_seg.predict import PredictConfig, predict
from glacier_seg.train import build_parser, config_from_args, main, train
from sklearn.metrics import matthews_corrcoef

TINY = [
    "--encoder_name", "resnet18", "--decoder_channels", "64,32,32,16,16",
    "--crop_size", "32", "--batch_size", "4", "--samples_per_epoch", "8",
    "--num_workers", "0", "--val_ids", "5", "--glcm_window", "5", "--glcm_levels", "16",
    "--lr_scheduler", "cosine_restarts", "--T_0", "1", "--early_stop_patience", "0",
]  # fmt: skip


def _cfg(root, out, *extra):
    args = ["--data_root", str(root), "--output_dir", str(out), *TINY, *extra]
    return config_from_args(build_parser().parse_args(args))


@pytest.fixture(scope="module")
def trained(glacier_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    summary = train(
        _cfg(glacier_root, out, "--max_epochs", "1"),
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return out, summary


@pytest.mark.slow
def test_val_mcc_is_sklearn_mcc_of_all_validation_pixels(glacier_root, trained):
    _, summary = trained
    assert summary["val_tiles"] == ["5"] and summary["train_tiles"] == ["2", "8", "11"]
    model = load_model(summary["best_checkpoint"])
    tiles = [t for t in find_tiles(glacier_root) if t.tile_id == "5"]
    arrays = load_tiles(tiles, glcm=model.glcm if model.include_glcm else None)
    assert arrays[0].image.shape[0] == 7
    x = torch.from_numpy(model.normalizer(arrays[0].image))[None]
    with torch.no_grad():
        pred = model.module(x).argmax(1)[0].numpy()
    expected = matthews_corrcoef(arrays[0].mask.ravel(), pred.ravel())
    assert summary["best_val_mcc"] == pytest.approx(expected, abs=1e-6)
    with open(f"{summary['run_dir']}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/mcc")]
    assert float(rows[-1]["val/mcc"]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.slow
def test_eval_matches_sklearn_and_writes_outputs(glacier_root, trained, tmp_path):
    _, summary = trained
    ckpt = summary["best_checkpoint"]
    result = evaluate(
        EvalConfig(
            checkpoints=[ckpt, ckpt],
            data_root=glacier_root,
            split="all",
            tta=True,
            scales=(1.0, 0.5),
            out_dir=tmp_path,
            max_panels=2,
        )
    )
    assert result["mcc"] == pytest.approx(result["mcc_sklearn"], abs=1e-9)
    assert result["tile_ids"] == ["2", "5", "8", "11"] and result["n_pixels"] == 4 * 64 * 64
    assert np.asarray(result["confusion_matrix"]).sum() == 4 * 64 * 64
    for name in ("metrics.json", "confusion_matrix.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    masks = {a.tile_id: a.mask for a in load_tiles(find_tiles(glacier_root))}
    richest = sorted(masks, key=lambda t: -int((masks[t] > 0).sum()))[:2]
    assert sorted(p.name for p in tmp_path.glob("panel_*.png")) == sorted(
        f"panel_{t}.png" for t in richest
    )
    assert set(result["per_class"]) == {"background", "glacier", "debris", "lake"}
    val_only = evaluate(EvalConfig(checkpoints=[ckpt], data_root=glacier_root, split="val"))
    assert val_only["tile_ids"] == ["5"]
    assert val_only["mcc"] == pytest.approx(summary["best_val_mcc"], abs=1e-6)


@pytest.mark.slow
def test_predict_writes_competition_values_with_georeference(glacier_root, trained, tmp_path):
    _, summary = trained
    out = tmp_path / "pred"
    result = predict(
        PredictConfig(checkpoints=[summary["best_checkpoint"]], input=glacier_root, out_dir=out)
    )
    assert len(result["written"]) == 4
    mask = read_raster(out / "Y_output_resized_05.tif")
    band = read_raster(glacier_root / "Band1" / "B2_B2_masked_05.tif")
    assert mask.array.dtype == np.uint8 and mask.array.shape == (1, 64, 64)
    assert set(np.unique(mask.array)) <= {0, 85, 170, 255}
    assert mask.crs == band.crs and mask.transform == band.transform
    again = predict(
        PredictConfig(checkpoints=[summary["best_checkpoint"]], input=glacier_root, out_dir=out)
    )
    assert (
        again["written"] == [] and len(again["skipped"]) == 4
    )  # resumable: finished tiles skipped


@pytest.mark.slow
def test_resume_continues_from_last_checkpoint(glacier_root, trained, tmp_path):
    out, summary = trained
    cfg = _cfg(glacier_root, out, "--max_epochs", "2", "--resume")
    resumed = train(cfg, enable_progress_bar=False, enable_model_summary=False)
    assert resumed["epochs"] == 2
    with open(f"{resumed['run_dir']}/metrics.csv") as f:
        epochs = sorted({int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/mcc")})
    assert epochs == [0, 1]  # epoch 0 from the first run, only epoch 1 trained again


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    code = main(["--data_root", str(tmp_path / "absent"), "--output_dir", str(tmp_path), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "absent" in err
    (tmp_path / "gh" / "Band1").mkdir(parents=True)
    code = main(["--data_root", str(tmp_path / "gh"), "--output_dir", str(tmp_path), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and "missing folder" in err and "Label" in err
    with pytest.raises(ValueError, match="crop_size"):
        config_from_args(build_parser().parse_args(["--crop_size", "50"]))


def test_resume_without_checkpoint_is_an_error(glacier_root, tmp_path, capsys):
    code = main(
        [
            "--data_root",
            str(glacier_root),
            "--output_dir",
            str(tmp_path),
            *TINY,
            "--resume",
            "--experiment_name",
            "never_ran",
        ]
    )
    assert code == 2 and "last.ckpt" in capsys.readouterr().err


def test_dataset_normalisation_is_stored_in_the_checkpoint_config(glacier_root, tmp_path):
    cfg = _cfg(glacier_root, tmp_path, "--normalization", "dataset", "--no-include_glcm")
    assert cfg.data.in_channels == 5 and cfg.model.in_channels == 5
    from glacier_seg.train import build_module, prepare_data

    train_tiles, _, normalizer = prepare_data(cfg)
    module = build_module(cfg, normalizer)
    restored = Normalizer.from_dict(module.hparams["data"]["normalizer"])
    np.testing.assert_allclose(restored.stats.mean, normalizer.stats.mean)
    assert json.dumps(module.hparams["data"], default=str)
