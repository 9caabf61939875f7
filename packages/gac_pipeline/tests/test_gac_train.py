"""Stages 2 and 3 and gac-infer end to end on fake tiles: the seed chain, reruns, reproduction from
config.yaml, kills and resumes, the PEFT export, and checkpoints of the previous release."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from eo_common.runs import read_summary
from gac_pipeline.cli import gac_infer, gac_stage2, gac_stage3
from gac_pipeline.config import infer_metrics
from gac_pipeline.data import build_catalogue

OLD = Path(__file__).parent / "data" / "old_release"
TINY2 = ["--backbone", "prithvi_eo_tiny", "--random-init", "--lora-rank", "2", "--batch-size", "1",
         "--lr", "1e-3", "--log", "[csv]", "--no-progress", "--max-tiles", "2", "--threads", "1"]  # fmt: skip
TINY3 = ["--model-size", "tiny", "--random-init", "--lora-rank", "2", "--batch-size", "2",
         "--lora-cross-attention-only", "--log", "[csv]", "--no-progress", "--max-tiles", "2"]  # fmt: skip


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]


def _stage2_argv(data, stage1, out, *extra) -> list[str]:
    return ["--data-dir", str(data), "--stage1-dir", str(stage1), "--output-dir", str(out), *TINY2,
            *extra]  # fmt: skip


@pytest.fixture(scope="module")
def stage2_run(fake_benv2, stage1_dir, tmp_path_factory) -> Path:
    """A finished tiny stage-2 run with int8 frozen layers and 8-bit AdamW (the seed's --load-in-8bit)."""
    out = tmp_path_factory.mktemp("gac") / "stage2_full"
    argv = _stage2_argv(fake_benv2, stage1_dir, out, "--epochs", "2", "--load-in-8bit",
                        "--optimizer", "adamw8bit")  # fmt: skip
    assert gac_stage2(argv) == 0
    return out


@pytest.fixture(scope="module")
def stage3_run(fake_benv2, stage2_run) -> Path:
    """Stage 3 as the researchers chain it: ``--stage2-checkpoint <stage-2 run>/best.pt`` and no
    ``--stage1-dir`` (taken from the stage-2 run's config.yaml)."""
    out = stage2_run.parent / "stage3_full"
    argv = ["--data-dir", str(fake_benv2), "--stage2-checkpoint", str(stage2_run / "best.pt"),
            "--output-dir", str(out), "--epochs", "1", "--early-stopping",
            "--early-stopping-patience", "2", *TINY3]  # fmt: skip
    assert gac_stage3(argv) == 0
    return out


def test_stage2_run_folder(stage2_run):
    summary = read_summary(stage2_run)
    assert summary["status"] == "finished" and summary["command"] == "gac-stage2"
    assert summary["monitor"] == "val/psnr" and summary["epochs_run"] == 2
    for name in ("val/psnr", "val/ssim", "val/sam_deg", "val/sar_edge", "val/loss"):
        assert np.isfinite(summary["metrics"][name]), name
    # what gac-stage2 declares (eolab sweep), LPIPS only with LPIPS weights
    assert set(summary["metrics"]) == set(gac_stage2.metrics) - {"val/lpips"}
    best = Path(summary["paths"]["best_checkpoint"])
    assert best == stage2_run / "checkpoints" / "best.ckpt" and best.stat().st_size < 5 * 2**20
    state = _weights(best)  # adapters and head only, not the frozen backbone
    assert state and all(("lora_" in k) or (".head." in k) for k in state)
    assert (stage2_run / "config.yaml").is_file() and (stage2_run / "metrics.csv").is_file()


def test_rerun_into_a_finished_run_keeps_every_byte(fake_benv2, stage1_dir, stage2_run, capsys):
    before = _snapshot(stage2_run)
    argv = _stage2_argv(fake_benv2, stage1_dir, stage2_run, "--epochs", "2", "--load-in-8bit",
                        "--optimizer", "adamw8bit")  # fmt: skip
    assert gac_stage2(argv) == 2
    assert "already holds a finished run of gac-stage2" in capsys.readouterr().err
    bad = _stage2_argv(fake_benv2, stage1_dir.parent / "no_stage1", stage2_run, "--overwrite")
    assert gac_stage2(bad) == 2
    assert "no_stage1" in capsys.readouterr().err
    assert _snapshot(stage2_run) == before


def test_config_yaml_repeats_the_run(stage2_run, tmp_path):
    other = tmp_path / "again"
    assert (
        gac_stage2(["--config", str(stage2_run / "config.yaml"), "--output_dir", str(other)]) == 0
    )
    a, b = read_summary(stage2_run), read_summary(other)
    assert a["metrics"] == b["metrics"] and a["config_hash"] == b["config_hash"]
    wa = _weights(stage2_run / "checkpoints" / "best.ckpt")
    wb = _weights(other / "checkpoints" / "best.ckpt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_peft_export_loads_onto_the_terratorch_backbone(stage2_run, tmp_path):
    """The adapters leave through PEFT's save_pretrained; peft puts them back on a fresh backbone."""
    from gac_pipeline.model import RefinerConfig, build_prithvi
    from gac_pipeline.task import network_from_checkpoint, read_stage_checkpoint
    from gac_pipeline.train import export_merged
    from peft import PeftModel

    ckpt = read_stage_checkpoint(stage2_run)
    network = network_from_checkpoint(ckpt, load_in_8bit=False)  # the same adapters, float layers
    config = RefinerConfig.from_dict(ckpt["hyper_parameters"]["model_config"])
    assert (stage2_run / "peft_adapter" / "adapter_config.json").is_file()
    loaded = PeftModel.from_pretrained(build_prithvi(config), stage2_run / "peft_adapter").eval()
    x = torch.randn(2, 6, 128, 128)
    with torch.no_grad():
        ours, theirs = network.backbone(x)[-1], loaded(x)[-1]
        plain = build_prithvi(config)(x)[-1]
    torch.testing.assert_close(theirs, ours)
    assert (ours - plain).abs().max() > 1e-4  # the adapters are trained, not zero
    merged = torch.load(export_merged(stage2_run, tmp_path / "merged.pt"), weights_only=False)
    assert merged["merged_lora_layers"] == 8 and "lora" not in " ".join(merged["state_dict"])


def test_stage3_after_the_seed_chain(stage3_run, stage2_run):
    summary = read_summary(stage3_run)
    assert summary["monitor"] == "val/sar_edge" and 0 <= summary["metrics"]["val/sar_edge"] <= 1
    assert set(summary["metrics"]) == set(gac_stage3.metrics) - {"val/lpips"}
    assert summary["status"] == "finished"
    state = _weights(stage3_run / "checkpoints" / "best.ckpt")
    assert any(".attn." in k and "lora_A" in k for k in state)
    assert not any(".mlp." in k and "lora_" in k for k in state)  # cross-attention only


def test_infer_writes_every_stage_and_never_mixes_runs(fake_benv2, stage2_run, stage3_run, capsys):
    out = stage2_run.parent / "inference_results"
    argv = ["--data-dir", str(fake_benv2), "--stage2-checkpoint", str(stage2_run / "best.pt"),
            "--stage3-checkpoint", str(stage3_run), "--output-dir", str(out),
            "--save-visualizations", "--stage1.model_size", "tiny", "--stage1.random_init",
            "--stage1.timesteps", "1", "--no-progress"]  # fmt: skip
    assert gac_infer(argv) == 0  # no --stage1-dir: stage 1 runs into <run>/stage1 (the seed line)
    summary = read_summary(out)
    for name in ("test/psnr", "test/ssim", "test/sam_deg", "test/sar_edge", "test/opt_v1/psnr"):
        assert np.isfinite(summary["metrics"][name]), name
    declared = [n for n in infer_metrics("test") if not n.endswith("lpips")]  # no LPIPS weights
    assert list(summary["metrics"]) == declared and set(declared) <= set(gac_infer.metrics)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["rows"]) == ["stage 1 only", "stages 1+2", "stages 1+2+3"]
    assert read_summary(out / "stage1")["status"] == "finished"
    for record in build_catalogue(fake_benv2, "test"):
        with rasterio.open(out / "opt_v3" / f"{record.patch_id}.tif") as src:
            assert src.count == 12 and src.crs is not None
        assert (out / "panels" / f"{record.patch_id}.png").stat().st_size > 1000
    before = _snapshot(out)
    assert gac_infer(argv) == 2  # plain rerun: refused
    bad = [a if a != str(stage3_run) else str(stage3_run / "nope.ckpt") for a in argv]
    assert gac_infer([*bad, "--overwrite"]) == 2  # bad input + --overwrite: refused, kept
    assert "nope.ckpt" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_last_stage_stops_after_stage_1_or_2_on_the_same_stage1_tiles(
    fake_benv2, stage1_dir, stage2_run, stage3_run, tmp_path, capsys
):
    """gac-infer --last_stage 1 / 2 / 3 (the variants of the gac_pipeline:ablation preset): each
    scores the stages up to N on the same opt_v1 tiles, so stage 1's scores agree and the headline
    metrics are those of the last stage run; --last_stage 1 needs no stage-2 model."""
    common = ["--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--no-progress"]
    ckpts = ["--stage2-checkpoint", str(stage2_run), "--stage3-checkpoint", str(stage3_run)]
    summaries = {}
    for n, extra in ((1, []), (2, ckpts), (3, ckpts)):
        out = tmp_path / f"last{n}"
        assert gac_infer([*common, *extra, "--last_stage", str(n), "--output-dir", str(out)]) == 0
        summaries[n] = read_summary(out)
        rows = json.loads((out / "metrics.json").read_text())["rows"]
        assert list(rows) == ["stage 1 only", "stages 1+2", "stages 1+2+3"][:n]
        stages = ["opt_v1", "opt_v2", "opt_v3"][:n]
        assert sorted(p.name for p in out.iterdir() if p.name.startswith("opt_v")) == stages[1:]
        last = stages[-1]
        declared = [
            m
            for m in infer_metrics("test")
            if not m.endswith("lpips")
            and (m.count("/") == 1 or m.split("/")[1] in stages)
            and m != "test/opt_v1/seconds_per_tile"  # no generation here: stage-1 time unknown
        ]
        assert list(summaries[n]["metrics"]) == declared
        m = summaries[n]["metrics"]
        assert m["test/psnr"] == m[f"test/{last}/psnr"]
    for n in (2, 3):  # the same stage-1 tiles: stage 1 scores identical in every variant
        for k in ("psnr", "ssim", "sar_edge"):
            assert (
                summaries[n]["metrics"][f"test/opt_v1/{k}"]
                == summaries[1]["metrics"][f"test/opt_v1/{k}"]
            )
    assert (
        summaries[2]["metrics"]["test/opt_v2/psnr"] == summaries[3]["metrics"]["test/opt_v2/psnr"]
    )
    capsys.readouterr()
    assert gac_infer([*common, "--last_stage", "3", "--stage2-checkpoint", str(stage2_run),
                      "--output-dir", str(tmp_path / "bad")]) == 2  # fmt: skip
    assert "model.stage3_checkpoint: required with --last_stage 3" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_checkpoints_of_the_previous_release_still_load(fake_benv2, stage1_dir, tmp_path):
    """Made by tests/data/old_release/make_old_checkpoints.py with the code of commit bcbb749."""
    out = tmp_path / "infer_old"
    argv = ["--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--stage2-checkpoint",
            str(OLD / "stage2.ckpt"), "--stage3-checkpoint", str(OLD / "stage3.ckpt"),
            "--output-dir", str(out), "--no-progress"]  # fmt: skip
    assert gac_infer(argv) == 0
    got = json.loads((out / "metrics.json").read_text())["rows"]
    expected = json.loads((OLD / "infer_metrics.json").read_text())["rows"]
    # rel 1e-4: float32 rounding through the networks differs between CPUs by far less
    for row, values in expected.items():
        for key in ("psnr", "ssim", "sam_deg", "sar_edge"):
            assert got[row][key] == pytest.approx(values[key], rel=1e-4), (row, key)
    # the stage rows differ by far more than the tolerance, so the trained weights were loaded
    ssim = [expected[r]["ssim"] for r in ("stage 1 only", "stages 1+2", "stages 1+2+3")]
    assert min(abs(a - b) for a, b in zip(ssim, ssim[1:])) > 10 * 1e-4 * max(ssim)


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _logged(rows: list[dict[str, str]], key: str, from_epoch: int) -> list[dict[str, str]]:
    return [r for r in rows if r.get(key) and float(r["epoch"]) >= from_epoch]


def _sigkill_after_first_checkpoint(code: str, out: Path) -> None:
    """Run ``python -c code`` (a gac command writing into ``out``) and SIGKILL it as soon as its
    first ``last.ckpt`` exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]


@pytest.mark.slow
def test_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(
    fake_benv2, stage1_dir, tmp_path
):
    killed, reference = tmp_path / "killed", tmp_path / "reference"
    argv = _stage2_argv(fake_benv2, stage1_dir, killed, "--epochs", "4", "--num_workers", "2")
    code = f"import sys; from gac_pipeline.cli import gac_stage2; sys.exit(gac_stage2({argv!r}))"
    _sigkill_after_first_checkpoint(code, killed)
    assert read_summary(killed)["status"] == "running"  # killed: never finished
    assert gac_stage2([*argv, "--resume"]) == 0
    assert (
        gac_stage2(
            _stage2_argv(fake_benv2, stage1_dir, reference, "--epochs", "4", "--num_workers", "2")
        )
        == 0
    )
    a, b = read_summary(killed), read_summary(reference)
    assert a["status"] == "finished" and a["epochs_run"] == b["epochs_run"] == 4
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]
    wa = _weights(killed / "checkpoints" / "last.ckpt")
    wb = _weights(reference / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows_a, rows_b = _csv_rows(killed / "metrics.csv"), _csv_rows(reference / "metrics.csv")
    assert _logged(rows_a, "val/loss", 0) == _logged(rows_b, "val/loss", 0)  # every validation
    # the training rows of the epochs run after the kill (the killed epoch's own training row is
    # logged by Lightning after its checkpoint, so a kill in between loses it; see the README)
    assert _logged(rows_a, "train/loss", 1) == _logged(rows_b, "train/loss", 1)


@pytest.mark.slow
def test_stage3_sigkill_after_first_checkpoint_then_resume_equals_uninterrupted(
    fake_benv2, stage2_run, tmp_path
):
    """gac-stage3 killed by SIGKILL after its first checkpoint and resumed ends with the weights,
    validation rows and summary of an uninterrupted run (same seed)."""
    killed, reference = tmp_path / "killed", tmp_path / "reference"

    def argv(out: Path) -> list[str]:
        return ["--data-dir", str(fake_benv2), "--stage2-checkpoint", str(stage2_run / "best.pt"),
                "--output-dir", str(out), "--epochs", "3", "--threads", "1", *TINY3]  # fmt: skip

    code = f"import sys; from gac_pipeline.cli import gac_stage3; sys.exit(gac_stage3({argv(killed)!r}))"
    _sigkill_after_first_checkpoint(code, killed)
    assert read_summary(killed)["status"] == "running"
    assert gac_stage3([*argv(killed), "--resume"]) == 0
    assert gac_stage3(argv(reference)) == 0
    a, b = read_summary(killed), read_summary(reference)
    assert a["status"] == "finished" and a["epochs_run"] == b["epochs_run"] == 3
    assert a["metrics"] == b["metrics"] and a["best_epoch"] == b["best_epoch"]
    wa = _weights(killed / "checkpoints" / "last.ckpt")
    wb = _weights(reference / "checkpoints" / "last.ckpt")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    rows_a, rows_b = _csv_rows(killed / "metrics.csv"), _csv_rows(reference / "metrics.csv")
    assert _logged(rows_a, "val/loss", 0) == _logged(rows_b, "val/loss", 0)
