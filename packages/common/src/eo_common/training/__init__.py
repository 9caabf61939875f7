"""Training on Lightning, the same way in every eolab package.

* :func:`seed_everything` — one seed for Python, NumPy, torch and dataloader workers;
* :class:`EOModule` — LightningModule base that logs every loss term and metric
  (``{stage}/loss``, ``{stage}/loss_{term}``, ``{stage}/{metric}``) and builds its optimizer and
  schedule from hyper-parameters;
* :func:`build_scheduler` — step, plateau, cosine, cosine with warm restarts, none; linear warmup;
* :class:`NaNGuard` — skips steps with NaN/inf loss or gradients, raises
  :class:`NonFiniteLossError` after ``max_bad_steps`` in a row;
* :func:`add_training_args` / :class:`TrainConfig` — the common CLI flags;
* :func:`prepare_run_dir`, :func:`build_trainer`, :func:`resume_checkpoint` — run folder,
  loggers, checkpoints, early stopping, AMP, DDP (also under ``torchrun``) and ``--resume``.

A training CLI in a package::

    parser = argparse.ArgumentParser(prog="glacier-train")
    parser.add_argument("--data_root", type=Path, required=True)
    add_training_args(parser)
    args = parser.parse_args()
    cfg = TrainConfig.from_args(args)
    seed_everything(cfg.seed)
    run_dir = prepare_run_dir(cfg.output_dir, cfg.experiment_name, vars(args))
    module = GlacierModule(**cfg.optimizer_hparams())
    trainer = build_trainer(cfg, run_dir, monitor="val/mcc", mode="max")
    trainer.fit(module, datamodule, ckpt_path=resume_checkpoint(run_dir, cfg.resume))

See ``docs/common_training.md``.
"""

from .callbacks import EpochSeed, NaNGuard, NonFiniteLossError, PlateauResume
from .config import PRECISIONS, TrainConfig, add_training_args, parse_devices
from .legacy_run import (
    ResumeError,
    prepare_run_dir,
    resume_checkpoint,
)
from .module import OPTIMIZERS, STAGES, EOModule, flatten_metrics
from .run import (
    RunCSVLogger,
    best_epoch_metrics,
    build_trainer,
    device_description,
    fit_run,
    load_checkpoint,
)
from .schedulers import SCHEDULERS, WarmupReduceLROnPlateau, build_scheduler
from .seeding import derive_seed, seed_everything

__all__ = [
    "seed_everything",
    "derive_seed",
    "EOModule",
    "flatten_metrics",
    "OPTIMIZERS",
    "STAGES",
    "build_scheduler",
    "SCHEDULERS",
    "WarmupReduceLROnPlateau",
    "NaNGuard",
    "NonFiniteLossError",
    "EpochSeed",
    "PlateauResume",
    "add_training_args",
    "TrainConfig",
    "PRECISIONS",
    "prepare_run_dir",
    "build_trainer",
    "resume_checkpoint",
    "ResumeError",
    "RunCSVLogger",
    "parse_devices",
    "fit_run",
    "load_checkpoint",
    "best_epoch_metrics",
    "device_description",
]
