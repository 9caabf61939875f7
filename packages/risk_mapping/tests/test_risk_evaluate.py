"""Evaluation equals scikit-learn / scipy on the same pixels; report, targets and baseline deltas."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from eo_common.raster import write_raster
from risk_mapping.config import TargetsConfig, evaluation_metrics
from risk_mapping.evaluate import evaluate_maps, load_baseline, render_report, write_evaluation
from scipy.stats import spearmanr
from sklearn.metrics import cohen_kappa_score, precision_recall_fscore_support

GEO = dict(crs="EPSG:32632", transform=Affine(10.0, 0, 300000.0, 0, -10.0, 5000000.0))


@pytest.fixture
def maps(tmp_path):
    rng = np.random.default_rng(0)
    h, w = 300, 70  # more rows than one evaluation strip (256)
    truth = rng.choice([0, 1, 2], (h, w), p=[0.6, 0.25, 0.15]).astype(np.uint8)
    pred = np.where(rng.random((h, w)) < 0.7, truth, rng.integers(0, 3, (h, w))).astype(np.uint8)
    rank = np.clip(pred + rng.normal(0, 0.3, (h, w)), 0, 2).astype(np.float32)
    truth[:5] = 255
    pred[50:53, :10] = 255  # no prediction (stack nodata)
    rank[50:53, :10] = -1
    split = np.where(np.arange(w)[None, :] < 35, 2, 0).repeat(h, 0).astype(np.uint8)
    paths = {
        "labels": write_raster(tmp_path / "labels.tif", truth, nodata=255, **GEO),
        "pred": write_raster(tmp_path / "class.tif", pred, nodata=255, **GEO),
        "rank": write_raster(tmp_path / "rank.tif", rank, nodata=-1, **GEO),
        "split": write_raster(tmp_path / "split.tif", split, nodata=255, **GEO),
    }
    return paths, truth, pred, rank, split


def test_metrics_equal_sklearn_and_scipy_on_valid_split_pixels(maps):
    paths, truth, pred, rank, split = maps
    m = evaluate_maps(
        paths["labels"], paths["pred"], paths["rank"], split_mask_path=paths["split"], split="test"
    )
    keep = (truth != 255) & (split == 2) & (pred != 255)
    t, p, r = truth[keep], pred[keep], rank[keep]
    assert m["n_pixels"] == keep.sum()
    assert m["n_unpredicted"] == ((truth != 255) & (split == 2) & (pred == 255)).sum() > 0
    assert m["kappa"] == pytest.approx(cohen_kappa_score(t, p), abs=1e-10)
    assert m["kappa_quadratic"] == pytest.approx(
        cohen_kappa_score(t, p, weights="quadratic"), abs=1e-10
    )
    prec, rec, f1, _ = precision_recall_fscore_support(t, p, labels=[0, 1, 2], zero_division=0)
    for k in range(3):
        assert m[f"class{k}_precision"] == pytest.approx(prec[k])
        assert m[f"class{k}_recall"] == pytest.approx(rec[k])
        assert m[f"class{k}_f1"] == pytest.approx(f1[k])
    assert m["spearman_rho"] == pytest.approx(spearmanr(r, t).statistic, abs=1e-9)
    whole = evaluate_maps(paths["labels"], paths["pred"], paths["rank"])
    assert whole["n_pixels"] == ((truth != 255) & (pred != 255)).sum()


def test_report_targets_and_baseline(maps, tmp_path):
    paths, *_ = maps
    no_crf = evaluate_maps(paths["labels"], paths["pred"], paths["rank"])
    crf = dict(no_crf, kappa=no_crf["kappa"] + 0.1)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(
        json.dumps(
            {
                "kappa": 0.4534,
                "class1_precision": 0.1785,
                "class2_recall": 0.9386,
                "spearman_rho": 0.5666,
                "note": "x",
            }
        )
    )
    targets = TargetsConfig(
        kappa=crf["kappa"] - 1e-9, class1_precision=0.22, class2_recall=None, spearman_rho=0.58
    )
    out = write_evaluation(tmp_path / "eval", {"no_crf": no_crf, "crf": crf}, targets, baseline)
    record = json.loads(out["metrics"].read_text())
    assert record["crf_effect"]["kappa"] == pytest.approx(0.1)
    assert record["delta_vs_baseline"]["crf"]["kappa"] == pytest.approx(crf["kappa"] - 0.4534)
    rows = {r["metric"]: r for r in record["success_criteria"]}
    assert set(rows) == {"kappa", "class1_precision", "spearman_rho"}
    assert rows["kappa"]["crf_met"] and not rows["kappa"]["no_crf_met"]
    report = out["report"].read_text()
    assert (
        "| kappa | >= " in report
        and "PASS" in report
        and "FAIL" in report
        and "CRF effect" in report
    )
    assert "baseline" in report and out["confusion_crf"].stat().st_size > 0
    # our own metrics.json works as a baseline too (its crf variant is used)
    assert load_baseline(out["metrics"])["kappa"] == pytest.approx(crf["kappa"])
    assert "n_pixels" in render_report(
        {"no_crf": no_crf}, TargetsConfig()
    ) or "Pixels evaluated" in render_report({"no_crf": no_crf}, TargetsConfig())


def test_bad_inputs_name_the_file(maps, tmp_path):
    paths, *_ = maps
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_baseline(tmp_path / "nope.json")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    with pytest.raises(ValueError, match="empty.json"):
        load_baseline(empty)
    other = write_raster(tmp_path / "other.tif", np.zeros((10, 10), np.uint8), **GEO)
    with pytest.raises(ValueError, match="other.tif"):
        evaluate_maps(paths["labels"], other, None)


# ------------------------------------------------------------------------------ the command
RELEASE = __import__("pathlib").Path(__file__).resolve().parent / "data" / "release_0_1_0"


@pytest.fixture(scope="module")
def release_stack(tmp_path_factory, request):
    """The fake stack the release-0.1.0 checkpoint was made on (regenerated, same values)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "risk_testdata_risk_stack_eval", RELEASE.parent / "risk_stack.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path_factory.mktemp("release_stack")
    module.make_risk_stack(root, size=96, bands=4, seed=0)
    return root


def test_release_checkpoint_still_loads_and_scores_the_same(release_stack, tmp_path):
    """Issue 9.6: a checkpoint written by release 0.1.0 loads in today's risk-evaluate, which
    reports the same confusion matrix the release reported for it."""
    from risk_mapping.cli import risk_evaluate

    out = tmp_path / "eval"
    args = ["--model_path", str(RELEASE / "best.ckpt"), "--test_data_path", str(release_stack)]
    assert risk_evaluate(args + ["--output_dir", str(out), "--no_progress"]) == 0
    ref = json.loads((RELEASE / "reference_metrics.json").read_text())["variants"]
    got = json.loads((out / "metrics.json").read_text())["variants"]
    assert got["no_crf"]["confusion_matrix"] == ref["no_crf"]["confusion_matrix"]
    assert got["no_crf"]["kappa"] == pytest.approx(ref["no_crf"]["kappa"], abs=1e-12)
    assert got["crf"]["n_pixels"] == ref["crf"]["n_pixels"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"] == "risk-evaluate" and summary["status"] == "finished"
    assert summary["metrics"]["all/kappa"] == pytest.approx(ref["no_crf"]["kappa"])
    assert "all/kappa_crf" in summary["metrics"]
    assert tuple(summary["metrics"]) == evaluation_metrics("all")  # declared: risk_evaluate.metrics
    assert set(summary["metrics"]) <= set(risk_evaluate.metrics)


def test_evaluate_faults_are_one_line_and_found_up_front(release_stack, tmp_path, capsys):
    """A missing path is named, a label grid mismatch is found before predicting anything, a
    truncated checkpoint is one line; exit 2 and no output folder in every case."""
    from affine import Affine
    from risk_mapping.cli import risk_evaluate

    ckpt = str(RELEASE / "best.ckpt")
    out = tmp_path / "eval"

    def run(*args: str) -> str:
        assert risk_evaluate([*args, "--output_dir", str(out), "--no_progress"]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and not out.exists()
        return err

    missing = tmp_path / "no_such_folder"
    err = run("--model_path", ckpt, "--test_data_path", str(missing))
    assert f"test_data_path: {missing} does not exist" in err and "a file" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "stack.tif" in run("--model_path", ckpt, "--test_data_path", str(empty))
    shifted = tmp_path / "shifted_labels.tif"
    with rasterio.open(release_stack / "labels.tif") as src:
        write_raster(shifted, src.read(1), crs=src.crs, nodata=255,
                     transform=src.transform @ Affine.translation(3, 0))  # fmt: skip
    err = run("--model_path", ckpt, "--test_data_path", str(release_stack / "stack.tif"),
              "--labels", str(shifted))  # fmt: skip
    assert "shifted_labels.tif: grid differs" in err
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes((RELEASE / "best.ckpt").read_bytes()[:50_000])
    err = run("--model_path", str(cut), "--test_data_path", str(release_stack))
    assert len(err.strip().splitlines()) == 1 and "cut.ckpt: not a readable torch checkpoint" in err
