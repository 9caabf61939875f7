"""The ``eolab sweep`` and ``eolab runs`` sub-commands, declared on the command layer (no torch here).

Examples::

    eolab sweep run sweep.yaml                          # one worker, storage <sweep>/study.journal
    eolab sweep run sweep.yaml --workers 2              # two worker processes on this machine
    eolab sweep run sweep.yaml --gpus 0,1,2,3           # one worker per GPU
    eolab sweep run sweep.yaml --storage postgresql://eolab@db:5432/sweeps   # once per node
    eolab sweep run glacier_seg:ablation --set data.root=/data/glacierhack
    eolab sweep report runs/sweeps/glacier_lr           # REPORT.md, plots, best.yaml
    eolab sweep presets                                 # the sweep files shipped in the packages
    eolab runs compare runs/a runs/b 'runs/sweeps/x/trials/*' --baseline v2_metrics.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..command import Command, CommandGroup
from ..config import opt

__all__ = ["SWEEP", "RUNS", "GROUPS", "SweepRunConfig", "SweepReportConfig", "RunsCompareConfig"]


@dataclass
class SweepRunConfig:
    """Options of ``eolab sweep run``."""

    sweep: str = opt(
        None,
        help="the sweep file (YAML), or a preset PACKAGE:NAME ('eolab sweep presets')",
        positional=True,
        required=True,
    )
    out: Path | None = opt(
        None, help="the sweep folder (default: the file's output_dir, else runs/sweeps/<name>)"
    )
    storage: str = opt(
        "",
        help="Optuna storage shared by workers on several machines: postgresql://user@host:port/db, "
        "mysql://..., sqlite:///file.db or a .journal file (default: <sweep>/study.journal)",
    )
    workers: int = opt(1, help="worker processes on this machine (with --gpus: per GPU)", min=1)
    gpus: str = opt("", help="GPU ids, e.g. 0,1,2,3: workers per GPU, each sees only its GPU")
    trials: int = opt(0, help="trials of a space sweep, overriding the file (0: the file's)", min=0)
    seeds: list[int] = opt(
        factory=list, help="seeds of every trial, overriding the file's seeds: (e.g. [0,1])"
    )
    variants: list[str] = opt(
        factory=list,
        help="run only these variants of a variants sweep (names; the baseline among them), "
        "e.g. [full,no_glcm]",
    )
    base: Path | None = opt(None, help="a config file of the command applied over the sweep's base")
    set: list[str] = opt(
        factory=list, help="base config values KEY=VALUE (YAML value), e.g. --set optim.epochs=5"
    )
    heartbeat_s: int = opt(30, help="a worker records a heartbeat this often (s)", min=1)
    grace_s: int = opt(
        120, help="a running trial without a heartbeat this long (s) is failed and retried", min=1
    )
    max_retry: int = opt(3, help="times a trial of a dead or interrupted worker is retried", min=0)


@dataclass
class SweepReportConfig:
    """Options of ``eolab sweep report``."""

    sweep_dir: Path = opt(None, help="the sweep folder", positional=True, required=True)
    storage: str = opt("", help="the sweep's storage if not <sweep>/study.journal")
    top: int = opt(10, help="rows of the best-trials table", min=1)
    out: Path | None = opt(None, help="report folder (default: <sweep>/report)")


@dataclass
class SweepPresetsConfig:
    """``eolab sweep presets`` has no options."""


@dataclass
class RunsCompareConfig:
    """Options of ``eolab runs compare``."""

    runs: list[str] = opt(
        help="run folders, globs ('runs/cr_*') or sweep folders (their trials)",
        factory=list,
        positional=True,
        required=True,
    )
    baseline: str = opt(
        "",
        help="deltas against this run folder or metrics JSON (a summary.json, or a flat "
        "{name: value} file such as v2_metrics.json)",
        aliases=("--compare_baseline",),
    )
    out: Path = opt(Path("runs/compare"), help="folder for compare.md, compare.csv, curves.png")
    metrics: list[str] = opt(
        factory=list, help="headline metrics to show (default: all in the summaries)"
    )
    curves: list[str] = opt(
        factory=list,
        help="metrics.csv columns to plot per epoch (default: the headline metrics and val/loss)",
    )
    all_fields: bool = opt(False, help="show every config field, not only those that differ")


sweep_run = Command(
    "eolab sweep run",
    SweepRunConfig,
    "eo_common.sweep.launcher:run_sweep",
    description="Run (or resume) a sweep: trials of one command on Optuna; each trial is an "
    "ordinary run folder in <sweep>/trials/.",
    run_folder=False,
)
sweep_report = Command(
    "eolab sweep report",
    SweepReportConfig,
    "eo_common.sweep.report:write_report",
    description="Write <sweep>/report: REPORT.md (best trials, seed spread, ablation deltas), "
    "trials.csv, history.png, importances.png and best.yaml (the best config for the command).",
    run_folder=False,
)
sweep_presets = Command(
    "eolab sweep presets",
    SweepPresetsConfig,
    "eo_common.sweep.report:print_presets",
    description="List the sweep files shipped in the installed eolab packages.",
    run_folder=False,
)
runs_compare = Command(
    "eolab runs compare",
    RunsCompareConfig,
    "eo_common.compare:compare_command",
    description="One table of runs: the config fields that differ, the headline metrics, deltas "
    "against a baseline; training curves overlaid. Markdown on stdout; .md, .csv, .png in --out.",
    run_folder=False,
)

SWEEP = CommandGroup(
    "eolab sweep",
    "Sweeps and ablations of any eolab training command on Optuna.",
    {
        "run": (sweep_run, "run or resume a sweep file (--workers N, --gpus 0,1, --storage URL)"),
        "report": (sweep_report, "tables, plots and the best config of a sweep folder"),
        "presets": (sweep_presets, "list the sweep files shipped in the packages"),
    },
)
RUNS = CommandGroup(
    "eolab runs",
    "Look at run folders side by side.",
    {"compare": (runs_compare, "table of runs: differing config, metrics, deltas, curves")},
)
#: ``eolab <name> ...`` dispatches here (see eo_common/cli.py).
GROUPS = {"sweep": SWEEP, "runs": RUNS}
