"""cr-train: flag spellings, training that lowers the loss, resume, progressive crops, hard examples."""

from __future__ import annotations

import csv
import shlex

import pytest
import torch
from cloud_removal.ablate import ABLATIONS, apply_overrides, format_table, run_ablation
from cloud_removal.train import build_parser, config_from_args, main, train
from eo_common.samples import require_samples

SEED_COMMAND = """--model_name CrossAttention --max_epochs 90 --batch_sz 8 --lr 1e-4 --weight_decay 1e-4
 --lr_scheduler plateau --lr_patience 5 --early_stop_patience 15 --grad_clip 1.0 --warmup_epochs 2
 --use_cross_attn --use_fft_loss --fft_weight 0.1 --use_gradient_loss --gradient_weight 0.1
 --use_contrastive_loss --contrastive_weight 0.05 --perceptual_weight 0.1 --l1_weight 1.0
 --use_cloud_focused_loss --cloud_weight_factor 2 --crop_size 128 --load_size 256
 --data_list_filepath /d/data.csv --input_data_folder /d --save_model_dir /runs --experiment_name v4
 --train_from_scratch --notes first"""

TINY_FLAGS = [
    "--base_width",
    "8",
    "--num_heads",
    "2",
    "--num_cross_attn_blocks",
    "1",
    "--no-multi_scale",
    "--batch_size",
    "2",
    "--num_workers",
    "0",
    "--threads",
    "1",
]


def _metrics(run_dir):
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_seed_command_parses_into_one_config():
    argv = shlex.split(SEED_COMMAND)
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.train.batch_size == 8 and cfg.train.max_epochs == 90 and cfg.train.lr == 1e-4
    assert str(cfg.train.output_dir) == "/runs" and cfg.train.experiment_name == "v4"
    assert (
        cfg.train.lr_scheduler == "plateau" and cfg.lr_patience == 5 and cfg.train.grad_clip == 1.0
    )
    assert cfg.model.use_cross_attn and cfg.train_from_scratch and cfg.notes == "first"
    assert cfg.loss.use_fft_loss and cfg.loss.fft_weight == 0.1 and cfg.loss.use_cloud_focused_loss
    assert cfg.loss.cloud_weight_factor == 2.0 and cfg.crop_size == 128 and cfg.load_size == 256
    assert str(cfg.data_list_filepath) == "/d/data.csv"
    # both spellings of the batch size and the boolean forms work
    ns = build_parser().parse_args(
        ["--batch_size", "3", "--use_cross_attn", "false", "--no-multi_scale"]
    )
    assert ns.batch_size == 3 and ns.use_cross_attn is False and ns.multi_scale is False


def test_missing_data_folder_exits_2(tmp_path, capsys):
    assert main(["--input_data_folder", str(tmp_path / "nope")]) == 2
    assert "nope: --input_data_folder does not exist" in capsys.readouterr().err
    assert main(["--input_data_folder", str(tmp_path), "--crop_size", "40"]) == 2
    assert "not divisible by the network stride 16" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_progressive_and_hard_example_mining(fake_root, tmp_path):
    common = [
        "--input_data_folder",
        str(fake_root),
        "--load_size",
        "48",
        "--crop_size",
        "32",
        "--output_dir",
        str(tmp_path),
        "--experiment_name",
        "r",
        "--lr_scheduler",
        "none",
        "--hard_example_mining",
        "--progressive",
        "16:1,32:1",
        *TINY_FLAGS,
    ]
    argv = [*common, "--max_epochs", "1"]
    first = train(
        config_from_args(build_parser().parse_args(argv), argv), enable_progress_bar=False
    )
    assert first["epochs_run"] == 1
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=False)
    scored = ckpt["cr_sample_psnr"]  # training PSNR per tile (the sampler draws with replacement)
    assert ckpt["epoch"] == 0 and 1 <= len(scored) <= 4 and set(scored) <= {0, 1, 2, 3}
    argv = [*common, "--max_epochs", "2", "--resume"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    second = train(cfg, enable_progress_bar=False)
    assert second["epochs_run"] == 2
    rows = _metrics(tmp_path / "r")
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("val/psnr")})
    assert epochs == [0, 1]  # epoch 0 kept from the first run, epoch 1 added by the resumed one
    assert (tmp_path / "r" / "checkpoints" / "best.ckpt").is_file()
    with pytest.raises(FileNotFoundError):  # --resume without a checkpoint is a clear error
        argv = [*common, "--experiment_name", "other", "--resume"]
        train(config_from_args(build_parser().parse_args(argv), argv), enable_progress_bar=False)


@pytest.mark.slow
@pytest.mark.samples
def test_two_epochs_on_the_real_sample_lower_the_loss(cr_sample_root, tmp_path):
    argv = [
        "--input_data_folder",
        str(cr_sample_root),
        "--load_size",
        "120",
        "--crop_size",
        "32",
        "--eval_crop_size",
        "64",
        "--max_epochs",
        "2",
        "--lr",
        "3e-3",
        "--lr_scheduler",
        "none",
        "--output_dir",
        str(tmp_path),
        "--experiment_name",
        "s",
        "--no-augment",
        "--use_confidence_loss",
        "false",
        *TINY_FLAGS,
    ]
    summary = train(
        config_from_args(build_parser().parse_args(argv), argv), enable_progress_bar=False
    )
    rows = _metrics(tmp_path / "s")
    train_loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val = [r for r in rows if r.get("val/psnr")]
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0]
    assert float(val[-1]["val/loss"]) < float(val[0]["val/loss"])
    # the run starts at (almost) the identity, and it already improves on it
    assert float(val[-1]["val/psnr"]) > float(val[-1]["val/identity_psnr"])
    assert summary["best_val_psnr"] == pytest.approx(
        max(float(r["val/psnr"]) for r in val), abs=1e-4
    )


@pytest.fixture(scope="session")
def cr_sample_root(tmp_path_factory):
    require_samples("benv2_mock", "s2_scene")
    from cloud_removal.samples import build_sample_dataset

    return build_sample_dataset(
        tmp_path_factory.mktemp("cr_samples") / "ds",
        train_draws=1,
        scene_tiles=2,
        predict_size=0,
        progress=False,
    )


@pytest.mark.samples
def test_sample_dataset_layout_and_reader(cr_sample_root):
    from cloud_removal.data import SEN12MSCRDataset, read_data_list

    rows = read_data_list(cr_sample_root / "data.csv")
    splits = [r.split for r in rows]
    assert splits.count(2) == 8 and splits.count(3) == 8 and splits.count(1) == 8 + 2
    ds = SEN12MSCRDataset(cr_sample_root, split="test", load_size=120, crop_size=112)
    item = ds[0]
    assert item["optical"].shape == (13, 112, 112) and item["sar"].shape == (2, 112, 112)
    assert float(item["cloud_mask"].mean()) > 0.05  # simulated clouds are there
    assert 0 < float(item["sar"].mean()) < 1  # real S1 in dB mapped into [0, 1]
    scene_rows = [r for r in rows if r.s1_folder.startswith("ROIs1003_scene")]
    assert len(scene_rows) == 2 and all(
        r.split == 1 for r in scene_rows
    )  # simulated S1: train only


def test_ablation_table_and_overrides():
    res = {
        "full": {
            0: {"psnr": 20.0, "ssim": 0.80, "parameters": 6_000_000},
            1: {"psnr": 22.0, "ssim": 0.82, "parameters": 6_000_000},
        },
        "no_cross_attn": {
            0: {"psnr": 19.0, "ssim": 0.79, "parameters": 5_400_000},
            1: {"psnr": 20.0, "ssim": 0.80, "parameters": 5_400_000},
        },
    }
    table = format_table(res, ["full", "no_cross_attn"])
    assert "| full | 6.00 M | 21.000 ± 1.414 | — | 0.810 ± 0.014 | — | 2 |" in table
    # paired deltas: -1 and -2 dB -> mean -1.5, sd 0.707
    assert (
        "| no_cross_attn | 5.40 M | 19.500 ± 0.707 | -1.500 ± 0.707 | 0.795 ± 0.007 | -0.015 ± 0.007 | 2 |"
        in table
    )
    argv = ["--input_data_folder", "/d"]
    base = config_from_args(build_parser().parse_args(argv), argv)
    cfg = apply_overrides(base, ABLATIONS["no_groupnorm"])
    assert cfg.model.norm == "none" and base.model.norm == "group"
    with pytest.raises(ValueError, match="unknown fields"):
        apply_overrides(base, {"bogus": 1})


@pytest.mark.slow
def test_run_ablation_is_resumable(fake_root, tmp_path):
    argv = [
        "--input_data_folder",
        str(fake_root),
        "--load_size",
        "48",
        "--crop_size",
        "16",
        "--eval_crop_size",
        "32",
        "--max_epochs",
        "1",
        "--limit_train_batches",
        "1",
        *TINY_FLAGS,
    ]
    base = config_from_args(build_parser().parse_args(argv), argv)
    out = run_ablation(base, ["full", "no_sar_gating"], [0], tmp_path)
    md = (tmp_path / "ablation.md").read_text()
    assert "| full |" in md and "| no_sar_gating |" in md
    assert set(out["results"]) == {"full", "no_sar_gating"}
    mtime = (tmp_path / "manifest.jsonl").stat().st_mtime_ns
    run_ablation(base, ["full", "no_sar_gating"], [0], tmp_path)  # everything done: nothing re-run
    assert (tmp_path / "manifest.jsonl").stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="unknown ablation configuration"):
        run_ablation(base, ["nope"], [0], tmp_path)


def test_demo_flag_fills_only_unset_flags(fake_root):
    argv = ["--demo", "--input_data_folder", str(fake_root), "--batch_sz", "2", "--crop_size", "32"]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert cfg.demo and cfg.train.batch_size == 2 and cfg.crop_size == 32  # given flags win
    assert cfg.load_size == 120 and cfg.model.base_width == 32 and cfg.threads == 1  # demo defaults
    assert cfg.input_data_folder == fake_root
