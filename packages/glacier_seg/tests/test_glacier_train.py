"""glacier-train -> glacier-eval -> glacier-predict through the commands, on fake tiles in the real
layouts: competition MCC vs scikit-learn, a run repeated from its config.yaml, finished runs never
touched, the smp export, output names, GIS class maps."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
import segmentation_models_pytorch as smp
import torch
from eo_common.raster import read_class_names, read_raster
from glacier_fake_data import make_participants_train, make_platform_test
from glacier_seg.cli import glacier_eval, glacier_predict, glacier_train
from glacier_seg.data import Normalizer, load_tiles
from glacier_seg.inference import load_model
from glacier_seg.layout import find_tiles
from glacier_tiny import tiny_train_args as tiny_args
from rio_cogeo.cogeo import cog_validate
from sklearn.metrics import matthews_corrcoef


def _val_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("val/mcc")]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def trained(glacier_root, glcm_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert glacier_train(tiny_args(glacier_root, out, glcm_cache)) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_summary_and_val_mcc_is_sklearn_mcc_of_the_validation_pixels(glacier_root, trained):
    run, summary = trained
    assert summary["status"] == "finished" and summary["command"] == "glacier-train"
    assert summary["extra"]["val_tiles"] == ["5"] and summary["extra"]["train_tiles"] == [
        "2",
        "8",
        "11",
    ]
    for key in ("val/mcc", "val/kappa", "val/per_class/lake/iou", "val/per_class/debris/f1"):
        assert np.isfinite(summary["metrics"][key]), key
    assert tuple(summary["metrics"]) == glacier_train.metrics  # what it declares (eolab sweep)
    model = load_model(summary["paths"]["best_checkpoint"])
    (tile,) = [t for t in find_tiles(glacier_root) if t.tile_id == "5"]
    (arrays,) = load_tiles([tile], glcm=model.texture)
    x = torch.from_numpy(model.normalizer(arrays.image))[None]
    with torch.no_grad():
        pred = model.module(x).argmax(1)[0].numpy()
    expected = matthews_corrcoef(arrays.mask.ravel(), pred.ravel())
    assert summary["metrics"]["val/mcc"] == pytest.approx(expected, abs=1e-6)
    best = [r for r in _val_rows(run) if int(float(r["epoch"])) == summary["best_epoch"]]
    assert float(best[0]["val/mcc"]) == pytest.approx(expected, abs=1e-6)


def test_config_yaml_repeats_the_run(trained, tmp_path):
    run, summary = trained
    other = tmp_path / "repeat"
    assert glacier_train(["--config", str(run / "config.yaml"), "--output_dir", str(other)]) == 0
    again = json.loads((other / "summary.json").read_text())
    assert again["metrics"] == summary["metrics"] and again["config_hash"] == summary["config_hash"]
    assert _val_rows(other) == _val_rows(run)
    a = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(other / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_compare_on_two_glacier_runs_prints_the_table_and_draws_the_curves(
    glacier_root, glcm_cache, trained, tmp_path
):
    """``eolab runs compare`` on two real glacier-train run folders that differ in the learning
    rate: the table names that field and each run's metrics (deltas against the first), the CSV
    holds the summaries' numbers, and curves.png overlays every metrics.csv column it names."""
    import math
    import subprocess
    import sys

    from PIL import Image

    run_a, summary_a = trained
    run_b = tmp_path / "runs" / "lr3e-3"
    assert glacier_train(tiny_args(glacier_root, run_b, glcm_cache, "--lr", "3e-3")) == 0
    summary_b = json.loads((run_b / "summary.json").read_text())
    out = tmp_path / "cmp"
    done = subprocess.run(
        [sys.executable, "-m", "eo_common.cli", "runs", "compare", str(run_a), str(run_b),
         "--baseline", str(run_a), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("|")]
    columns = [c.strip() for c in lines[0].strip("|").split("|")]
    metrics = list(glacier_train.metrics)
    # the one config field that differs (paths and run names are where a run lives, not what it is)
    assert columns == ["run", "command", "status", "optim.lr", *metrics,
                       *(f"Δ {m}" for m in metrics)]  # fmt: skip
    assert len(lines) == 2 + 3  # header, rule, the baseline and the two runs
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row, summary in zip(rows[1:], (summary_a, summary_b)):
        assert row["command"] == "glacier-train" and row["status"] == "finished"
        for m in metrics:
            assert float(row[m]) == pytest.approx(summary["metrics"][m])
            assert float(row[f"Δ {m}"]) == pytest.approx(
                summary["metrics"][m] - summary_a["metrics"][m]
            )
    assert [float(r["optim.lr"]) for r in rows[1:]] == [_config_lr(run_a), 3e-3]
    # curves.png: one 400 x 300 px panel per drawn column, three panels a row
    with open(run_a / "metrics.csv", newline="") as f:
        logged = set(next(csv.reader(f)))
    drawn = [c for c in dict.fromkeys([*metrics, "val/loss", "train/loss"]) if c in logged]
    assert "val/mcc" in drawn and "train/loss" in drawn
    with Image.open(out / "curves.png") as image:
        assert image.format == "PNG"
        assert image.size == (400 * 3, 300 * math.ceil(len(drawn) / 3))
    assert "![curves](curves.png)" in (out / "compare.md").read_text()


def _config_lr(run: Path) -> float:
    import yaml

    return float(yaml.safe_load((run / "config.yaml").read_text())["optim"]["lr"])


def test_rerun_into_a_finished_run_leaves_every_byte(
    glacier_root, glcm_cache, trained, tmp_path, capsys
):
    run, _ = trained
    before = _files(run)
    assert glacier_train(tiny_args(glacier_root, run, glcm_cache)) == 2
    assert "already holds a finished run of glacier-train" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(glacier_root, broken)
    (broken / "Band4" / "B6_B6_masked_08.tif").unlink()
    assert glacier_train(tiny_args(broken, run, glcm_cache, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "tile 8: no file in Band4" in err and "Traceback" not in err
    assert _files(run) == before


def test_smp_export_loads_in_smp_with_the_same_outputs(trained):
    run, summary = trained
    export = Path(summary["extra"]["smp_model"])
    exported = smp.from_pretrained(str(export)).eval()
    net = load_model(summary["paths"]["best_checkpoint"]).module.net
    x = torch.randn(2, 7, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), net(x), rtol=0, atol=0)
    inputs = json.loads((export / "glacier_inputs.json").read_text())
    assert inputs["channels"] == ["B2", "B3", "B4", "B6", "B10", "contrast", "homogeneity"]
    assert inputs["classes"] == ["background", "glacier", "debris", "lake"]
    assert Normalizer.from_dict(inputs["normalizer"]).mode == "percentile"


def test_eval_of_an_ensemble_with_tta_matches_sklearn(glacier_root, glcm_cache, trained, tmp_path):
    _, summary = trained
    ckpt = summary["paths"]["best_checkpoint"]
    common = ["--data_root", str(glacier_root), "--glcm_cache", str(glcm_cache), "--no_progress"]
    out = tmp_path / "all"
    assert glacier_eval([*common, "--checkpoints", f"[{ckpt},{ckpt}]", "--split", "all", "--tta",
                         "--scales", "[1.0,0.5]", "--max_panels", "2", "--output_dir", str(out)]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mcc"] == pytest.approx(metrics["mcc_sklearn"], abs=1e-9)
    assert metrics["tile_ids"] == ["2", "5", "8", "11"] and metrics["n_pixels"] == 4 * 64 * 64
    assert np.asarray(metrics["confusion_matrix"]).sum() == 4 * 64 * 64
    assert len(list(out.glob("panel_*.png"))) == 2 and (out / "confusion_matrix.png").is_file()
    record = json.loads((out / "summary.json").read_text())
    assert record["status"] == "finished" and record["metrics"]["test/mcc"] == metrics["mcc"]
    assert tuple(record["metrics"]) == glacier_eval.metrics
    val = tmp_path / "val"
    assert glacier_eval([*common, "--checkpoint", ckpt, "--output_dir", str(val)]) == 0
    metrics = json.loads((val / "metrics.json").read_text())
    assert metrics["tile_ids"] == ["5"]
    assert metrics["mcc"] == pytest.approx(summary["metrics"]["val/mcc"], abs=1e-6)


def test_predict_names_masks_like_band1_and_writes_gis_class_maps(trained, glcm_cache, tmp_path):
    """The platform test data is Band1..Band5/img001.tif ...: each output mask must be named like the
    Band1 file (the first release wrote Y_output_resized_01.tif)."""
    _, summary = trained
    data = make_platform_test(tmp_path / "test", n=2, size=288)
    out = tmp_path / "pred"
    args = ["--checkpoint", summary["paths"]["best_checkpoint"], "--input", str(data),
            "--output_dir", str(out), "--glcm_cache", str(glcm_cache), "--no_progress"]  # fmt: skip
    assert glacier_predict(args) == 0
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["img001.tif", "img002.tif"]
    mask = read_raster(out / "masks" / "img001.tif")
    band = read_raster(data / "Band1" / "img001.tif")
    assert mask.array.dtype == np.uint8 and mask.array.shape == (1, 288, 288)
    assert set(np.unique(mask.array)) <= {0, 85, 170, 255}
    assert mask.crs == band.crs and mask.transform == band.transform
    # the GIS class map: same prediction as classes 0..3, colours, names, overviews, a valid COG
    class_map = out / "class_maps" / "img001.tif"
    classes = read_raster(class_map).array[0]
    np.testing.assert_array_equal(np.asarray([0, 85, 170, 255])[classes], mask.array[0])
    assert read_class_names(class_map) == {0: "background", 1: "glacier", 2: "debris", 3: "lake"}
    with rasterio.open(class_map) as src:
        assert src.colormap(1)[3][:3] == (26, 51, 230) and src.overviews(1) == [2]
        assert src.nodata == 255 and src.crs == band.crs
    assert cog_validate(str(class_map), quiet=True)[0]
    categories = [
        c.text for c in ElementTree.parse(f"{class_map}.aux.xml").getroot().iter("Category")
    ]
    assert categories == ["background", "glacier", "debris", "lake"]
    assert 'type="paletted"' in (out / "class_maps" / "img001.qml").read_text()
    # --resume skips finished tiles and rewrites nothing
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()}
    assert glacier_predict([*args, "--resume"]) == 0
    record = json.loads((out / "summary.json").read_text())
    assert record["metrics"] == {"tiles_written": 0.0, "tiles_skipped": 2.0}
    assert tuple(record["metrics"]) == glacier_predict.metrics
    assert {p: p.stat().st_mtime_ns for p in (out / "masks").iterdir()} == mtimes


def test_predict_keeps_the_whole_tile_key(trained, glcm_cache, tmp_path):
    """Keys 02_07 and 07_07 both became ..._07.tif in the first release and overwrote each other."""
    _, summary = trained
    train = make_participants_train(tmp_path, size=32)
    out = tmp_path / "pred"
    assert glacier_predict(["--checkpoint", summary["paths"]["best_checkpoint"], "--input", str(train),
                            "--output_dir", str(out), "--glcm_cache", str(glcm_cache), "--no_class_maps",
                            "--name_template", "Y_output_resized_{key}.tif", "--no_progress"]) == 0  # fmt: skip
    names = sorted(p.name for p in (out / "masks").iterdir())
    assert names == [f"Y_output_resized_{k}.tif" for k in ("02_07", "02_13", "07_07", "13_02")]
    assert not (out / "class_maps").exists()
