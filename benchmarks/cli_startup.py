"""How fast every eolab console script answers ``--help``, ``--print_config`` and a bad flag (a
config error, exit 2), side by side with
``python -c pass`` and ``python -c "import torch"`` measured in the same run.

Each command is started as a fresh process (the installed console script of this environment), ``--repeat``
times; the table shows the best and the median wall-clock seconds. The target (issue "One experiment
layer") is under 2 s for every command on the 2-core CI machine.

Usage::

    uv run python benchmarks/cli_startup.py            # every console script of the eolab packages
    uv run python benchmarks/cli_startup.py --repeat 5 --only cr-train glacier-train
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import distribution
from pathlib import Path

DISTRIBUTIONS = ("eo-common", "cloud-removal", "gac-pipeline", "risk-mapping", "glacier-seg")


def console_scripts() -> list[str]:
    """Names of the console scripts the eolab distributions install."""
    names = []
    for dist in DISTRIBUTIONS:
        try:
            eps = distribution(dist).entry_points
        except Exception:  # noqa: BLE001 - a package not installed is simply left out
            continue
        names += sorted(ep.name for ep in eps if ep.group == "console_scripts")
    return names


def time_command(argv: list[str], repeat: int) -> tuple[float, float, int]:
    """(best, median) seconds over ``repeat`` fresh processes, and the last exit status."""
    times, rc = [], 0
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    for _ in range(repeat):
        t0 = time.perf_counter()
        rc = subprocess.run(argv, capture_output=True, env=env, check=False).returncode
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times), rc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="processes per command (default 3)")
    parser.add_argument("--only", nargs="*", default=None, help="only these console scripts")
    args = parser.parse_args()
    bindir = Path(sys.executable).parent
    rows = [("python -c pass", [sys.executable, "-c", "pass"])]
    rows.append(("python -c 'import torch'", [sys.executable, "-c", "import torch"]))
    for name in console_scripts():
        if args.only and name not in args.only:
            continue
        script = bindir / name
        rows.append((f"{name} --help", [str(script), "--help"]))
        if name != "eolab":  # the eolab group dispatches to sub-commands
            rows.append((f"{name} --print_config", [str(script), "--print_config"]))
            rows.append((f"{name} --no_such_flag", [str(script), "--no_such_flag", "1"]))
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"# {os.cpu_count()} CPUs, load average before: {' '.join(load)}; repeat {args.repeat}")
    print(f"{'command':<34} {'best s':>7} {'median s':>9} {'x pass':>7}  exit")
    base = None
    worst = 0.0
    for label, argv in rows:
        best, median, rc = time_command(argv, args.repeat)
        base = base or best
        if label.split()[-1] in ("--help", "--print_config", "--no_such_flag"):
            worst = max(worst, best)
        print(f"{label:<34} {best:7.2f} {median:9.2f} {best / base:7.1f}  {rc}")
    print(f"slowest answer: {worst:.2f} s (target < 2 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
