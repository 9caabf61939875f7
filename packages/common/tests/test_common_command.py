"""The command layer: flags from typed config, config files, validation, errors, the rerun rule."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
import yaml
from eo_common.argv import normalize_argv
from eo_common.command import Command, CommandGroup
from eo_common.config import DataConfig, OptimConfig, RunConfig, config_problems, opt
from eo_common.errors import ConfigError, RunFolderError, format_user_error
from eo_common.runs import RunFolder, config_hash, read_summary, run_status


@dataclass
class ToyData(DataConfig):
    """data: a toy data set."""

    crop_size: int = opt(128, help="training crop side (px)", min=16)
    stack: list[Path] = opt(help="rasters to stack", factory=list)


@dataclass
class ToyLoss:
    """loss: loss terms."""

    use_fft_loss: bool = opt(False, help="FFT term")
    fft_weight: float = opt(0.1, help="FFT term weight", min=0)


@dataclass
class ToyConfig:
    data: ToyData = field(default_factory=ToyData)
    loss: ToyLoss = field(default_factory=ToyLoss)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    model_name: Literal["CrossAttention", "Plain"] = opt("CrossAttention", help="model")


CALLS: list[ToyConfig] = []


def toy_work(cfg: ToyConfig) -> dict:
    CALLS.append(cfg)
    folder = RunFolder.plan(cfg, "toy")
    if cfg.data.root is not None and not Path(cfg.data.root).exists():
        raise FileNotFoundError(2, "No such file or directory", str(cfg.data.root))
    folder.open()
    (folder.path / "result.txt").write_text(f"lr={cfg.optim.lr}")
    return folder.finish(metrics={"val/score": cfg.optim.lr})


def make_toy() -> Command:
    return Command(
        "toy",
        ToyConfig,
        f"{__name__}:toy_work",
        description="A toy command.",
        aliases={"--batch_sz": "data.batch_size", "--save_model_dir": "run.output_dir"},
        defaults={"run.output_dir": Path("runs/toy"), "optim.lr": 0.01},
    )


def test_flags_aliases_hyphens_and_booleans():
    cfg = make_toy().parse(
        [
            "--batch_sz",
            "4",
            "--use-fft-loss",
            "--lr",
            "3e-4",
            "--save_model_dir",
            "out",
            "--experiment_name",
            "a",
            "--no-progress",
            "--data.crop_size=64",
        ]
    )
    assert cfg.data.batch_size == 4 and cfg.loss.use_fft_loss is True
    assert cfg.optim.lr == 3e-4 and cfg.data.crop_size == 64
    assert cfg.run.run_dir == Path("out/a") and cfg.run.progress is False
    assert make_toy().parse(["--use_fft_loss", "false"]).loss.use_fft_loss is False
    # command defaults replace the dataclass defaults
    cfg = make_toy().parse([])
    assert cfg.optim.lr == 0.01 and cfg.run.output_dir == Path("runs/toy")


def test_normalize_argv_touches_option_names_only():
    assert normalize_argv(["--a-b", "x-y", "--", "--c-d"], set()) == ["--a_b", "x-y", "--", "--c-d"]
    assert normalize_argv(["--no-resume"], {"--resume"}) == ["--resume=false"]


def test_print_config_round_trips(tmp_path, capsys):
    toy = make_toy()
    with pytest.raises(SystemExit) as stop:
        toy.parse(["--lr", "0.5", "--stack", "[a.tif, b.tif]", "--print_config"])
    assert stop.value.code == 0
    first = capsys.readouterr().out
    (tmp_path / "a.yaml").write_text(first)
    with pytest.raises(SystemExit):
        toy.parse(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    assert capsys.readouterr().out == first
    assert yaml.safe_load(first)["optim"]["lr"] == 0.5


def test_config_file_then_flags_override_and_paths_are_relative_to_the_file(tmp_path):
    sub = tmp_path / "exp"
    sub.mkdir()
    (sub / "run.yaml").write_text(
        "data:\n  root: data\n  stack: [a.tif, /abs/b.tif]\noptim:\n  lr: 0.2\n  epochs: 7\n"
    )
    cfg = make_toy().parse(
        ["--config", str(sub / "run.yaml"), "--epochs", "3", "--stack", "[c.tif]"]
    )
    assert cfg.optim.lr == 0.2 and cfg.optim.epochs == 3  # the flag after the file wins
    assert cfg.data.root == sub / "data"  # relative to the config file's folder
    assert cfg.data.stack == [Path("c.tif")]  # given as a flag: relative to the working folder
    cfg = make_toy().parse(["--config", str(sub / "run.yaml")])
    assert cfg.data.stack == [sub / "a.tif", Path("/abs/b.tif")]


def test_every_bad_field_is_named_at_once(tmp_path):
    toy = make_toy()
    with pytest.raises(ConfigError) as err:
        toy.parse(["--lr", "x", "--epochs", "0", "--bogus", "3", "--fft_weight", "-1"])
    problems = err.value.problems
    assert any(p.startswith("optim.lr: expected float") for p in problems)
    assert any(p.startswith("--bogus: unknown option") for p in problems)
    assert "loss.fft_weight: must be >= 0, got -1.0" in problems
    assert "optim.epochs: must be >= 1, got 0" in problems
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: abc\n  epochz: 3\ndata:\n  crop_size: 8\n")
    with pytest.raises(ConfigError) as err:
        toy.parse(["--config", str(bad)])
    problems = err.value.problems
    assert len(problems) == 3
    assert any(
        "optim.epochz: unknown key" in p and "did you mean optim.epochs" in p for p in problems
    )
    assert "data.crop_size: must be >= 16, got 8" in problems


def test_config_problems_of_shared_groups():
    assert config_problems(RunConfig(name="a/b", resume=True, overwrite=True), "run.") == [
        "run.name: must be a plain folder name, got 'a/b'",
        "run.resume: --resume and --overwrite exclude each other",
    ]
    assert config_problems(RunConfig(precision="8"), "run.")[0].startswith("run.precision: must be")
    assert config_problems(OptimConfig()) == []


def test_command_exit_codes_and_one_line_errors(tmp_path, capsys):
    toy = make_toy()
    assert toy(["--epochs", "0", "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "toy: error: optim.epochs: must be >= 1, got 0" in err and "Traceback" not in err
    # a user fault raised by the work: one line, exit 2, the file named
    assert toy(["--data_root", str(tmp_path / "missing"), "--output_dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "missing") in err[0]


def test_rerun_rule_refuse_resume_overwrite(tmp_path, capsys):
    toy = make_toy()
    out = ["--output_dir", str(tmp_path / "runs"), "--name", "a"]
    assert toy(out + ["--lr", "0.1"]) == 0
    run = tmp_path / "runs" / "a"
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert read_summary(run)["status"] == "finished"
    capsys.readouterr()
    # a plain rerun is refused and touches nothing
    assert toy(out + ["--lr", "0.1"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    # --resume with other settings is refused and names the field
    assert toy(out + ["--lr", "0.2", "--resume"]) == 2
    assert "optim.lr (0.1 -> 0.2)" in capsys.readouterr().err
    # --resume with more epochs (a resumable field) continues
    assert toy(out + ["--lr", "0.1", "--resume", "--epochs", "40"]) == 0
    # --overwrite with a failing input check leaves the old run untouched
    bad = out + ["--overwrite", "--data_root", str(tmp_path / "nope")]
    assert toy(bad) == 2
    assert (run / "result.txt").read_text() == "lr=0.1"
    # --overwrite with good input replaces it
    assert toy(out + ["--overwrite", "--lr", "0.3"]) == 0
    assert (run / "result.txt").read_text() == "lr=0.3"
    assert not list(tmp_path.glob("runs/.a.replaced-*"))


def test_run_folder_checks_writability_before_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = make_toy().parse(["--output_dir", str(blocker / "runs")])
    with pytest.raises(RunFolderError, match="not a folder"):
        RunFolder.plan(cfg, "toy")


def test_unwritable_output_folder(unwritable_dir):
    cfg = make_toy().parse(["--output_dir", str(unwritable_dir / "runs")])
    with pytest.raises(RunFolderError, match="not writable"):
        RunFolder.plan(cfg, "toy")


def test_config_hash_ignores_where_a_run_executes():
    a = make_toy().parse(["--output_dir", "x", "--num_workers", "3", "--lr", "0.1"])
    b = make_toy().parse(["--output_dir", "y", "--num_workers", "0", "--lr", "0.1"])
    c = make_toy().parse(["--lr", "0.2"])
    assert config_hash(a) == config_hash(b) != config_hash(c)


def test_summary_and_config_yaml_reproduce_the_run(tmp_path):
    toy = make_toy()
    assert toy(["--output_dir", str(tmp_path / "r1"), "--lr", "0.25", "--seed", "3"]) == 0
    summary = read_summary(tmp_path / "r1")
    for key in ("command", "git_commit", "config_hash", "seed", "started", "ended", "metrics"):
        assert key in summary
    assert summary["seed"] == 3 and summary["metrics"] == {"val/score": 0.25}
    # the saved config repeats the run elsewhere
    assert (
        toy(
            ["--config", str(tmp_path / "r1" / "config.yaml"), "--output_dir", str(tmp_path / "r2")]
        )
        == 0
    )
    again = read_summary(tmp_path / "r2")
    assert again["config_hash"] == summary["config_hash"] and again["metrics"] == summary["metrics"]
    assert run_status(tmp_path / "r3") == "absent"


def test_outputs_respect_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        assert make_toy()(["--output_dir", str(tmp_path / "r")]) == 0
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "r" / "summary.json").stat().st_mode)
    assert mode == 0o644


def test_worker_tracebacks_become_the_original_message():
    text = textwrap.dedent(
        """\
        Caught FileNotFoundError in DataLoader worker process 0.
        Original Traceback (most recent call last):
          File "x.py", line 1, in f
        FileNotFoundError: data.csv row 3: s1/a.tif not found
        """
    )
    line = format_user_error("cr-train", FileNotFoundError(text))
    assert line == "cr-train: error: data.csv row 3: s1/a.tif not found"


def test_command_group_dispatches(capsys):
    group = CommandGroup("eolab", "eolab tools", {"toy": (make_toy(), "a toy")})
    assert group(["--help"]) == 0 and "toy" in capsys.readouterr().out
    assert group(["tyo"]) == 2 and "did you mean toy" in capsys.readouterr().err


def test_help_and_config_errors_import_nothing_heavy(tmp_path):
    """--help and a config error are answered before torch (or Lightning) is imported."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_common_command import make_toy
        toy = make_toy()
        try:
            toy(["--help"])
        except SystemExit:
            pass
        toy(["--epochs", "0"])
        print("HEAVY", sorted(m for m in ("torch", "lightning", "rasterio") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    assert "HEAVY []" in out


def test_summary_json_is_valid_json_while_running(tmp_path):
    cfg = make_toy().parse(["--output_dir", str(tmp_path / "r")])
    folder = RunFolder.plan(cfg, "toy")
    folder.open()
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "running"
    assert run_status(tmp_path / "r") == "running"


@dataclass
class UrlConfig:
    run: RunConfig = field(default_factory=RunConfig)
    scene: str = opt("", help="raster: a file, a GDAL virtual path or a URL", path=True)


def test_str_path_fields_keep_urls_and_resolve_relative_paths(tmp_path):
    cmd = Command("urls", UrlConfig, f"{__name__}:toy_work", description="urls")
    url = "/vsicurl/https://example.org/cog.tif"
    assert cmd.parse(["--scene", url]).scene == url
    assert cmd.parse(["--scene", "s3://bucket/a.tif"]).scene == "s3://bucket/a.tif"
    (tmp_path / "c.yaml").write_text("scene: data/a.tif\n")
    assert cmd.parse(["--config", str(tmp_path / "c.yaml")]).scene == str(tmp_path / "data/a.tif")


def test_list_options_take_space_separated_values():
    toy = make_toy()
    assert toy.parse(["--stack", "a.tif", "b.tif", "--lr", "0.1"]).data.stack == [
        Path("a.tif"),
        Path("b.tif"),
    ]
    assert toy.parse(["--stack", "[a.tif, b.tif]"]).data.stack == [Path("a.tif"), Path("b.tif")]
    assert toy.parse(["--data.stack=c.tif"]).data.stack == [Path("c.tif")]
