"""The risk_mapping console scripts, declared once on the shared command layer (no torch import).

``risk-pipeline`` and ``risk-validate-config`` read the same config file (``--config``; without it,
``config.yaml`` in the working folder when there is one; ``risk-validate-config CONFIG`` also takes
it as the first argument, as before). Flags after the file override it (``--training.lr 1e-4``,
``--seed 42``); ``--print_config`` prints the resolved config. ``risk-evaluate`` scores trained
models on any stack. See the package README.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eo_common.command import Command

from risk_mapping.config import (
    EVALUATION_METRICS,
    EvaluateConfig,
    RiskConfig,
    ValidateConfig,
    run_fields,
)

__all__ = ["risk_pipeline", "risk_validate_config", "risk_evaluate", "RiskCommand"]

DEFAULT_CONFIG = "config.yaml"
#: ``--run.<field>`` spellings of the run fields (the top level of a risk config)
RUN_ALIASES = {f"--run.{name}": name for name in run_fields()}


class RiskCommand(Command):
    """A :class:`Command` that reads ``./config.yaml`` when no ``--config`` is given and, with
    ``positional_config``, takes the config file as the first argument."""

    def __init__(self, *args: Any, positional_config: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.positional_config = positional_config

    def parse(self, argv: Sequence[str] | None = None) -> Any:
        argv = list(sys.argv[1:] if argv is None else argv)
        if self.positional_config and argv and not argv[0].startswith("-"):
            argv = ["--config", argv[0], *argv[1:]]
        given = any(a == "--config" or a.startswith("--config=") for a in argv)
        asks_help = any(a in ("-h", "--help") for a in argv)
        if not given and not asks_help and Path(DEFAULT_CONFIG).is_file():
            argv = ["--config", DEFAULT_CONFIG, *argv]
        return super().parse(argv)


_CONFIG_EPILOG = """examples:
  risk-pipeline --config config.yaml                      # all four stages
  risk-pipeline --config config.yaml --training.lr 1e-4 --output_dir runs/lr1e-4
  risk-pipeline --resume                                  # ./config.yaml; skip finished stages
  risk-pipeline --config config.yaml --stages infer,evaluate --force_recreate
  risk-pipeline --config runs/risk_v25/config.yaml --output_dir runs/repeat   # repeat a run
"""

risk_pipeline = RiskCommand(
    "risk-pipeline",
    RiskConfig,
    "risk_mapping.pipeline:run_pipeline",
    description="Ordinal low/medium/high risk segmentation: prepare (inputs on one grid, block "
    "split, tiling, oversampling, SMOTE) -> train (U-Net + attention + CORAL, one run per "
    "ensemble seed) -> infer (sliding window, dense CRF, coloured COG class maps) -> evaluate "
    "(kappa, per-class scores, Spearman rho, success criteria). Reads ./config.yaml when no "
    "--config is given.",
    epilog=_CONFIG_EPILOG,
    aliases={**RUN_ALIASES, "--budget_s": "time_budget_s"},
    defaults={"output_dir": Path("runs/risk_mapping")},
    run_folder=False,  # the stage rerun rule is applied by risk_mapping.pipeline.plan_run
    metrics=EVALUATION_METRICS,
)

risk_validate_config = RiskCommand(
    "risk-validate-config",
    ValidateConfig,
    "risk_mapping.validate:validate",
    description="Validate a risk-pipeline config: every bad key, type and range, missing files, "
    "then (unless --no_open_rasters) open the rasters and report grid, CRS, nodata, band, label "
    "and split problems and the encoder name. Exit 0 when usable, 2 otherwise. Writes nothing.",
    epilog="examples:\n  risk-validate-config config.yaml\n  risk-validate-config --config "
    "config.yaml --no_open_rasters\n",
    aliases=RUN_ALIASES,
    defaults={"output_dir": Path("runs/risk_mapping")},
    run_folder=False,
    positional_config=True,
)

risk_evaluate = Command(
    "risk-evaluate",
    EvaluateConfig,
    "risk_mapping.evaluate:evaluate",
    description="Predict a stack with trained risk model(s), refine with a dense CRF, and score "
    "every valid pixel: kappa (plain, quadratic), per-class precision/recall/F1, Spearman rho, "
    "confusion matrices, success criteria, deltas against a baseline metrics.json.",
    epilog="example:\n  risk-evaluate --model_path runs/risk_v25/train --test_data_path data/ "
    "--output_dir runs/eval --compare_baseline baselines/v2_reported.json\n",
    aliases=RUN_ALIASES,
    defaults={"output_dir": Path("runs/risk_evaluate")},
    metrics=EVALUATION_METRICS,
)
