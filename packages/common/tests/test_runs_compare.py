"""``eolab runs compare``: the table of differing fields and metrics, deltas, CSV and curves."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from eo_common.compare import compare_runs, expand_runs, load_baseline
from eo_common.errors import InputError
from eo_common.runs import read_summary

SUPPORT = Path(__file__).parent / "sweep_support"


@pytest.fixture
def runs(tmp_path, monkeypatch):
    """Three finished toy runs that differ in model.x and model.kind (and one in its seed)."""
    monkeypatch.syspath_prepend(str(SUPPORT))
    from eolab_sweep_toys import quad

    made = []
    for name, args in (
        ("a", ["--model.x", "1.0"]),
        ("b", ["--model.x", "0.5", "--model.kind", "b"]),
        ("c", ["--model.x", "2.0", "--seed", "3"]),
    ):
        with contextlib.redirect_stdout(io.StringIO()):
            assert quad(["--output_dir", str(tmp_path / "runs"), "--name", name, *args]) == 0
        made.append(tmp_path / "runs" / name)
    return made


def test_compare_prints_the_table_with_deltas_and_writes_csv_and_curves(tmp_path, runs):
    baseline = tmp_path / "v2_metrics.json"
    baseline.write_text('{"val": {"score": -1.0}, "test/kappa": 0.4, "note": "v2"}')
    out = tmp_path / "cmp"
    path = os.environ.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-m", "eo_common.cli", "runs", "compare", str(tmp_path / "runs" / "*"),
         "--compare_baseline", str(baseline), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(SUPPORT) + (os.pathsep + path if path else "")),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    header = done.stdout.splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split("|")]
    # fields that differ, then the metrics and their deltas; nothing that is equal in every run
    assert columns == ["run", "command", "status", "model.x", "model.kind", "run.seed",
                       "val/score", "val/loss", "Δ val/score"]  # fmt: skip
    with open(out / "compare.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["run"] == "baseline: v2_metrics" and float(rows[0]["val/score"]) == -1.0
    for row, run in zip(rows[1:], runs):
        summary = read_summary(run)
        assert row["run"] == run.name
        assert float(row["val/score"]) == pytest.approx(summary["metrics"]["val/score"])
        assert float(row["Δ val/score"]) == pytest.approx(summary["metrics"]["val/score"] + 1.0)
    assert [r["model.kind"] for r in rows[1:]] == ["a", "b", "a"]
    assert (out / "compare.md").read_text().count("\n| ") == 5  # header + baseline + 3 runs
    from PIL import Image

    with Image.open(out / "curves.png") as image:  # two panels (val/score, val/loss), 4x3 in each
        assert image.size == (800, 300)


def test_baseline_forms_sweep_folders_and_bad_input(tmp_path, runs):
    label, metrics = load_baseline(str(runs[0]))
    assert label == "a" and metrics == read_summary(runs[0])["metrics"]
    columns, rows = compare_runs(runs, baseline=(label, metrics))
    assert [r["Δ val/score"] for r in rows][1] == 0.0
    summary_file = runs[1] / "summary.json"
    assert load_baseline(str(summary_file))[1] == read_summary(runs[1])["metrics"]
    sweep = tmp_path / "sweep"
    (sweep / "trials").mkdir(parents=True)
    (sweep / "sweep.yaml").write_text("name: x\n")
    for run in runs[:2]:
        shutil.copytree(run, sweep / "trials" / run.name)
    (sweep / "trials" / "mlruns").mkdir()  # not a run: left out
    assert [p.name for p in expand_runs([str(sweep), str(runs[2])])] == ["a", "b", "c"]
    with pytest.raises(InputError, match="not a run folder"):
        expand_runs([str(tmp_path)])
    with pytest.raises(InputError, match="no run folder matches"):
        expand_runs([str(tmp_path / "nothing*")])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="must be a mapping"):
        load_baseline(str(tmp_path / "bad.json"))
