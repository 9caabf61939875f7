"""``eolab sweep run`` end to end on toy commands: pruning in real Lightning epochs, failed trials and
the report. Workers sharing one study, a SIGKILLed worker and reruns are tested on the real
glacier-train command (embedded journal and PostgreSQL): ``packages/glacier_seg/tests/test_glacier_sweep.py``."""

from __future__ import annotations

import os
import subprocess
import sys
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


def open_study(out: Path, storage: str = ""):
    from eo_common.sweep.spec import load_sweep
    from eo_common.sweep.storage import load_study, open_storage

    spec, _ = load_sweep(out / "sweep.yaml")
    return spec, load_study(open_storage(storage, out), spec)


def test_pruning_in_real_epochs_failed_trials_and_the_report(tmp_path):
    from eo_common.sweep.cli import SweepReportConfig
    from eo_common.sweep.report import write_report
    from eolab_sweep_toys import fit

    sweep = tmp_path / "fit.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "command": "eolab_sweep_toys:fit",
                "base": {"optim": {"epochs": 4}},
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
    assert epochs["good"] == set(range(4)) and epochs["nan_data"] == set()
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
