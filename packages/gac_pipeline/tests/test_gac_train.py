"""Stages 2 and 3 end to end on fake tiles: small checkpoints, reload, resume, inference and ablation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from gac_pipeline.data import build_catalogue, read_tile, stage1_path
from gac_pipeline.stage1 import write_opt_v1


@pytest.fixture(scope="module")
def stage1_dir(fake_benv2, tmp_path_factory):
    """opt_v1 stand-ins (target + noise, in stage 1's file format): stage 2/3 tests need no generation."""
    out = tmp_path_factory.mktemp("stage1")
    rng = np.random.default_rng(0)
    for record in build_catalogue(fake_benv2):
        tile = read_tile(record)
        noisy = tile.s2 + rng.normal(0, 300, tile.s2.shape)
        write_opt_v1(
            stage1_path(out, record.patch_id),
            noisy,
            crs=tile.crs,
            transform=tile.transform,
            tags={},
        )
    return out


def _stage2_args(data, s1dir, out, *extra):
    return [
        "--data-dir", str(data), "--stage1-dir", str(s1dir), "--output-dir", str(out),
        "--backbone", "prithvi_eo_tiny", "--random-init", "--lora-rank", "2", "--batch-size", "2",
        "--epochs", "1", "--val-every", "1", "--save-every", "1", "--no-progress", "--lr", "1e-3", *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_stage2_stage3_and_inference(fake_benv2, stage1_dir, tmp_path):
    from gac_pipeline import stage2, stage3
    from gac_pipeline.predict import main as infer_main
    from gac_pipeline.train import export_merged, load_module

    r2 = stage2.run(
        _stage2_args(
            fake_benv2, stage1_dir, tmp_path / "s2", "--load-in-8bit", "--optim", "adamw8bit"
        )
    )
    best = r2["best_checkpoint"]
    assert (
        best is not None and best.stat().st_size < 5 * 2**20
    )  # adapters + head only, not the backbone
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    assert ckpt["state_dict"] and all(("lora_" in k) or (".head." in k) for k in ckpt["state_dict"])
    module = load_module(best)
    for key, value in ckpt["state_dict"].items():
        torch.testing.assert_close(dict(module.named_parameters())[key].detach(), value)

    # resume continues from last.ckpt instead of starting over
    again = stage2.run(_stage2_args(fake_benv2, stage1_dir, tmp_path / "s2", "--load-in-8bit", "--resume",
                                    "--epochs", "2", "--optim", "adamw8bit"))  # fmt: skip
    assert again["steps"] == 2 * r2["steps"]

    merged = export_merged(best, tmp_path / "merged.pt")
    assert "lora" not in " ".join(torch.load(merged, weights_only=False)["state_dict"])

    r3 = stage3.run([
        "--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--output-dir", str(tmp_path / "s3"),
        "--stage2-checkpoint", str(best), "--model-size", "tiny", "--random-init", "--lora-rank", "2",
        "--lora-cross-attention-only", "--batch-size", "2", "--epochs", "1", "--no-progress",
        "--early-stopping-patience", "2",
    ])  # fmt: skip
    assert r3["monitor"] == "val/sar_edge" and 0 <= r3["best_score"] <= 1

    out = tmp_path / "infer"
    code = infer_main([
        "--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--stage2-checkpoint", str(best),
        "--stage3-checkpoint", str(r3["best_checkpoint"]), "--output-dir", str(out), "--split", "test",
        "--save-visualizations", "--no-progress",
    ])  # fmt: skip
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["rows"]) == ["stage 1 only", "stages 1+2", "stages 1+2+3"]
    assert metrics["tiles"] == 2 and np.isfinite(metrics["rows"]["stages 1+2+3"]["psnr"])
    test_ids = [r.patch_id for r in build_catalogue(fake_benv2, "test")]
    for tid in test_ids:
        with rasterio.open(out / "opt_v3" / f"{tid}.tif") as src:
            assert src.count == 12 and src.crs is not None
        assert (out / "panels" / f"{tid}.png").stat().st_size > 1000


def test_cli_errors_name_the_path(tmp_path, capsys, fake_benv2):
    from gac_pipeline.stage2 import main as stage2_main
    from gac_pipeline.stage3 import main as stage3_main

    missing = tmp_path / "no_stage1"
    assert stage2_main(_stage2_args(fake_benv2, missing, tmp_path / "o")) == 2
    assert "no_stage1" in capsys.readouterr().err
    args = [
        "--stage2-checkpoint",
        str(tmp_path / "nope.ckpt"),
        "--random-init",
        "--data-dir",
        str(fake_benv2),
    ]
    assert stage3_main(args) == 2
    assert "nope.ckpt" in capsys.readouterr().err
