"""The commands' typed config: the researchers' settings file, --print_config round trips, the sweep
preset's keys, and one line + exit 2 for every fault a user can fix before any work starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from glacier_seg.cli import glacier_diagnose, glacier_eval, glacier_predict, glacier_train

PACKAGE = Path(__file__).resolve().parents[1]
COMMANDS = {
    "glacier-train": glacier_train,
    "glacier-eval": glacier_eval,
    "glacier-predict": glacier_predict,
    "glacier-diagnose": glacier_diagnose,
}


def _errors(capsys) -> list[str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if ": error: " in line]


def test_researchers_settings_file_parses_with_their_values(tmp_path):
    cfg = glacier_train.parse(
        ["--config", str(PACKAGE / "configs" / "researchers_v3.yaml"), "--data_root", str(tmp_path)]
    )
    assert (cfg.model.encoder_name, cfg.model.decoder_attention_type) == ("resnet34", "scse")
    assert cfg.in_channels == 7 and cfg.model.encoder_weights == "imagenet"
    loss = cfg.loss
    assert (loss.focal_weight, loss.dice_weight, loss.mcc_weight, loss.boundary_weight) == (
        0.15,
        0.15,
        0.5,
        0.2,
    )
    o = cfg.optim
    assert (o.scheduler, o.T_0, o.min_lr, o.warmup_epochs, o.lr) == (
        "cosine_restarts",
        10,
        1e-5,
        5,
        1e-4,
    )
    # 15x lake, 8x debris: drawing weight 1 + 14 [lake] + 7 [debris]
    assert (cfg.data.lake_weight, cfg.data.debris_weight) == (14.0, 7.0)
    devices = int(cfg.run.devices)
    assert cfg.data.batch_size * devices * o.accumulate_grad_batches == 32
    assert (cfg.run.strategy, cfg.run.precision) == ("ddp", "16-mixed")
    assert cfg.data.root == tmp_path


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_print_config_reads_back_unchanged(prog, tmp_path, capsys):
    command = COMMANDS[prog]
    args = ["--data_root", str(tmp_path), "--seed", "3"]
    if prog in ("glacier-eval", "glacier-predict"):
        args += ["--checkpoints", str(tmp_path / "a.ckpt")]
    with pytest.raises(SystemExit) as exc:
        command([*args, "--print_config"])
    assert exc.value.code == 0
    first = capsys.readouterr().out
    (tmp_path / "a.yaml").write_text(first)
    with pytest.raises(SystemExit):
        command(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    assert capsys.readouterr().out == first


def test_decision_tree_preset_names_real_keys_with_valid_values():
    """The researchers' decision tree (``glacier_seg:decision_tree``): every base and variant key is
    a glacier-train field and every variant parses to the values it names."""
    sweep = yaml.safe_load((PACKAGE / "src/glacier_seg/sweeps/decision_tree.yaml").read_text())
    assert sweep["command"] == "glacier-train" and sweep["objective"]["metric"] == "val/mcc"
    keys = {leaf.key for leaf in glacier_train.leaves()}
    assert set(sweep["base"]) <= keys, set(sweep["base"]) - keys
    assert set(sweep["variants"]) == {
        "baseline",
        "encoder_from_scratch",
        "no_glcm",
        "restart_period_20",
        "pure_mcc_loss",
        "batch_size_8",
    }
    for name, values in sweep["variants"].items():
        assert set(values) <= keys, (name, set(values) - keys)
        argv = ["--data_root", "."]
        for key, value in {**sweep["base"], **values}.items():
            argv += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
        cfg = glacier_train.parse(argv)
        for key, value in {**sweep["base"], **values}.items():
            group, field = key.split(".")
            assert getattr(getattr(cfg, group), field) == value, (name, key)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--decoder_channels", "[256,128,64,32,8]"], "model.decoder_channels: must be >= 16"),
        (["--decoder_channels", "[64,32,16]"], "model.decoder_channels: needs 5 widths"),
        (["--encoder_weights", "/nowhere/r34.pth"], "model.encoder_weights: no such file"),
        (["--crop_size", "50"], "data.crop_size: must be a multiple of 32"),
        (["--focal_gamma", "[1,2,3]"], "loss.focal_gamma: give 1 or 4 values"),
        (["--glcm_window", "6"], "glcm.window: must be odd"),
    ],
)
def test_bad_values_are_one_line_naming_the_field(argv, field, tmp_path, capsys):
    """--decoder_channels below 16 was a RuntimeError about a zero-size weight in the first release."""
    code = glacier_train(["--data_root", str(tmp_path), "--output_dir", str(tmp_path / "r"), *argv])
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and field in errors[0], errors
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_unwritable_output_folder_is_one_line_and_exit_2(prog, unwritable_dir, tmp_path, capsys):
    args = ["--data_root", str(tmp_path), "--output_dir", str(unwritable_dir / "run")]
    if prog in ("glacier-eval", "glacier-predict"):
        args += ["--checkpoints", str(tmp_path / "a.ckpt")]
    code = COMMANDS[prog](args)
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and str(unwritable_dir) in errors[0], errors
    assert "not writable" in errors[0] or "cannot be created" in errors[0]


@pytest.mark.parametrize("prog", ["glacier-eval", "glacier-predict"])
@pytest.mark.parametrize("damage", ["truncated", "foreign", "missing"])
def test_bad_checkpoint_is_one_line_and_exit_2(prog, damage, glacier_root, tmp_path, capsys):
    good = PACKAGE / "tests" / "data" / "release_0_1_0" / "glacier_train.ckpt"
    ckpt = tmp_path / "model.ckpt"
    if damage == "truncated":
        ckpt.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif damage == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"lr": 1.0}}, ckpt)
    out = tmp_path / "out"
    code = COMMANDS[prog](
        ["--checkpoints", str(ckpt), "--data_root", str(glacier_root), "--output_dir", str(out)]
    )
    errors = _errors(capsys)
    assert code == 2 and len(errors) == 1 and str(ckpt) in errors[0], errors
    expected = {
        "truncated": "truncated or corrupt",
        "foreign": "not a glacier-train",
        "missing": "not found",
    }
    assert expected[damage] in errors[0]
    assert not out.exists()


def test_commands_answer_without_importing_torch():
    code = (
        "import sys, glacier_seg.cli as c; c.glacier_train.parse(['--data_root', '.']); "
        "assert 'torch' not in sys.modules and 'lightning' not in sys.modules, 'heavy import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_readme_command_lines_parse(monkeypatch):
    """The README's examples are real command lines (a repeated run's --config file aside)."""
    import shlex

    monkeypatch.chdir(PACKAGE.parents[1])
    text = (PACKAGE / "README.md").read_text().replace("\\\n", " ")
    lines = [
        ln.split("#")[0].strip()
        for ln in text.splitlines()
        if ln.strip().startswith("uv run glacier-")
    ]
    parsed = 0
    for line in lines:
        prog, *argv = shlex.split(line)[2:]
        if "--config" in argv and not Path(argv[argv.index("--config") + 1]).is_file():
            continue  # a run folder's config.yaml: exists after a run
        COMMANDS[prog].parse(argv)
        parsed += 1
    assert parsed >= 6, lines
