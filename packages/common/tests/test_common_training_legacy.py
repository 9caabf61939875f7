"""The old training API (TrainConfig, add_training_args, prepare_run_dir, resume_checkpoint).

LEGACY: ``eo_common.training.config`` and ``eo_common.training.legacy_run`` stay until every package
trains through ``fit_run``; this file goes with them. The new API is tested in
test_common_training_run.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from eo_common.training import (
    ResumeError,
    TrainConfig,
    add_training_args,
    parse_devices,
    prepare_run_dir,
    resume_checkpoint,
)

# --------------------------------------------------------------------------- flags and config
CONTRACT_FLAGS = (
    "seed max_epochs lr weight_decay batch_size num_workers accumulate_grad_batches grad_clip "
    "precision devices num_nodes strategy accelerator early_stop_patience experiment_name "
    "output_dir resume lr_scheduler warmup_epochs max_bad_steps"
).split()


def test_training_args_match_the_contract_and_the_config_fields():
    parser = argparse.ArgumentParser()
    add_training_args(parser)
    group = next(g for g in parser._action_groups if g.title == "training")
    flags = {opt for action in group._group_actions for opt in action.option_strings}
    assert flags == {f"--{name}" for name in CONTRACT_FLAGS}
    assert [f.name for f in TrainConfig.__dataclass_fields__.values()] == CONTRACT_FLAGS
    args = parser.parse_args([])
    assert (
        TrainConfig.from_args(args) == TrainConfig()
    )  # parser defaults are the dataclass defaults


def test_training_args_parse_into_config():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_root", default="x")  # a package's own flag is ignored by from_args
    add_training_args(parser)
    argv = (
        "--seed 3 --max_epochs 7 --lr 0.01 --weight_decay 0 --batch_size 2 --num_workers 0 "
        "--accumulate_grad_batches 4 --grad_clip 1.5 --precision bf16-mixed --devices 0,1 "
        "--num_nodes 2 --strategy ddp --accelerator cpu --early_stop_patience 0 "
        "--experiment_name exp --output_dir out --resume --lr_scheduler plateau --warmup_epochs 2 "
        "--max_bad_steps 5"
    ).split()
    cfg = TrainConfig.from_args(parser.parse_args(argv))
    assert cfg == TrainConfig(
        seed=3,
        max_epochs=7,
        lr=0.01,
        weight_decay=0.0,
        batch_size=2,
        num_workers=0,
        accumulate_grad_batches=4,
        grad_clip=1.5,
        precision="bf16-mixed",
        devices="0,1",
        num_nodes=2,
        strategy="ddp",
        accelerator="cpu",
        early_stop_patience=0,
        experiment_name="exp",
        output_dir=Path("out"),
        resume="last",
        lr_scheduler="plateau",
        warmup_epochs=2,
        max_bad_steps=5,
    )
    assert cfg.run_dir == Path("out/exp")
    assert parser.parse_args(["--resume", "a/b.ckpt"]).resume == "a/b.ckpt"
    assert parser.parse_args(["--grad_clip", "0"]).grad_clip is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "16"])
    assert cfg.optimizer_hparams() == {
        "lr": 0.01,
        "weight_decay": 0.0,
        "lr_scheduler": "plateau",
        "warmup_epochs": 2,
        "max_epochs": 7,
    }


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("precision", "16", "precision"),
        ("lr_scheduler", "linear", "lr_scheduler"),
        ("max_epochs", 0, "max_epochs"),
        ("experiment_name", "a/b", "experiment_name"),
        ("lr", 0.0, "lr"),
        ("devices", "two", "--devices"),
    ],
)
def test_train_config_rejects_bad_values(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_parse_devices():
    assert parse_devices("auto") == "auto"
    assert parse_devices("2") == 2
    assert parse_devices("-1") == -1
    assert parse_devices("0,1") == [0, 1]
    assert parse_devices("[1]") == 1
    with pytest.raises(ValueError, match="--devices"):
        parse_devices("two")


def test_prepare_run_dir_keeps_the_previous_config(tmp_path):
    run_dir = prepare_run_dir(tmp_path, "exp", {"lr": 1})
    first = json.loads((run_dir / "config.json").read_text())
    prepare_run_dir(tmp_path, "exp", {"lr": 2})
    backups = sorted(run_dir.glob("config.*.json"))
    assert len(backups) == 1
    assert json.loads(backups[0].read_text()) == first
    assert json.loads((run_dir / "config.json").read_text())["arguments"] == {"lr": 2}
    with pytest.raises(ValueError, match="experiment_name"):
        prepare_run_dir(tmp_path, "../escape", {})


def test_prepare_run_dir_writes_nothing_on_other_ranks(tmp_path, monkeypatch):
    from lightning.pytorch.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    run_dir = prepare_run_dir(tmp_path, "exp", {"lr": 1})
    assert run_dir.is_dir() and not (run_dir / "config.json").exists()


# --------------------------------------------------------------------------- resume
def test_resume_checkpoint_paths_and_errors(tmp_path):
    run_dir = tmp_path / "runs" / "x"
    assert resume_checkpoint(run_dir, None) is None
    assert resume_checkpoint(run_dir, False) is None
    with pytest.raises(ResumeError, match="last.ckpt"):
        resume_checkpoint(run_dir, True)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        resume_checkpoint(run_dir, str(tmp_path / "missing.ckpt"))
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in ("last", "best"):
        (run_dir / "checkpoints" / f"{name}.ckpt").write_bytes(b"x")
    assert resume_checkpoint(run_dir, True) == str(run_dir / "checkpoints/last.ckpt")
    assert resume_checkpoint(run_dir, "last") == str(run_dir / "checkpoints/last.ckpt")
    assert resume_checkpoint(run_dir, "best") == str(run_dir / "checkpoints/best.ckpt")
    other = tmp_path / "other.ckpt"
    other.write_bytes(b"x")
    assert resume_checkpoint(run_dir, str(other)) == str(other)


def test_docstring_examples_run():
    import doctest

    from eo_common.training import config

    result = doctest.testmod(
        config, extraglobs={"argparse": argparse}, optionflags=doctest.ELLIPSIS
    )
    assert result.attempted > 0 and result.failed == 0
