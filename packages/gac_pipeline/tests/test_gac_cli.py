"""The four commands on the shared command layer: seed lines, help, config files, one-line errors."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import torch
from gac_pipeline.cli import COMMANDS, gac_infer, gac_stage1, gac_stage2, gac_stage3

OLD = Path(__file__).parent / "data" / "old_release"

# The researchers' GAC command lines, copied from shared/notes/SEED_COMMANDS.md; only the paths are
# replaced ({d}: a folder of this test), every flag is kept as typed.
SEED_LINES = {
    "gac-stage1": "--data-dir {d}/data/tiles/benv2_catalog --output-dir {d}/data/stage1_outputs "
    "--batch-size 4 --timesteps 10 --max-tiles 10",
    "gac-stage2": "--data-dir {d}/data/tiles/benv2_catalog --stage1-dir {d}/data/stage1_outputs "
    "--output-dir {d}/outputs/stage2_full --batch-size 1 --grad-accum-steps 8 --lr 1e-4 "
    "--lora-rank 8 --load-in-8bit --epochs 30 --val-every 500 --save-every 2500",
    "gac-stage3": "--data-dir {d}/data/tiles/benv2_catalog "
    "--stage2-checkpoint {d}/outputs/stage2_full/best.pt --output-dir {d}/outputs/stage3_full "
    "--batch-size 1 --grad-accum-steps 8 --lr 5e-5 --lora-rank 8 --lora-cross-attention-only "
    "--epochs 50 --early-stopping --early-stopping-patience 10",
    "gac-infer": "--data-dir {d}/data/tiles/benv2_catalog_test "
    "--stage2-checkpoint {d}/outputs/stage2_full/best.pt "
    "--stage3-checkpoint {d}/outputs/stage3_full/best.pt "
    "--output-dir {d}/outputs/inference_results --save-visualizations",
}


def _argv(prog: str, d: Path) -> list[str]:
    return shlex.split(SEED_LINES[prog].format(d=d))


def test_seed_lines_parse_to_the_intended_values(tmp_path):
    d = tmp_path
    c1 = gac_stage1.parse(_argv("gac-stage1", d))
    assert c1.data.root == d / "data/tiles/benv2_catalog"
    assert c1.run.run_dir == d / "data/stage1_outputs"
    assert (c1.data.batch_size, c1.model.timesteps, c1.data.max_tiles) == (4, 10, 10)
    assert c1.model.weight_source == "hub"  # their scripts downloaded TerraMind

    c2 = gac_stage2.parse(_argv("gac-stage2", d))
    assert c2.data.stage1_dir == d / "data/stage1_outputs"
    assert c2.run.run_dir == d / "outputs/stage2_full"
    assert (c2.data.batch_size, c2.optim.accumulate_grad_batches, c2.optim.lr) == (1, 8, 1e-4)
    assert (c2.model.lora_rank, c2.model.load_in_8bit, c2.optim.epochs) == (8, True, 30)
    assert (c2.optim.val_every_n_steps, c2.optim.save_every_n_steps) == (500, 2500)

    c3 = gac_stage3.parse(_argv("gac-stage3", d))
    assert c3.model.stage2_checkpoint == d / "outputs/stage2_full/best.pt"
    assert c3.run.run_dir == d / "outputs/stage3_full" and c3.data.stage1_dir is None
    assert (c3.optim.lr, c3.optim.epochs, c3.model.lora_rank) == (5e-5, 50, 8)
    assert c3.model.lora_cross_attention_only and c3.optim.early_stopping
    assert c3.optim.early_stop_patience == 10 and c3.optim.accumulate_grad_batches == 8

    ci = gac_infer.parse(_argv("gac-infer", d))
    assert ci.data.root == d / "data/tiles/benv2_catalog_test"
    assert ci.model.stage2_checkpoint == d / "outputs/stage2_full/best.pt"
    assert ci.model.stage3_checkpoint == d / "outputs/stage3_full/best.pt"
    assert ci.output.save_visualizations and ci.run.run_dir == d / "outputs/inference_results"


def test_seed_chain_names_the_stage2_run_folder(tmp_path):
    """Their stage 3 gets ``<stage-2 --output-dir>/best.pt``: that is the run's best checkpoint."""
    from gac_pipeline.task import resolve_stage_checkpoint

    run = tmp_path / "outputs" / "stage2_full"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
    assert resolve_stage_checkpoint(run / "best.pt") == run / "checkpoints" / "best.ckpt"
    assert resolve_stage_checkpoint(run) == run / "checkpoints" / "best.ckpt"
    assert resolve_stage_checkpoint(run / "other.pt") == run / "other.pt"


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_every_flag_has_help_and_a_default(prog, capsys):
    command = COMMANDS[prog]
    for leaf in command.leaves():
        assert len(str(leaf.meta.get("help", ""))) > 8, f"{prog} {leaf.key} has no help"
    with pytest.raises(SystemExit) as exc:
        command(["--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    options = sum(1 for leaf in command.leaves())
    assert out.count("default:") >= options  # jsonargparse prints each flag's default
    if prog in ("gac-stage1", "gac-infer"):
        assert "TerraMind's own default is 50" in out and "(type: int, default: 10)" in out


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_print_config_round_trips(prog, tmp_path, capsys):
    command = COMMANDS[prog]
    argv = _argv(prog, tmp_path)
    with pytest.raises(SystemExit):
        command([*argv, "--print_config"])
    first = capsys.readouterr().out
    (tmp_path / "a.yaml").write_text(first)
    with pytest.raises(SystemExit):
        command(["--config", str(tmp_path / "a.yaml"), "--print_config"])
    assert capsys.readouterr().out == first


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("gac-") and ": error: " in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.mark.parametrize("prog", list(COMMANDS))
def test_unwritable_output_folder_is_one_line(prog, unwritable_dir, tmp_path, capsys):
    out = unwritable_dir / "run"
    argv = [*_argv(prog, tmp_path), "--output_dir", str(out)]
    assert COMMANDS[prog](argv) == 2
    _one_line_error(capsys, str(out), "not writable")


@pytest.fixture
def corrupt_ckpt(tmp_path) -> Path:
    path = tmp_path / "truncated.ckpt"
    path.write_bytes((OLD / "stage2.ckpt").read_bytes()[:5000])
    return path


def test_corrupt_checkpoints_are_one_line(fake_benv2, stage1_dir, corrupt_ckpt, tmp_path, capsys):
    common = ["--data-dir", str(fake_benv2), "--no_progress"]
    argv = [*common, "--output-dir", str(tmp_path / "s1"), "--checkpoint", str(corrupt_ckpt)]
    assert gac_stage1([*argv, "--model_size", "tiny"]) == 2
    _one_line_error(capsys, "truncated.ckpt", "truncated or corrupt")
    argv = [*common, "--stage2-checkpoint", str(corrupt_ckpt), "--output-dir", str(tmp_path / "s3")]
    assert gac_stage3([*argv, "--stage1-dir", str(stage1_dir), "--random-init"]) == 2
    _one_line_error(capsys, "truncated.ckpt")
    argv = [*common, "--stage1-dir", str(stage1_dir), "--output-dir", str(tmp_path / "inf")]
    assert gac_infer([*argv, "--stage2-checkpoint", str(corrupt_ckpt)]) == 2
    _one_line_error(capsys, "truncated.ckpt")
    assert gac_infer([*argv, "--stage2-checkpoint", str(OLD / "stage2.ckpt"),
                      "--stage3-checkpoint", str(corrupt_ckpt)]) == 2  # fmt: skip
    _one_line_error(capsys, "truncated.ckpt")
    assert not (tmp_path / "inf").exists() and not (tmp_path / "s1").exists()


def test_stage3_checkpoint_as_stage2_is_named(fake_benv2, stage1_dir, tmp_path, capsys):
    argv = ["--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--output-dir",
            str(tmp_path / "inf"), "--stage2-checkpoint", str(OLD / "stage3.ckpt")]  # fmt: skip
    assert gac_infer(argv) == 2
    _one_line_error(capsys, "stage3.ckpt", "is a gac-stage3 checkpoint")


def test_foreign_checkpoint_is_refused_by_stage1(fake_benv2, tiny_generator, tmp_path, capsys):
    """A checkpoint of another package used to load with strict=False: exit 0, random weights."""
    from eo_common.errors import CheckpointError
    from gac_pipeline.model import load_full_state_dict, read_state_dict

    lightning_ckpt = tmp_path / "cloud_removal_best.ckpt"
    torch.save(
        {"state_dict": {"net.conv1.weight": torch.zeros(8, 15, 3, 3)},
         "hyper_parameters": {"model_name": "CrossAttention"}, "pytorch-lightning_version": "2.6.0"},
        lightning_ckpt,
    )  # fmt: skip
    argv = ["--data-dir", str(fake_benv2), "--output-dir", str(tmp_path / "s1"), "--model_size",
            "tiny", "--checkpoint", str(lightning_ckpt)]  # fmt: skip
    assert gac_stage1(argv) == 2
    _one_line_error(capsys, "cloud_removal_best.ckpt", "Lightning training checkpoint")
    assert not (tmp_path / "s1").exists()
    # a plain state dict of another network: refused by the key check, the model left untouched
    foreign = tmp_path / "unet.pt"
    torch.save({"encoder.conv1.weight": torch.zeros(64, 3, 7, 7)}, foreign)
    before = {k: v.clone() for k, v in list(tiny_generator.state_dict().items())[:3]}
    with pytest.raises(CheckpointError, match=r"unet\.pt: holds 0 of the \d+ weights"):
        load_full_state_dict(tiny_generator, read_state_dict(foreign, "x"), foreign, "x")
    for k, v in before.items():
        assert torch.equal(tiny_generator.state_dict()[k], v)


def test_pretrained_without_hub_weights_is_one_line(fake_benv2, stage1_dir, tmp_path, capsys):
    argv = ["--data-dir", str(fake_benv2), "--stage1-dir", str(stage1_dir), "--output-dir",
            str(tmp_path / "s2"), "--backbone", "prithvi_eo_tiny", "--pretrained"]  # fmt: skip
    assert gac_stage2(argv) == 2
    _one_line_error(capsys, "prithvi_eo_tiny has no published weights", "--random_init")
    assert not (tmp_path / "s2").exists()


def test_seed_line_offline_names_the_weight_sources(fake_benv2, tmp_path, capsys, monkeypatch):
    """The seed's stage-1 line names no weight source: hub weights, which offline cannot be fetched."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = [*_argv("gac-stage1", tmp_path), "--data-dir", str(fake_benv2), "--model-size", "tiny"]
    assert gac_stage1(argv) == 2
    _one_line_error(
        capsys, "terramind_v1_tiny_generate", "hub weights", "--checkpoint", "--random_init"
    )
    assert not (tmp_path / "data" / "stage1_outputs").exists()


def test_empty_catalogue_is_one_line(fake_benv2, tmp_path, capsys):
    empty = tmp_path / "catalogue.csv"
    empty.write_text("patch_id,s1_name,split,s2_dir,s1_dir\n")
    assert gac_stage1(["--catalogue", str(empty), "--output-dir", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "catalogue.csv", "no tiles")
    md = fake_benv2 / "metadata.parquet"
    assert gac_stage1(["--data-dir", str(fake_benv2), "--output-dir", str(tmp_path / "o"),
                       "--max-tiles", "2", "--split", "test", "--random-init",
                       "--catalogue", str(empty)]) == 2  # fmt: skip
    _one_line_error(capsys, "root: give exactly one of --data_dir")
    assert md.exists() and not (tmp_path / "o").exists()


def test_bad_flags_are_all_named(capsys):
    assert gac_stage2(["--lora-rank", "0", "--lr", "-1", "--backbone", "vit_huge", "--pretrained",
                       "--random-init"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    for needle in ("model.lora_rank", "optim.lr", "model.backbone"):
        assert needle in err, err
