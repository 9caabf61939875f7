"""Sweep overhead, measured side by side in one run (results in docs/benchmarks.md).

1. A one-trial sweep vs the same training started by hand: ``toy-fit`` (a real Lightning training via
   ``fit_run``, the test suite's toy command) as a subprocess, and ``eolab sweep run`` of a sweep with
   that one configuration (launcher, Optuna journal storage, worker, the trial's subprocess). The
   difference is what a trial costs on top of the run itself.
2. Two workers vs one on a two-trial sweep of the same command: wall-clock ratio.

Runs are interleaved (A, B, A, B, ...) so that a change of machine load hits both sides; the median
of ``--repeats`` is reported, with the load average before and after.

    uv run python benchmarks/sweep_overhead.py --repeats 3 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUPPORT = ROOT / "packages" / "common" / "tests" / "sweep_support"


def env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return dict(os.environ, PYTHONPATH=str(SUPPORT) + (os.pathsep + path if path else ""))


CPU: list[float] = []  # CPU seconds (user + sys) of each timed command and all its subprocesses


def timed(argv: list[str]) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env())
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds


def sweep_file(folder: Path, name: str, lrs: list[float], epochs: int, threads: int) -> Path:
    path = folder / f"{name}.yaml"
    data = {
        "name": name,
        "command": "eolab_sweep_toys:fit",
        "base": {"optim.epochs": epochs, "data.samples": 4096, "run.threads": threads},
        "variants": {f"lr{i}": {"optim.lr": lr} for i, lr in enumerate(lrs)},
        "objective": {"metric": "val/loss", "direction": "minimize"},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: default)")
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="eolab-sweep-bench-"))
    python = sys.executable
    by_hand, one_trial, one_worker, two_workers = [], [], [], []
    try:
        single = sweep_file(work, "single", [0.05], args.epochs, args.threads)
        double = sweep_file(work, "double", [0.05, 0.02], args.epochs, args.threads)
        for i in range(args.repeats):
            by_hand.append(
                timed(
                    [
                        python,
                        "-c",
                        "import sys, eolab_sweep_toys as t; sys.exit(t.fit(sys.argv[1:]))",
                        "--output_dir",
                        str(work / f"hand{i}"),
                        "--epochs",
                        str(args.epochs),
                        "--lr",
                        "0.05",
                        "--data.samples",
                        "4096",
                    ]
                )  # fmt: skip
            )
            one_trial.append(
                timed(
                    [
                        python,
                        "-m",
                        "eo_common.cli",
                        "sweep",
                        "run",
                        str(single),
                        "--out",
                        str(work / f"single{i}"),
                    ]
                )  # fmt: skip
            )
            one_worker.append(
                timed(
                    [
                        python,
                        "-m",
                        "eo_common.cli",
                        "sweep",
                        "run",
                        str(double),
                        "--out",
                        str(work / f"w1_{i}"),
                        "--workers",
                        "1",
                    ]
                )  # fmt: skip
            )
            two_workers.append(
                timed(
                    [
                        python,
                        "-m",
                        "eo_common.cli",
                        "sweep",
                        "run",
                        str(double),
                        "--out",
                        str(work / f"w2_{i}"),
                        "--workers",
                        "2",
                    ]
                )  # fmt: skip
            )
            print(f"repeat {i} (load {os.getloadavg()[0]:.1f}): by hand {by_hand[-1]:.1f} s, "
                  f"1-trial sweep {one_trial[-1]:.1f} s, "
                  f"2 trials 1 worker {one_worker[-1]:.1f} s, 2 workers {two_workers[-1]:.1f} s",
                  flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = statistics.median
    cpu = {k: med(CPU[i::4]) for i, k in enumerate(("hand", "one", "w1", "w2"))}
    load_after = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}; {args.repeats} repeats, toy-fit {args.epochs} epochs, "
          f"threads {args.threads or 'torch default'}")  # fmt: skip
    print(f"CPU seconds (median, process trees): by hand {cpu['hand']:.1f}, one-trial sweep "
          f"{cpu['one']:.1f} (overhead {cpu['one'] - cpu['hand']:+.1f}), 2 trials 1 worker "
          f"{cpu['w1']:.1f}, 2 workers {cpu['w2']:.1f}")  # fmt: skip
    print(f"by hand (median)            {med(by_hand):6.1f} s")
    print(f"one-trial sweep (median)    {med(one_trial):6.1f} s   overhead "
          f"{med(one_trial) - med(by_hand):+.1f} s ({med(one_trial) / med(by_hand):.2f}x)")  # fmt: skip
    print(f"2 trials, 1 worker (median) {med(one_worker):6.1f} s")
    print(f"2 trials, 2 workers (median){med(two_workers):6.1f} s   ratio 2 workers / 1 worker "
          f"{med(two_workers) / med(one_worker):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
