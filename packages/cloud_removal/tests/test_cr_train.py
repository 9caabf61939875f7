"""cr-train and cr-ablate end to end on tiny fake data: reproducible from config.yaml, finished runs
never modified, exact resume (after a real SIGKILL too), divergence stopped in one line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from cloud_removal.cli import cr_ablate, cr_train
from eo_common.samples import require_samples


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _val_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/psnr")]
    return [{k: v for k, v in r.items() if k.startswith("val/") or k == "epoch"} for r in rows]


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_config_yaml_repeats_the_run_and_a_finished_run_is_never_modified(
    fake_root, copied_root, tmp_path, tiny_flags, capsys
):
    base = ["--input_data_folder", str(fake_root), *tiny_flags, "--max_epochs", "2"]
    run1 = tmp_path / "runs" / "r1"
    assert cr_train([*base, "--output_dir", str(tmp_path / "runs"), "--name", "r1"]) == 0
    s1 = _summary(run1)
    assert s1["status"] == "finished" and s1["command"] == "cr-train"
    assert set(s1["metrics"]) == {"val/psnr", "val/ssim", "val/sam_deg", "val/mae", "val/psnr_gain"}
    assert tuple(s1["metrics"]) == cr_train.metrics  # what cr-train declares (eolab sweep)
    assert s1["best_epoch"] in (0, 1) and s1["epochs_run"] == 2
    # the run folder's config.yaml repeats the run: same metrics in another folder
    config = run1 / "config.yaml"
    assert cr_train(["--config", str(config), "--output_dir", str(tmp_path / "other")]) == 0
    run2 = tmp_path / "other" / "r1"
    assert _val_rows(run2) == _val_rows(run1)
    assert _summary(run2)["metrics"] == s1["metrics"]
    assert _summary(run2)["config_hash"] == s1["config_hash"]
    # a rerun into the finished folder: refused, plain or with bad input and --overwrite
    before = _snapshot(run1)
    capsys.readouterr()
    assert cr_train(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a finished run of cr-train" in err[0]
    next(copied_root.rglob("*_s2_cloudy_*.tif")).unlink()
    bad = ["--config", str(config), "--input_data_folder", str(copied_root), "--overwrite"]
    assert cr_train(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.csv row" in err[0] and "missing" in err[0]
    assert _snapshot(run1) == before


def _plateau_argv(root: Path, out: Path, name: str, epochs: int, tiny_flags) -> list[str]:
    return [
        "--input_data_folder", str(root), *tiny_flags, "--max_epochs", str(epochs),
        "--lr_scheduler", "plateau", "--lr_patience", "0", "--lr", "3e-3",
        "--hard_example_mining", "--progressive", "16:1,32:1",
        "--output_dir", str(out), "--name", name,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(fake_root, tmp_path_factory, tiny_flags):
    """A 3-epoch plateau run (patience 0, hard-example mining, progressive crops), never stopped."""
    out = tmp_path_factory.mktemp("uninterrupted")
    assert cr_train(_plateau_argv(fake_root, out, "a", 3, tiny_flags)) == 0
    return out / "a"


def _checkpoint_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return {
        "epoch": ckpt["epoch"],
        "global_step": ckpt["global_step"],
        "state_dict": ckpt["state_dict"],
        "optimizer": ckpt["optimizer_states"][0],
        "scheduler": ckpt["lr_schedulers"][0],
        "sample_psnr": ckpt["cr_sample_psnr"],
    }


def _assert_same_run(a: Path, b: Path) -> None:
    sa, sb = _checkpoint_state(a), _checkpoint_state(b)
    assert sa["scheduler"] == sb["scheduler"]  # last_epoch, best, num_bad_epochs, learning rates
    assert (sa["epoch"], sa["global_step"]) == (sb["epoch"], sb["global_step"])
    for k, v in sa["state_dict"].items():
        torch.testing.assert_close(sb["state_dict"][k], v, rtol=0, atol=0, msg=k)
    for k, v in sa["optimizer"]["state"].items():
        for name, t in v.items():
            torch.testing.assert_close(sb["optimizer"]["state"][k][name], t, rtol=0, atol=0)
    assert sa["sample_psnr"] == sb["sample_psnr"]
    assert _val_rows(a) == _val_rows(b)


def test_stop_and_resume_equals_an_uninterrupted_run(
    uninterrupted, fake_root, tmp_path, tiny_flags
):
    """1 epoch, then --resume to 3: weights, optimizer, hard-example scores, metrics and the plateau
    schedule equal the uninterrupted run's. (Before PlateauResume the resumed ReduceLROnPlateau was
    one step behind: last_epoch 1 instead of 2, and the first epoch's score never reached it.)"""
    assert cr_train(_plateau_argv(fake_root, tmp_path, "b", 1, tiny_flags)) == 0
    first = _checkpoint_state(tmp_path / "b")
    assert first["scheduler"]["last_epoch"] == 0  # saved before the epoch-end plateau step
    assert cr_train([*_plateau_argv(fake_root, tmp_path, "b", 3, tiny_flags), "--resume"]) == 0
    assert _checkpoint_state(uninterrupted)["scheduler"]["last_epoch"] == 2
    _assert_same_run(uninterrupted, tmp_path / "b")
    assert _summary(tmp_path / "b")["metrics"] == _summary(uninterrupted)["metrics"]


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(
    uninterrupted, fake_root, tmp_path, tiny_flags
):
    """A real cr-train process killed (SIGKILL) after its first checkpoint, then resumed."""
    argv = _plateau_argv(fake_root, tmp_path, "k", 3, tiny_flags)
    script = Path(sys.executable).parent / "cr-train"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [str(script), *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    last = tmp_path / "k" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]
    killed_at = torch.load(last, weights_only=False)["epoch"]
    assert killed_at < 2 and _summary(tmp_path / "k")["status"] == "running"
    assert cr_train([*argv, "--resume"]) == 0
    _assert_same_run(uninterrupted, tmp_path / "k")


def test_divergence_stops_in_one_line(fake_root, tmp_path, tiny_flags, capsys):
    """--lr 1e6: the confidence turns NaN; the loss lets it through (no exception inside
    binary_cross_entropy) and the NaN guard stops the run with one line, exit 2."""
    argv = ["--input_data_folder", str(fake_root), *tiny_flags, "--max_epochs", "4", "--lr", "1e6"]
    argv += ["--max_bad_steps", "2", "--output_dir", str(tmp_path), "--name", "nan"]
    assert cr_train(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NaN/inf" in err[0] and "lower --lr" in err[0], err
    assert _summary(tmp_path / "nan")["status"] == "failed"


def _trial_runs(abl: Path) -> dict[str, dict]:
    """``{<sweep key>/<trial folder>: summary}`` of every run cr-ablate's sweeps made."""
    return {
        f"{p.parent.parent.name}/{p.name}": _summary(p)
        for p in sorted((abl / "sweeps").glob("*/trials/*"))
        if (p / "summary.json").is_file()
    }


@pytest.mark.slow
def test_cr_ablate_runs_the_preset_as_a_sweep_and_reuses_runs_by_their_full_config(
    fake_root, tmp_path, tiny_flags, capsys
):
    """cr-ablate = the cloud_removal:ablation preset over its base config: one ordinary cr-train
    run per variant x seed; a rerun with the same settings trains nothing; another budget trains
    again in its own sweep instead of reusing runs of the first budget (the old manifest keyed runs
    by name_seed and mixed a 1-epoch 'full' with 2-epoch variants)."""
    from cloud_removal.config_ablate import ABLATIONS, ablation_preset

    abl = tmp_path / "abl"
    base = ["--input_data_folder", str(fake_root), *tiny_flags, "--limit_train_batches", "1"]
    base += ["--configs", "[full,no_sar_gating]", "--seeds", "2", "--ablation_dir", str(abl)]
    base += ["--sweep_workers", "2"]  # two trials side by side (one thread each)
    assert cr_ablate([*base, "--max_epochs", "1"]) == 0
    table = (abl / "ablation.md").read_text()
    assert "| full |" in table and "| no_sar_gating |" in table and "epochs=1" in table
    runs = _trial_runs(abl)
    assert len(runs) == 4  # 2 variants x 2 seeds, ordinary cr-train run folders
    assert {r["command"] for r in runs.values()} == {"cr-train"}
    assert all(r["status"] == "finished" and r["epochs_run"] == 1 for r in runs.values())
    assert sorted(r["seed"] for r in runs.values()) == [0, 0, 1, 1]
    # each run is its variant of the preset's base: only no_sar_gating's switch differs
    for path in (abl / "sweeps").glob("*/trials/*"):
        cfg = cr_train.parse(["--config", str(path / "config.yaml")])
        for key, value in ablation_preset()["base"].items():
            group, name = key.split(".")
            if key not in ABLATIONS["no_sar_gating"]:
                assert getattr(getattr(cfg, group), name) == value, (path, key)
    gating = {r["extra"]["parameters"] for r in runs.values()}
    assert len(gating) == 2  # the SAR gate has weights: the variants are different networks
    # the table is computed from those runs: mean over seeds and the paired difference
    results = json.loads((abl / "ablation.json").read_text())["results"]
    by_run = {str(Path(r["run_dir"]).name): r for v in results.values() for r in v.values()}
    assert len(by_run) == 4
    full = results["full"]
    psnr = [full[s]["psnr"] for s in ("0", "1")]
    assert all(
        r["psnr"] == pytest.approx(runs[f"{Path(r['run_dir']).parent.parent.name}/"
                                        f"{Path(r['run_dir']).name}"]["metrics"]["val/psnr"])
        for v in results.values() for r in v.values()
    )  # fmt: skip
    assert f"{sum(psnr) / 2:.3f} ± " in table
    delta = [results["no_sar_gating"][s]["psnr"] - full[s]["psnr"] for s in ("0", "1")]
    assert f"{sum(delta) / 2:+.4g}" in table  # the paired delta, with its verdict
    assert "## Paired by seed against `full`" in table
    summary = _summary(abl)
    assert summary["metrics"] == {
        "full/val_psnr": pytest.approx(sum(psnr) / 2),
        "no_sar_gating/val_psnr": pytest.approx(
            sum(results["no_sar_gating"][s]["psnr"] for s in ("0", "1")) / 2
        ),
    }
    assert set(summary["metrics"]) <= set(cr_ablate.metrics)
    first = _snapshot(abl / "sweeps")
    # the same settings again: the sweep resumes, every run is kept, nothing trains
    assert cr_ablate([*base, "--max_epochs", "1", "--resume"]) == 0
    after = _snapshot(abl / "sweeps")
    assert {k: v for k, v in after.items() if "/trials/" in k} == {
        k: v for k, v in first.items() if "/trials/" in k
    }
    # another budget: new runs (another sweep folder), the table shows only them
    assert cr_ablate([*base, "--max_epochs", "2", "--resume"]) == 0
    runs2 = _trial_runs(abl)
    assert len(runs2) == 8 and set(runs) < set(runs2)
    results = json.loads((abl / "ablation.json").read_text())["results"]
    assert {r["epochs"] for by_seed in results.values() for r in by_seed.values()} == {2}
    assert "epochs=2" in (abl / "ablation.md").read_text()
    for name in set(runs2) - set(runs):
        assert runs2[name]["epochs_run"] == 2
    capsys.readouterr()
    assert cr_ablate([*base, "--max_epochs", "2"]) == 2  # no --resume: the rerun rule
    assert "already holds a finished run of cr-ablate" in capsys.readouterr().err


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


@pytest.mark.slow
@pytest.mark.samples
def test_demo_preset_on_the_real_samples_beats_the_identity(cr_sample_root, tmp_path):
    """cr-train --demo on the real-sample dataset (a reduced build): two epochs lower the loss and
    beat the identity baseline on validation (real S1, simulated clouds)."""
    from cloud_removal.data import SEN12MSCRDataset, read_data_list

    rows = read_data_list(cr_sample_root / "data.csv")
    splits = [r.split for r in rows]
    assert splits.count(2) == 8 and splits.count(3) == 8 and splits.count(1) == 8 + 2
    ds = SEN12MSCRDataset(cr_sample_root, split="test", load_size=120, crop_size=112)
    item = ds[0]
    assert item["optical"].shape == (13, 112, 112) and float(item["cloud_mask"].mean()) > 0.05
    argv = ["--demo", "--no_samples", "--input_data_folder", str(cr_sample_root)]
    argv += [
        "--base_width",
        "8",
        "--crop_size",
        "32",
        "--eval_crop_size",
        "64",
        "--max_epochs",
        "2",
    ]
    argv += ["--lr", "3e-3", "--lr_scheduler", "none", "--no_augment", "--no_use_confidence_loss"]
    argv += ["--output_dir", str(tmp_path), "--name", "s", "--no_progress", "--log", "[csv]"]
    assert cr_train(argv) == 0
    with open(tmp_path / "s" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train_loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    val = [r for r in rows if r.get("val/psnr")]
    assert len(train_loss) == 2 and train_loss[1] < train_loss[0]
    assert float(val[-1]["val/psnr"]) > float(val[-1]["val/identity_psnr"])
