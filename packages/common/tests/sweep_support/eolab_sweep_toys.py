"""Toy eolab commands for the sweep tests (importable as ``eolab_sweep_toys`` with this folder on
``PYTHONPATH``; the sweep files name them ``eolab_sweep_toys:quad`` / ``eolab_sweep_toys:fit``).

``quad``: no torch, about 0.3 s to start. Its score is a known function of the config
(:func:`quad_score`), so a test can check every trial's value; it "trains" ``optim.epochs`` epochs of
``data.delay_s`` seconds, writes ``metrics.csv`` and a resumable ``state.json`` after each epoch, and
appends one line per start to ``starts.log`` (so a test can see that no trial ran twice).

``fit``: a real Lightning training through :func:`eo_common.training.fit_run` (a linear regression on
random data), so the sweep's pruning callback runs in real epochs.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eo_common.command import Command
from eo_common.config import DataConfig, OptimConfig, RunConfig, opt
from eo_common.errors import InputError
from eo_common.io import atomic_save_json, atomic_write
from eo_common.runs import RunFolder

KIND_BONUS = {"a": 0.0, "b": 0.5, "c": -0.5}


@dataclass
class QuadData(DataConfig):
    """data: nothing to read; an optional root that must exist (to make a trial fail)."""

    delay_s: float = opt(0.0, help="seconds per epoch", min=0)


@dataclass
class QuadModel:
    """model: the toy's parameters."""

    x: float = opt(0.0, help="x", min=-10, max=10)
    y: int = opt(0, help="y", min=-10, max=10)
    kind: Literal["a", "b", "c"] = opt("a", help="kind")
    use_bonus: bool = opt(True, help="add the kind's bonus")


@dataclass
class QuadConfig:
    data: QuadData = field(default_factory=QuadData)
    model: QuadModel = field(default_factory=QuadModel)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def quad_score(x: float, y: int, kind: str, use_bonus: bool, seed: int) -> float:
    """The toy's final ``val/score``: best at x=1, y=2, kind b; the seed adds up to 0.01."""
    bonus = KIND_BONUS[kind] if use_bonus else 0.0
    return -((x - 1.0) ** 2) - (y - 2) ** 2 + bonus + 0.01 * ((seed * 7919) % 13) / 13


def quad_work(cfg: QuadConfig) -> dict:
    folder = RunFolder.plan(cfg, "toy-quad")
    if cfg.data.root is not None and not Path(cfg.data.root).exists():
        raise InputError("data set folder not found", path=cfg.data.root)
    run_dir = folder.open()
    state_file = run_dir / "state.json"
    start = 0
    if folder.mode == "resume" and state_file.is_file():
        start = json.loads(state_file.read_text())["epoch"] + 1
    with open(run_dir / "starts.log", "a") as f:
        f.write(f"{os.getpid()} {start}\n")
    m = cfg.model
    final = quad_score(m.x, m.y, m.kind, m.use_bonus, cfg.run.seed)
    rows = []
    if (run_dir / "metrics.csv").is_file():
        with open(run_dir / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < start]
    for epoch in range(start, cfg.optim.epochs):
        time.sleep(cfg.data.delay_s)
        score = final - 0.5 ** (epoch + 1)
        rows.append({"epoch": epoch, "val/score": score, "val/loss": -score})
        with atomic_write(run_dir / "metrics.csv", "w") as f:
            w = csv.DictWriter(
                f, fieldnames=["epoch", "val/score", "val/loss"], lineterminator="\n"
            )
            w.writeheader()
            w.writerows(rows)
        atomic_save_json({"epoch": epoch}, state_file)
    last = float(rows[-1]["val/score"])
    return folder.finish(
        metrics={"val/score": last, "val/loss": -last},
        paths={"metrics_csv": run_dir / "metrics.csv"},
        best_epoch=cfg.optim.epochs - 1,
        epochs_run=cfg.optim.epochs,
    )


quad = Command(
    "toy-quad",
    QuadConfig,
    "eolab_sweep_toys:quad_work",
    description="A toy command with a known score.",
    defaults={"optim.epochs": 3, "run.output_dir": Path("runs/toy_quad")},
    metrics=("val/score", "val/loss"),
)


@dataclass
class FitData(DataConfig):
    """data: random regression data."""

    samples: int = opt(192, help="samples (80 % train)", min=8)
    features: int = opt(6, help="input features", min=1)
    nan_inputs: bool = opt(False, help="poison the inputs with NaN (a bad data set)")


@dataclass
class FitConfig:
    data: FitData = field(default_factory=FitData)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


fit = Command(
    "toy-fit",
    FitConfig,
    "eolab_sweep_toys_fit:train",
    description="A tiny Lightning regression trained with fit_run.",
    defaults={
        "optim.epochs": 6,
        "optim.scheduler": "none",
        "optim.early_stop_patience": 0,
        "optim.max_bad_steps": 2,
        "data.batch_size": 32,
        "run.output_dir": Path("runs/toy_fit"),
        "run.log": ["csv"],
        "run.accelerator": "cpu",
        "run.progress": False,
    },
    metrics=("val/loss",),
)
