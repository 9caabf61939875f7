"""The optional experiment loggers chosen by ``run.log``: MLflow (local file store) and W&B (offline).

MLflow is in the dev dependencies (``eo-common[mlflow]``), so CI runs the real logger; W&B is an
extra that CI does not install: where it is installed its offline run is checked, elsewhere the
one-line error that names the extra.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import time
from pathlib import Path

import pytest

SUPPORT = Path(__file__).parent / "sweep_support"
HAVE_WANDB = importlib.util.find_spec("wandb") is not None


def _val_losses(run: Path) -> list[tuple[int, float]]:
    with open(run / "metrics.csv", newline="") as f:
        return [
            (int(r["step"]), float(r["val/loss"])) for r in csv.DictReader(f) if r.get("val/loss")
        ]


@pytest.mark.slow
def test_mlflow_file_store_and_wandb_offline_get_the_logged_metrics(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(SUPPORT))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    from eolab_sweep_toys import fit

    loggers = "[csv, mlflow, wandb]" if HAVE_WANDB else "[csv, mlflow]"
    argv = [
        "--output_dir",
        str(tmp_path / "runs"),
        "--name",
        "m",
        "--epochs",
        "2",
        "--log",
        loggers,
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        assert fit(argv) == 0
    run = tmp_path / "runs" / "m"
    expected = _val_losses(run)
    assert len(expected) == 2

    from mlflow.tracking import MlflowClient

    store = tmp_path / "runs" / "mlruns"  # shared by the runs of the output folder
    client = MlflowClient(tracking_uri=store.as_uri())
    experiment = client.get_experiment_by_name("toy-fit")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == "m" and found.info.status == "FINISHED"
    history = client.get_metric_history(found.info.run_id, "val/loss")
    got = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [v for _, v in got] == pytest.approx([v for _, v in expected])
    assert float(found.data.params["lr"]) == 1e-3

    if HAVE_WANDB:
        import wandb

        wandb.finish()  # a command's process ends the run at exit; this test process goes on
        (offline,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
        deadline = time.time() + 120  # wandb's service process writes the log after finish()
        while b"val/loss" not in offline.read_bytes() and time.time() < deadline:
            time.sleep(0.5)
        data = offline.read_bytes()
        assert b"val/loss" in data and b"train/loss" in data


@pytest.mark.skipif(
    HAVE_WANDB, reason="wandb is installed here: the offline run is checked instead"
)
def test_wandb_without_the_extra_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(SUPPORT))
    from eolab_sweep_toys import fit

    rc = fit(["--output_dir", str(tmp_path / "w"), "--epochs", "1", "--log", "[csv, wandb]"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("toy-fit: error: run.log: wandb needs the wandb package")
    assert "uv sync --extra wandb" in err[-1]
