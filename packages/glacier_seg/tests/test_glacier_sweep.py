"""Issue 14's "done when" on the real command: ``eolab sweep run`` of a 6-trial glacier-train sweep
with 2 worker processes, one worker SIGKILLed mid-trial, then a rerun: 6 distinct completed trials,
each trained once (the killed one resumed from its checkpoint), on the embedded journal storage and on
PostgreSQL (the ``postgres_url`` fixture of the root conftest.py).

Data: the organisers' fake GlacierHack layout of ``tests/data/glacierhack.py`` (4 tiles of 64 px), the
tiny U-Net of ``tests/data/tiny_run.py``; each trial is a few seconds of training plus the command's
start-up. (The demo's Landsat-8 tiles train for minutes per trial on CPU.)
"""

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
import yaml
from eo_common.runs import read_summary
from glacier_tiny import TINY_MODEL

pytestmark = pytest.mark.slow

EPOCHS = 3
GRID = {"loss.mcc_weight": [0.0, 0.5], "optim.lr": [1.0e-3, 3.0e-3, 1.0e-2]}  # 6 trials


def env() -> dict[str, str]:
    out = dict(os.environ, PYTHONUNBUFFERED="1")
    out.pop("EOLAB_SWEEP_TRIAL", None)
    return out


def glacier_sweep(tmp_path: Path, root: Path, cache: Path) -> Path:
    """A grid of 6 glacier-train trials on the fake tiles (tile 05 held out), 3 epochs of 2 steps."""
    path = tmp_path / "glacier_grid.yaml"
    base = {
        "data.root": str(root), "data.glcm_cache": str(cache), "data.val_ids": "05",
        "data.crop_size": 32, "data.batch_size": 4, "data.samples_per_epoch": 8,
        "data.num_workers": 0, "glcm.window": 5, "glcm.levels": 16,
        "model.encoder_name": TINY_MODEL["encoder_name"],
        "model.decoder_channels": TINY_MODEL["decoder_channels"],
        "optim.epochs": EPOCHS, "optim.T_0": 1, "optim.early_stop_patience": 0,
        "run.threads": 1, "run.log": ["csv"],
    }  # fmt: skip
    data = {
        "name": "glacier_grid",
        "command": "glacier-train",
        "base": base,
        "grid": GRID,
        "objective": {"metric": "val/mcc", "direction": "maximize"},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def open_study(out: Path, storage: str):
    from eo_common.sweep.spec import load_sweep
    from eo_common.sweep.storage import load_study, open_storage

    spec, _ = load_sweep(out / "sweep.yaml")
    return spec, load_study(open_storage(storage, out), spec)


def _victim(out: Path, storage: str, deadline: float) -> tuple[int, str]:
    """(worker pid, trial folder) of a trial mid-way (its first checkpoint written, not finished),
    once 4 trials are complete: the other worker then has little left to run alone."""
    from optuna.trial import TrialState

    study = None
    while time.time() < deadline:
        if study is None:
            try:
                _, study = open_study(out, storage)
            except Exception:  # noqa: BLE001 - the sweep has not made the study yet
                time.sleep(0.2)
                continue
        trials = study.get_trials(deepcopy=False)
        if sum(t.state == TrialState.COMPLETE for t in trials) < 4:
            time.sleep(0.5)
            continue
        for t in (t for t in trials if t.state == TrialState.RUNNING):
            dirs, worker = t.user_attrs.get("run_dirs"), t.user_attrs.get("eolab_worker")
            if not dirs or not worker:
                continue
            run = out / dirs[0]
            summary = read_summary(run) or {}
            if (run / "checkpoints" / "last.ckpt").is_file() and summary.get("status") == "running":
                return int(worker["pid"]), Path(dirs[0]).name
        time.sleep(0.1)
    raise AssertionError("no trial reached the middle of its training in time")


def _epochs(run: Path) -> list[int]:
    with open(run / "metrics.csv", newline="") as f:
        return [int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/mcc")]


def kill_one_worker_then_rerun(tmp_path: Path, root: Path, cache: Path, storage: str) -> None:
    sweep = glacier_sweep(tmp_path, root, cache)
    out = tmp_path / "sweep"
    argv = [sys.executable, "-m", "eo_common.cli", "sweep", "run", str(sweep), "--out", str(out),
            "--workers", "2", "--heartbeat_s", "1", "--grace_s", "3"]  # fmt: skip
    if storage:
        argv += ["--storage", storage]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env())
    try:
        pid, folder = _victim(out, storage, time.time() + 240)
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=300) == 1  # a worker died: the run says so
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "first.log").read_text()
    assert "ended (killed by signal 9)" in text, text
    rerun = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "6 complete, 0 pruned, 0 failed, 0 not done" in rerun.stdout, rerun.stdout

    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    _, study = open_study(out, storage)
    trials = study.get_trials(deepcopy=False)
    retired = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counted = [
        t for t in trials if t.number not in retired and not t.user_attrs.get("eolab_surplus")
    ]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    points = {json.dumps(t.params, sort_keys=True) for t in counted}
    grid = {
        json.dumps({"loss.mcc_weight": m, "optim.lr": lr}, sort_keys=True)
        for m in GRID["loss.mcc_weight"]
        for lr in GRID["optim.lr"]
    }
    assert points == grid  # six distinct trials: every grid point once
    killed = [t for t in trials if t.number in retired]
    assert len(killed) == 1 and killed[0].state == TrialState.FAIL
    assert killed[0].user_attrs["run_dirs"] == [f"trials/{folder}"]
    folders = sorted(p.name for p in (out / "trials").iterdir() if p.is_dir())
    assert len(folders) == 6  # the retry continued the killed trial's folder, no seventh run
    for t in counted:
        (run,) = t.user_attrs["run_dirs"]
        summary = read_summary(out / run)
        assert summary["status"] == "finished" and summary["command"] == "glacier-train"
        assert t.value == summary["metrics"]["val/mcc"]
        assert summary["epochs_run"] == EPOCHS and _epochs(out / run) == list(range(EPOCHS))
        cfg = yaml.safe_load((out / run / "config.yaml").read_text())
        assert cfg["loss"]["mcc_weight"] == t.params["loss.mcc_weight"]
        assert cfg["optim"]["lr"] == t.params["optim.lr"]
        # one start per trial (the worker logs each start), two for the killed one: the second
        # continued from the checkpoint of the first (Lightning says so in the trial's log)
        trial_log = (out / "logs" / f"{Path(run).name}.log").read_text()
        starts = trial_log.count("eo_common.sweep.launch glacier-train --config")
        restored = trial_log.count("Restoring states from the checkpoint path")
        if run == f"trials/{folder}":
            assert (starts, restored) == (2, 1), trial_log[-2000:]
        else:
            assert (starts, restored) == (1, 0), (run, trial_log[-2000:])


def test_glacier_sweep_two_workers_embedded_storage_survive_a_killed_worker(
    tmp_path, glacier_root, glcm_cache
):
    kill_one_worker_then_rerun(tmp_path, glacier_root, glcm_cache, "")
    assert (tmp_path / "sweep" / "study.journal").is_file()


def test_glacier_sweep_two_workers_postgres_survive_a_killed_worker(
    tmp_path, glacier_root, glcm_cache, postgres_url
):
    kill_one_worker_then_rerun(tmp_path, glacier_root, glcm_cache, postgres_url)
    assert not (tmp_path / "sweep" / "study.journal").exists()
