"""``eolab sweep run`` end to end: workers sharing one study, a SIGKILLed worker, reruns, pruning in
real Lightning epochs, failed trials, and the report (embedded journal storage and PostgreSQL: the
``postgres_url`` fixture of the root conftest.py)."""

from __future__ import annotations

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

SUPPORT = Path(__file__).parent / "sweep_support"
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def toys_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(SUPPORT))


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    out = dict(os.environ, PYTHONPATH=str(SUPPORT) + (os.pathsep + path if path else ""))
    out.pop("EOLAB_SWEEP_TRIAL", None)
    return out


def eolab(*args: str) -> list[str]:
    return [sys.executable, "-m", "eo_common.cli", *args]


def quad_sweep(tmp_path: Path, *, trials: int = 6, epochs: int = 5, delay: float = 0.8) -> Path:
    path = tmp_path / "quad.yaml"
    data = {
        "command": "eolab_sweep_toys:quad",
        "base": {"optim.epochs": epochs, "data.delay_s": delay},
        "space": {
            "model.x": {"type": "float", "low": -2.0, "high": 3.0},
            "model.y": {"type": "int", "low": 0, "high": 4},
            "model.kind": ["a", "b", "c"],
        },
        "objective": {"metric": "val/score", "direction": "maximize"},
        "trials": trials,
    }
    path.write_text(yaml.safe_dump(data))
    return path


def open_study(out: Path, storage: str = ""):
    from eo_common.sweep.spec import load_sweep
    from eo_common.sweep.storage import load_study, open_storage

    spec, _ = load_sweep(out / "sweep.yaml")
    return spec, load_study(open_storage(storage, out), spec)


def _victim(out: Path, storage: str, deadline: float) -> tuple[int, str]:
    """(worker pid, trial folder) of a trial that is mid-way (an epoch done, not finished)."""
    from optuna.trial import TrialState

    study = None
    while time.time() < deadline:
        if study is None:  # open the study once, as soon as the sweep has made it
            try:
                _, study = open_study(out, storage)
            except Exception:  # noqa: BLE001 - not created yet
                time.sleep(0.2)
                continue
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            dirs = t.user_attrs.get("run_dirs") or []
            worker = t.user_attrs.get("eolab_worker")
            if dirs and worker and (out / dirs[0] / "state.json").is_file():
                return int(worker["pid"]), Path(dirs[0]).name
        time.sleep(0.05)
    raise AssertionError("no trial reached the middle of its training in time")


def kill_one_worker_then_rerun(tmp_path: Path, storage: str) -> None:
    sweep = quad_sweep(tmp_path)
    out = tmp_path / "sweep"
    argv = eolab("sweep", "run", str(sweep), "--out", str(out), "--workers", "2",
                 "--heartbeat_s", "1", "--grace_s", "3")  # fmt: skip
    if storage:
        argv += ["--storage", storage]
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env())
    try:
        pid, folder = _victim(out, storage, time.time() + 120)
        os.kill(pid, signal.SIGKILL)
        assert proc.wait(timeout=240) == 1  # a worker died: the run says so
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "first.log").read_text()
    assert "ended (killed by signal 9)" in text, text
    rerun = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    spec, study = open_study(out, storage)
    trials = study.get_trials(deepcopy=False)
    retired = {n for t in trials for n in RetryHeartbeatStaleTrialCallback.retry_history(t)}
    counted = [
        t for t in trials if t.number not in retired and not t.user_attrs.get("eolab_surplus")
    ]
    assert len(counted) == 6 and all(t.state == TrialState.COMPLETE for t in counted)
    configs = {json.dumps(t.params, sort_keys=True) for t in counted}
    assert len(configs) == 6  # six distinct trials, none run twice
    killed = [t for t in trials if t.number in retired]
    assert len(killed) == 1 and killed[0].state == TrialState.FAIL
    assert killed[0].user_attrs["run_dirs"] == [f"trials/{folder}"]
    # every trial folder finished, each started once, except the killed one: resumed once, not restarted
    folders = sorted(p for p in (out / "trials").iterdir() if p.is_dir())
    assert len(folders) == 6
    from eolab_sweep_toys import quad_score

    for t in counted:
        (run,) = t.user_attrs["run_dirs"]
        starts = [
            int(line.split()[1]) for line in (out / run / "starts.log").read_text().splitlines()
        ]
        summary = read_summary(out / run)
        assert summary["status"] == "finished"
        p = t.params
        expected = quad_score(p["model.x"], p["model.y"], p["model.kind"], True, 0) - 0.5**5
        assert t.value == pytest.approx(expected) == summary["metrics"]["val/score"]
        if run == f"trials/{folder}":
            assert starts[0] == 0 and len(starts) == 2 and starts[1] >= 1, starts
        else:
            assert starts == [0], (run, starts)


def test_two_workers_embedded_storage_survive_a_killed_worker(tmp_path):
    kill_one_worker_then_rerun(tmp_path, "")
    assert (tmp_path / "sweep" / "study.journal").is_file()


def test_two_workers_postgres_survive_a_killed_worker(tmp_path, postgres_url):
    kill_one_worker_then_rerun(tmp_path, postgres_url)
    assert not (tmp_path / "sweep" / "study.journal").exists()


def test_pruning_in_real_epochs_failed_trials_and_the_report(tmp_path):
    from eo_common.sweep.cli import SweepReportConfig
    from eo_common.sweep.report import write_report
    from eolab_sweep_toys import fit

    sweep = tmp_path / "fit.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "command": "eolab_sweep_toys:fit",
                "base": {"optim": {"epochs": 6}},
                "variants": {
                    "good": {"optim.lr": 0.05},
                    "slow": {"optim.lr": 1.0e-6},
                    "nan_data": {"data.nan_inputs": True},
                },
                "objective": {"metric": "val/loss", "direction": "minimize"},
                "pruning": {"type": "median", "startup_trials": 1, "warmup_epochs": 1},
            }
        )
    )
    out = tmp_path / "sweep"
    done = subprocess.run(
        eolab("sweep", "run", str(sweep), "--out", str(out)),
        capture_output=True, text=True, env=env(), timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    spec, study = open_study(out)
    by_name = {t.params["variant"]: t for t in study.get_trials(deepcopy=False)}
    states = [by_name[n].state.name for n in ("good", "slow", "nan_data")]
    assert states == ["COMPLETE", "PRUNED", "FAIL"]
    epochs = {}
    for name, t in by_name.items():
        run = out / t.user_attrs["run_dirs"][0]
        with open(run / "metrics.csv") as f:
            import csv

            epochs[name] = {int(float(r["epoch"])) for r in csv.DictReader(f) if r.get("val/loss")}
    assert epochs["good"] == set(range(6)) and epochs["nan_data"] == set()
    assert epochs["slow"] == {0, 1}  # reported epochs 0 and 1, pruned after 1 (warmup 1)
    assert by_name["slow"].user_attrs["eolab_pruned"]["epoch"] == 1
    assert read_summary(out / by_name["slow"].user_attrs["run_dirs"][0])["status"] == "finished"
    assert "NaN" in by_name["nan_data"].user_attrs["error"]
    # the intermediate values Optuna saw are the logged validation losses of the first epochs
    assert set(by_name["slow"].intermediate_values) == {0, 1}

    result = write_report(SweepReportConfig(sweep_dir=out))
    report = Path(result["report"]).read_text()
    best = by_name["good"]
    assert result["best_trial"] == best.number
    slow = by_name["slow"]
    assert "## Ablation against `good`" in report
    assert f"| {slow.number} | pruned | slow | pruned after epoch 1 |" in report
    assert "nan_data" in report and "NaN" in report
    cfg = fit.parse(["--config", result["best_config"]])  # the command accepts best.yaml
    assert cfg.optim.lr == spec.variants[best.params["variant"]]["optim.lr"]
    assert cfg.run.output_dir == (out / "best").resolve()
    for png in ("history.png",):
        assert (out / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
