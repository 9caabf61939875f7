"""The eolab command: info, samples list, the demo runner's report (merged, never replaced)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from eo_common import cli, demos
from eo_common.demos import DemoResult, read_report_sections


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
    def __init__(self, name, fn):
        self.name = name
        self._fn = fn

    def load(self):
        return self._fn


def _demo(title: str, psnr: float):
    def run(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        fig_path = out_dir / "panel.png"
        plt.imsave(fig_path, np.zeros((4, 4)))
        return DemoResult(
            title=title,
            summary_md=f"| m | v |\n|---|---|\n| psnr | {psnr} |",
            figures=[fig_path],
            metrics={"psnr": psnr, "seed": seed, "budget": budget_s},
        )

    return run


def _bad_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    raise RuntimeError("boom in the demo")


@pytest.fixture
def fake_demos(monkeypatch):
    """Replace the installed demos by test ones (at the entry-point lookup, so both the command and
    the library see them); returns the mutable {name: function} mapping."""
    registry: dict = {}

    def entry_points(group):
        assert group == demos.DEMO_GROUP
        return [_FakeEntryPoint(n, f) for n, f in registry.items()]

    monkeypatch.setattr(demos, "entry_points", entry_points)
    return registry


def test_demo_report_with_a_failing_demo(tmp_path, fake_demos, capsys):
    fake_demos.update(good=_demo("Good demo", 30.1), bad=_bad_demo)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--budget-s", "7", "--seed", "3", "--no-fetch"]
    assert cli.main(argv) == 1
    assert "1 demo(s) failed: ['bad']" in capsys.readouterr().err
    report = (out / "REPORT.md").read_text()
    assert "## Good demo" in report and "| psnr | 30.1 |" in report
    assert "![panel](good/panel.png)" in report
    assert "boom in the demo" in report and "| bad | FAILED |" in report
    # packages without a demo are named in the report
    assert "## cloud_removal" in report and "no registered demo yet" in report
    data = json.loads((out / "report.json").read_text())
    assert data["demos"]["good"]["metrics"] == {"psnr": 30.1, "seed": 3, "budget": 7.0}
    assert data["demos"]["bad"]["ok"] is False


def test_demo_only_runs_the_named_demo(tmp_path, fake_demos, capsys):
    fake_demos.update(good=_demo("Good demo", 30.1), bad=_bad_demo)
    assert cli.main(["demo", "--out", str(tmp_path), "--only", "good", "--no-fetch"]) == 0
    text = (tmp_path / "REPORT.md").read_text()
    assert "| good | ok |" in text and "| bad |" not in text
    # an unknown name: one line, exit 2, before any demo runs or anything is written
    before = (tmp_path / "REPORT.md").read_bytes()
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(tmp_path), "--only", "nope", "--no-fetch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("eolab demo: error: only: unknown demo(s) ['nope']")
    assert "Traceback" not in "\n".join(err)
    assert (tmp_path / "REPORT.md").read_bytes() == before


def test_demo_rerun_of_one_demo_merges_into_the_report(tmp_path, fake_demos):
    """Issue 10: `eolab demo --only X --out DIR` keeps the other demos' sections (REPORT.md and
    report.json) and replaces X's section only."""
    out = tmp_path / "demo"
    fake_demos.update(alpha=_demo("Alpha demo", 11.0), beta=_demo("Beta demo", 22.0))
    assert cli.main(["demo", "--out", str(out), "--no-fetch"]) == 0
    fake_demos["alpha"] = _demo("Alpha demo", 33.0)  # alpha gives a new result now
    assert cli.main(["demo", "--only", "alpha", "--out", str(out), "--no-fetch"]) == 0
    report = (out / "REPORT.md").read_text()
    assert "## Beta demo" in report and "| psnr | 22.0 |" in report  # kept
    assert "| psnr | 33.0 |" in report and "| psnr | 11.0 |" not in report  # replaced
    assert report.count("## Alpha demo") == 1
    data = json.loads((out / "report.json").read_text())
    assert data["demos"]["beta"]["metrics"]["psnr"] == 22.0
    assert data["demos"]["alpha"]["metrics"]["psnr"] == 33.0


def _interrupted(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    raise KeyboardInterrupt


def test_an_interrupted_demo_run_keeps_the_demos_that_finished(tmp_path, fake_demos, capsys):
    out = tmp_path / "demo"
    fake_demos.update(alpha=_demo("Alpha demo", 5.0), beta=_interrupted)
    assert cli.main(["demo", "--out", str(out), "--no-fetch"]) == 130
    assert "interrupted" in capsys.readouterr().err
    report = (out / "REPORT.md").read_text()
    assert "## Alpha demo" in report and "| psnr | 5.0 |" in report
    assert json.loads((out / "report.json").read_text())["demos"]["alpha"]["ok"] is True


def test_report_sections_of_the_first_release_are_kept(tmp_path, fake_demos):
    """A REPORT.md written before the section markers existed is merged into as well."""
    out = tmp_path / "demo"
    out.mkdir()
    old = textwrap.dedent(
        """\
        # eolab demo report

        | demo | status | seconds |
        |---|---|---|
        | glacier_seg | ok | 12.0 |
        | risk_mapping | FAILED | 3.0 |

        ## Glacier mapping

        *Package `glacier_seg`; ran 12 s.*

        | mcc | 0.61 |

        ## risk_mapping

        The demo failed after 3 s:

        ```
        boom
        ```
        """
    )
    (out / "REPORT.md").write_text(old)
    assert set(read_report_sections(old)) == {"glacier_seg", "risk_mapping"}
    fake_demos.update(alpha=_demo("Alpha demo", 1.0))
    assert cli.main(["demo", "--out", str(out), "--no-fetch"]) == 0
    report = (out / "REPORT.md").read_text()
    assert "## Glacier mapping" in report and "| mcc | 0.61 |" in report
    assert "## Alpha demo" in report and "boom" in report
    assert set(read_report_sections(report)) >= {"glacier_seg", "risk_mapping", "alpha"}


def test_demo_flags_keep_their_first_spellings():
    cfg = cli.demo.parse(
        ["--only", "glacier_seg", "risk_mapping", "--budget-s", "60", "--out", "x", "--no-fetch"]
    )
    assert cfg == cli.DemoConfig(
        output_dir=Path("x"), only=["glacier_seg", "risk_mapping"], budget_s=60.0, fetch=False
    )
    assert cli.demo.parse(["--only", "glacier_seg", "--seed", "2"]).only == ["glacier_seg"]
    fetch = cli.samples_fetch.parse(["--dest", "d", "--only", "dem", "s2_scene"])
    assert fetch.dest == Path("d") and fetch.only == ["dem", "s2_scene"]


def test_demo_refuses_an_unwritable_output_folder(unwritable_dir, fake_demos, capsys):
    ran = []
    fake_demos.update(alpha=lambda out_dir, **kw: ran.append(out_dir))
    assert cli.main(["demo", "--out", str(unwritable_dir / "demo"), "--no-fetch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not writable" in err[0] and not ran


def test_samples_fetch_refuses_an_unwritable_cache_folder(unwritable_dir, capsys):
    assert cli.main(["samples", "fetch", "--dest", str(unwritable_dir / "cache")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sample cache folder is not writable" in err[0]


def test_help_explains_commands(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "demo" in out and "info" in out
    assert cli.main([]) == 2  # no command: the usage, exit 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["demo", "--help"])
    assert exc.value.code == 0
    assert "--budget_s" in capsys.readouterr().out


def test_help_and_errors_import_nothing_heavy(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        from eo_common.cli import main
        for argv in (["--help"], ["demo", "--help"], ["samples", "fetch", "--help"]):
            try:
                main(argv)
            except SystemExit:
                pass
        assert main(["demo", "--seed", "-1"]) == 2
        print("HEAVY", sorted(m for m in ("torch", "lightning", "rasterio") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=True
    ).stdout
    assert "HEAVY []" in out
