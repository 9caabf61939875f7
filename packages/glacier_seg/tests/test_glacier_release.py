"""Runs survive: a checkpoint of the first release still loads and predicts the same masks, and a
glacier-train SIGKILLed after its first checkpoint and resumed ends exactly like an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from eo_common.raster import read_raster
from glacier_fake_data import make_organisers_train
from glacier_seg.cli import glacier_eval, glacier_predict, glacier_train
from glacier_tiny import tiny_train_args

RELEASE = Path(__file__).parent / "data" / "release_0_1_0"


def test_first_release_checkpoint_loads_in_eval_and_predict(glcm_cache, tmp_path):
    root = make_organisers_train(tmp_path / "gh", n=3, size=32, seed=0)
    ckpt = str(RELEASE / "glacier_train.ckpt")
    out = tmp_path / "pred"
    assert glacier_predict(["--checkpoint", ckpt, "--input", str(root), "--output_dir", str(out),
                            "--name_template", "Y_output_resized_{key}.tif", "--no_class_maps",
                            "--glcm_cache", str(glcm_cache), "--no_progress"]) == 0  # fmt: skip
    expected = np.load(RELEASE / "predict_masks.npz")
    assert sorted(expected) == sorted(p.name for p in (out / "masks").iterdir())
    for name in expected:
        got = read_raster(out / "masks" / name).array[0]
        # the same network, inputs and normaliser: the same masks (a few pixels may flip where two
        # classes tie to float rounding, should the texture code change its summation order)
        assert (got == expected[name]).mean() >= 0.99, name
    evaluation = tmp_path / "eval"
    assert glacier_eval(["--checkpoint", ckpt, "--data_root", str(root), "--split", "val",
                         "--output_dir", str(evaluation), "--glcm_cache", str(glcm_cache),
                         "--no_progress"]) == 0  # fmt: skip
    metrics = json.loads((evaluation / "metrics.json").read_text())
    # the first release recorded the --val_ids it was given (5) in the checkpoint: --split val scores it
    assert metrics["tile_ids"] == ["5"] and metrics["mcc"] == pytest.approx(metrics["mcc_sklearn"])


def _val_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("val/mcc")]


def _loadable(path: Path) -> bool:
    try:
        torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - still being written
        return False
    return True


@pytest.mark.slow
def test_sigkill_after_the_first_checkpoint_then_resume_equals_an_uninterrupted_run(
    glacier_root, glcm_cache, tmp_path
):
    # 10 short epochs (a fraction of a second each): the kill lands well before the end even when
    # the first checkpoint is seen late on a loaded machine
    args = ["--epochs", "10", "--no_export_smp", "--num_workers", "2"]
    straight = tmp_path / "straight"
    assert glacier_train(tiny_train_args(glacier_root, straight, glcm_cache, *args)) == 0

    killed = tmp_path / "killed"
    code = "import sys; from glacier_seg.cli import glacier_train; sys.exit(glacier_train())"
    argv = tiny_train_args(glacier_root, killed, glcm_cache, *args)
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not (last.is_file() and _loadable(last)):
        assert proc.poll() is None, "the run ended before its first checkpoint could be seen"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["status"] == "running"  # killed: never finished
    done = {int(float(r["epoch"])) for r in _val_rows(killed)}
    assert done and max(done) < 9, done

    assert glacier_train([*argv, "--resume"]) == 0
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert a["epoch"] == b["epoch"] and a["global_step"] == b["global_step"]
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert _val_rows(straight) == _val_rows(killed)
    resumed = json.loads((killed / "summary.json").read_text())
    assert resumed["status"] == "finished"
    assert resumed["metrics"] == json.loads((straight / "summary.json").read_text())["metrics"]
