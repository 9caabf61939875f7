"""The eolab command: info, samples list, and the demo runner's report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eo_common import cli
from eo_common.demos import DemoResult


def test_info_lists_versions_and_packages(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for needle in ("torch", "CUDA available", "rasterio", "GDAL", "eo-common", "sample data"):
        assert needle in out


def test_samples_list(capsys):
    assert cli.main(["samples", "list"]) == 0
    out = capsys.readouterr().out
    assert "benv2_mock" in out and "configilm==0.7.1" in out


class _FakeEntryPoint:
    def __init__(self, fn):
        self._fn = fn

    def load(self):
        return self._fn


def _good_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    fig_path = out_dir / "panel.png"
    plt.imsave(fig_path, np.zeros((4, 4)))
    return DemoResult(
        title="Good demo",
        summary_md="| m | v |\n|---|---|\n| psnr | 30.1 |",
        figures=[fig_path],
        metrics={"psnr": 30.1, "seed": seed, "budget": budget_s},
    )


def _bad_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    raise RuntimeError("boom in the demo")


def test_demo_report_with_a_failing_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(
        cli,
        "discover_demos",
        lambda: {"good": _FakeEntryPoint(_good_demo), "bad": _FakeEntryPoint(_bad_demo)},
    )
    cfg = cli.DemoConfig(out=tmp_path / "demo", budget_s=7, seed=3, fetch=False)
    with pytest.raises(SystemExit, match="1 demo\\(s\\) failed: \\['bad'\\]"):
        cli.run_demos(cfg)
    report = (tmp_path / "demo" / "REPORT.md").read_text()
    assert "## Good demo" in report and "| psnr | 30.1 |" in report
    assert "![panel](good/panel.png)" in report
    assert "boom in the demo" in report and "| bad | FAILED |" in report
    # packages without a demo are named in the report
    assert "## cloud_removal" in report and "no registered demo yet" in report


def test_demo_only_runs_the_named_demo(tmp_path, monkeypatch):
    monkeypatch.setattr(
        cli,
        "discover_demos",
        lambda: {"good": _FakeEntryPoint(_good_demo), "bad": _FakeEntryPoint(_bad_demo)},
    )
    report = cli.run_demos(cli.DemoConfig(out=tmp_path, only=["good"], fetch=False))
    text = report.read_text()
    assert "| good | ok |" in text and "bad" not in text
    with pytest.raises(SystemExit, match="unknown demo"):
        cli.run_demos(cli.DemoConfig(out=tmp_path, only=["nope"], fetch=False))


def test_help_explains_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "samples" in out and "demo" in out and "info" in out
