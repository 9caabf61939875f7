"""The whole pipeline on a fake stack: stages, resume/skip, force_recreate, CLIs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import rasterio
import yaml
from risk_mapping import evaluate as evaluate_cli
from risk_mapping import pipeline
from risk_mapping.config import config_from_dict
from risk_mapping.pipeline import MARKER, run_pipeline


@pytest.mark.slow
def test_pipeline_runs_resumes_and_recreates(config_factory, tmp_path, capsys):
    raw = config_factory(
        training={"epochs": 1, "limit_train_batches": 2},
        inference={
            "tta": True,
            "ensemble_seeds": [0, 1],
            "mc_dropout_samples": 2,
            "uncertainty": "mc_variance",
        },
    )
    cfg = config_from_dict(raw)
    root = tmp_path / "run"
    status = run_pipeline(cfg, progress=False)
    assert status == {s: "ran" for s in pipeline.STAGES}
    for stage in pipeline.STAGES:
        assert (root / stage / MARKER).is_file()
    train_marker = json.loads((root / "train" / MARKER).read_text())
    assert [Path(c).parts[-3] for c in train_marker["checkpoints"]] == [
        "seed0",
        "seed1",
    ]  # ensemble
    with rasterio.open(cfg.dataset.labels) as ref:
        for name in (
            "susceptibility",
            "class_map",
            "uncertainty",
            "class_map_crf",
            "susceptibility_crf",
        ):
            with rasterio.open(root / "infer" / f"{name}.tif") as out:
                assert (
                    out.crs == ref.crs and out.transform == ref.transform and out.shape == ref.shape
                )
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    assert set(metrics["variants"]) == {"no_crf", "crf"} and "crf_effect" in metrics
    assert (root / "evaluate" / "confusion_crf.png").is_file()
    assert "Success criteria" in (root / "evaluate" / "report.md").read_text()

    # a second run skips every finished stage
    mtime = (root / "train" / MARKER).stat().st_mtime
    assert run_pipeline(cfg, progress=False) == {s: "skipped" for s in pipeline.STAGES}
    assert (root / "train" / MARKER).stat().st_mtime == mtime

    # a changed evaluation target re-runs only the evaluate stage
    raw["evaluation"]["targets"] = {"kappa": 0.9}
    cfg2 = config_from_dict(raw)
    assert run_pipeline(cfg2, progress=False) == {
        "prepare": "skipped",
        "train": "skipped",
        "infer": "skipped",
        "evaluate": "ran",
    }

    # --force_recreate re-runs the requested stage and the ones after it
    status = run_pipeline(cfg2, "infer,evaluate", force_recreate=True, progress=False)
    assert status == {"infer": "ran", "evaluate": "ran"}

    # the CLIs: risk-evaluate on the trained model with a baseline, risk-pipeline with a config file
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    assert pipeline.main(["--config", str(config_path), "--quiet"]) == 0
    code = evaluate_cli.main(
        [
            "--model_path",
            str(root / "train"),
            "--test_data_path",
            str(cfg.dataset.stack),
            "--labels",
            str(cfg.dataset.labels),
            "--output_dir",
            str(tmp_path / "eval"),
            "--split_mask",
            str(root / "prepare" / "split_mask.tif"),
            "--compare_baseline",
            str(root / "evaluate" / "metrics.json"),
            "--quiet",
        ]
    )
    assert code == 0
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    # same model, same data, same split: the same numbers as the pipeline's evaluate stage
    assert again["variants"]["no_crf"]["kappa"] == pytest.approx(
        metrics["variants"]["no_crf"]["kappa"], abs=1e-9
    )
    assert again["delta_vs_baseline"]["crf"]["kappa"] == pytest.approx(0.0, abs=1e-9)


def test_pipeline_needs_upstream_stages(config_factory):
    cfg = config_from_dict(config_factory())
    with pytest.raises(FileNotFoundError, match="stage 'prepare' has not finished"):
        run_pipeline(cfg, "train", progress=False)
    with pytest.raises(ValueError, match="unknown stage"):
        run_pipeline(cfg, "prepare,fly", progress=False)


def test_pipeline_cli_rejects_bad_config(config_factory, tmp_path, capsys):
    raw = config_factory(model={"encoder": "resnet9000"})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert pipeline.main(["--config", str(path)]) == 2
    assert "model.encoder" in capsys.readouterr().err
    assert (
        evaluate_cli.main(
            [
                "--model_path",
                str(tmp_path / "none"),
                "--test_data_path",
                str(tmp_path),
                "--output_dir",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


@pytest.mark.slow
def test_interrupted_training_resumes_from_last_checkpoint(config_factory, tmp_path):
    import csv

    from risk_mapping.train import train_one

    raw = config_factory(training={"epochs": 1, "limit_train_batches": 1, "patience": 5})
    cfg = config_from_dict(raw)
    run_pipeline(cfg, "prepare", progress=False)
    prepare_dir, train_dir = tmp_path / "run" / "prepare", tmp_path / "run" / "train"
    train_one(cfg, prepare_dir, train_dir, seed=0, progress=False)
    run_dir = train_dir / "seed0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # simulate an interruption after epoch 0 of a 2-epoch run: no DONE marker, last.ckpt present
    (run_dir / "DONE.json").unlink()
    raw["training"]["epochs"] = 2
    train_one(config_from_dict(raw), prepare_dir, train_dir, seed=0, progress=False)
    with open(run_dir / "metrics.csv", newline="") as f:
        epochs = [row["epoch"] for row in csv.DictReader(f) if row.get("val/kappa")]
    assert epochs == ["0", "1"]  # epoch 0 kept from the first run, only epoch 1 trained again
    done = json.loads((run_dir / "DONE.json").read_text())
    assert done["epochs_run"] == 2
