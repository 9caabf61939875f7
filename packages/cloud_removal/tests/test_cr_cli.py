"""The cr-* commands as declared: the researchers' command lines, the --demo preset, --help,
--print_config round trips, every bad field at once, and a read-only output folder."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from cloud_removal.cli import (
    DEMO_CONFIG,
    cr_ablate,
    cr_eval,
    cr_make_datalist,
    cr_predict,
    cr_train,
)

# shared/notes/SEED_COMMANDS.md, the two train_CR_kaggle.py lines, every flag kept, paths replaced
SEED_1 = """--model_name CrossAttention --batch_sz 8 --lr 5e-5 --max_epochs 120 --early_stop_patience 15 \
    --lr_scheduler cosine --crop_size 192 --l1_weight 0.5 --perceptual_weight 1.0 --gradient_weight 0.5 \
    --fft_weight 0.3 --contrastive_weight 0.1 --use_gradient_loss --use_fft_loss --use_contrastive_loss \
    --experiment_name glf_cr_enhanced_v4_rebalanced \
    --notes "Rebalanced loss weights + higher LR + cosine schedule + larger crops"
"""
SEED_2 = """--model_name CrossAttention --max_epochs 30 --batch_sz 6 --lr 1e-4 --weight_decay 1e-5 \
  --lr_scheduler plateau --lr_patience 5 --early_stop_patience 10 --grad_clip 1.0 --warmup_epochs 2 \
  --use_cross_attn --use_fft_loss --fft_weight 0.3 --use_gradient_loss --gradient_weight 0.2 \
  --use_contrastive_loss --contrastive_weight 0.1 --perceptual_weight 0.5 --l1_weight 1.0 \
  --use_cloud_focused_loss --cloud_weight_factor 2.5 \
  --data_list_filepath /kaggle/working/data.csv --input_data_folder /kaggle/input/image1 \
  --save_model_dir /kaggle/working/checkpoints --experiment_name glf_cr_enhanced_v3 \
  --train_from_scratch --notes "Enhanced: Spectral attention + cloud-aware weighting + focused loss"
"""
# "Also used: --load_size 256 --crop_size 128"
SEED_EXTRA = "--load_size 256 --crop_size 128"


def test_seed_command_1_parses_to_the_intended_values():
    cfg = cr_train.parse(shlex.split(SEED_1))
    assert cfg.model_name == "CrossAttention"
    assert (cfg.data.batch_size, cfg.data.crop_size) == (8, 192)
    o = cfg.optim
    assert (o.lr, o.epochs, o.early_stop_patience, o.scheduler) == (5e-5, 120, 15, "cosine")
    lo = cfg.loss
    assert (lo.l1_weight, lo.perceptual_weight, lo.gradient_weight) == (0.5, 1.0, 0.5)
    assert (lo.fft_weight, lo.contrastive_weight) == (0.3, 0.1)
    assert lo.use_gradient_loss and lo.use_fft_loss and lo.use_contrastive_loss
    assert (
        not lo.use_cloud_focused_loss and not lo.use_perceptual_loss
    )  # weight alone: term stays off
    assert cfg.run.name == "glf_cr_enhanced_v4_rebalanced"
    assert cfg.run.run_dir == Path("runs/glf_cr_enhanced_v4_rebalanced")
    assert cfg.run.notes == "Rebalanced loss weights + higher LR + cosine schedule + larger crops"
    assert cfg.data.root is None  # their script's own default path: cr-train asks for it when run


def test_seed_command_2_parses_to_the_intended_values(tmp_path):
    argv = shlex.split(
        SEED_2.replace("/kaggle/working", str(tmp_path / "w")).replace(
            "/kaggle/input", str(tmp_path / "in")
        )
    )
    cfg = cr_train.parse(argv + shlex.split(SEED_EXTRA))
    o = cfg.optim
    assert (o.epochs, o.lr, o.weight_decay, o.scheduler, o.lr_patience) == (
        30,
        1e-4,
        1e-5,
        "plateau",
        5,
    )
    assert (o.early_stop_patience, o.grad_clip, o.warmup_epochs) == (10, 1.0, 2)
    assert cfg.data.batch_size == 6 and cfg.model.use_cross_attn and cfg.train_from_scratch
    lo = cfg.loss
    assert lo.use_fft_loss and lo.use_gradient_loss and lo.use_contrastive_loss
    assert lo.use_cloud_focused_loss and lo.cloud_weight_factor == 2.5
    assert (lo.fft_weight, lo.gradient_weight, lo.contrastive_weight) == (0.3, 0.2, 0.1)
    assert (lo.perceptual_weight, lo.l1_weight) == (0.5, 1.0)
    assert cfg.data.data_list == tmp_path / "w" / "data.csv"
    assert cfg.data.root == tmp_path / "in" / "image1"
    assert cfg.run.run_dir == tmp_path / "w" / "checkpoints" / "glf_cr_enhanced_v3"
    assert cfg.run.notes.startswith("Enhanced: Spectral attention")
    assert (cfg.data.load_size, cfg.data.crop_size) == (256, 128)
    # the hparams the task receives: Adam-family optimiser, plateau with their patience and warmup
    hp = cfg.optim.hparams()
    assert (hp["lr_scheduler"], hp["lr_patience"], hp["warmup_epochs"]) == ("plateau", 5, 2)


def test_demo_is_a_preset_config_file_that_later_flags_override(tmp_path):
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    cfg = cr_train.parse(["--demo"])
    assert cfg.data.samples and cfg.data.root is None
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.data.eval_crop_size) == (120, 64, 112)
    assert cfg.model.base_width == demo["model"]["base_width"] == 32
    assert (cfg.optim.epochs, cfg.optim.scheduler, cfg.run.name) == (4, "cosine", "cr_demo")
    cfg = cr_train.parse(["--demo", "--batch_sz", "2", "--crop_size", "32"])
    assert (cfg.data.batch_size, cfg.data.crop_size, cfg.data.load_size) == (2, 32, 120)
    cfg = cr_train.parse(["--crop_size", "32", "--demo"])  # a preset is a config file at its place
    assert cfg.data.crop_size == 64
    assert cr_ablate.parse(["--demo"]).data.samples
    assert "--demo = --config" in cr_train.epilog


@pytest.mark.parametrize(
    "command, argv",
    [
        (cr_train, ["--input_data_folder", "d", "--lr", "3e-4", "--no_augment"]),
        (cr_ablate, ["--demo", "--configs", "[full,no_cross_attn]", "--seeds", "2"]),
        (cr_eval, ["--checkpoint", "c.ckpt", "--split", "val", "--out", "o"]),
        (cr_predict, ["--checkpoint", "c.ckpt", "--s2", "a.tif", "--s1", "b.tif", "--pad", "8"]),
        (cr_make_datalist, ["--root", "d", "--val_fraction", "0.2"]),
    ],
    ids=lambda c: getattr(c, "prog", None),
)
def test_print_config_round_trips_through_config(command, argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        command.parse([*argv, "--print_config"])
    assert exit_.value.code == 0
    first = capsys.readouterr().out
    (tmp_path / "a.yaml").write_text(first)
    with pytest.raises(SystemExit):
        command.parse(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    second = capsys.readouterr().out
    # paths in a config file are relative to the file: compare with them resolved
    assert command.parse(["--config", str(tmp_path / "a.yaml")]) == command.parse(
        ["--config", str(tmp_path / "a.yaml")]
    )
    assert yaml.safe_load(second).keys() == yaml.safe_load(first).keys()
    plain = command.parse(argv)
    again = command.parse(["--config", str(tmp_path / "a.yaml")])
    for key in ("optim", "loss", "model", "ablate"):
        if hasattr(plain, key):
            assert getattr(again, key) == getattr(plain, key)


@pytest.mark.parametrize("command", [cr_train, cr_ablate, cr_eval, cr_predict, cr_make_datalist])
def test_help_groups_flags_with_units_and_defaults(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        command(["--help"])
    assert exit_.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "default:" in out
    if command in (cr_train, cr_ablate):
        for group in ("data:", "model:", "loss:", "optim:", "run:"):
            assert group in out
        assert "--batch_sz" in out and "--save_model_dir" in out and "--input_data_folder" in out
        assert "(px; a multiple of the network stride)" in out


def test_every_bad_field_is_named_at_once(capsys):
    argv = ["--input_data_folder", "d", "--crop_size", "40", "--lr", "-1", "--num_heads", "5"]
    assert cr_train([*argv, "--bogus", "1"]) == 2
    err = capsys.readouterr().err
    assert "--bogus: unknown option" in err
    assert "optim.lr: must be > 0, got -1.0" in err
    assert "data.crop_size: 40 is not a multiple of the network stride 16" in err
    assert "model.num_heads: the bottleneck width 192" in err
    assert cr_predict(["--checkpoint", "c", "--s2", "a", "--s1", "b", "--out", "x.tif"]) == 2
    assert "cr-predict writes a run folder" in capsys.readouterr().err
    assert cr_train(["--no_augment"]) == 2  # the data folder is asked for when the run starts
    assert "data.root: required (--input_data_folder DIR, or --demo)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "command, extra",
    [
        (cr_train, ["--input_data_folder", "{root}"]),
        (cr_ablate, ["--input_data_folder", "{root}"]),
        (cr_eval, ["--checkpoint", "{ckpt}"]),
        (cr_predict, ["--checkpoint", "{ckpt}", "--s2", "{ckpt}", "--s1", "{ckpt}"]),
        (cr_make_datalist, ["--root", "{root}", "--out"]),
    ],
    ids=["cr-train", "cr-ablate", "cr-eval", "cr-predict", "cr-make-datalist"],
)
def test_read_only_output_folder_is_one_line_and_exit_2(
    command, extra, unwritable_dir, fake_root, tmp_path, capsys
):
    ckpt = tmp_path / "c.ckpt"
    ckpt.write_bytes(b"x")
    argv = [a.format(root=fake_root, ckpt=ckpt) for a in extra]
    target = unwritable_dir / "out"
    argv += (
        [str(target / "data.csv")] if command is cr_make_datalist else ["--output_dir", str(target)]
    )
    assert command(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0] and str(unwritable_dir) in err[0], err
    assert not target.exists()


def test_ablate_epilog_configs_example_parses():
    """The `--configs` value shown in cr-ablate's examples is accepted as typed (a list, not a,b)."""
    tokens = shlex.split(cr_ablate.epilog)
    values = [tokens[i + 1] for i, t in enumerate(tokens) if t == "--configs"]
    assert values
    for value in values:
        cfg = cr_ablate.parse(["--demo", "--configs", value])
        assert list(cfg.ablate.configs) == ["full", "no_cross_attn"]
