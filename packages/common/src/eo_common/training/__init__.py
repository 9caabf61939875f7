"""Training on Lightning, the same way in every eolab package.

* :func:`fit_run` — one training run the eolab way: seed, check the inputs, open the run folder by the
  rerun rule, fit (``--resume`` from ``last.ckpt``), write ``summary.json`` and the training curves;
* :func:`build_trainer` — the :class:`lightning.Trainer` of a run from its ``run`` and ``optim``
  config groups (loggers, checkpoints, early stopping, NaN guard, exact-resume callbacks, AMP, DDP);
* :class:`EOModule` — LightningModule base that logs every loss term and metric
  (``{stage}/loss``, ``{stage}/loss_{term}``, ``{stage}/{metric}``) and builds its optimizer and
  schedule from hyper-parameters (``OptimConfig.hparams()``);
* :func:`build_scheduler` — step, plateau, cosine, cosine with warm restarts, none; linear warmup;
* :class:`NaNGuard` — skips steps with NaN/inf loss or gradients (and undoes their BatchNorm
  updates), raises :class:`NonFiniteLossError` after ``max_bad_steps`` in a row or when no step of an
  epoch was finite; :class:`EpochSeed`, :class:`PlateauResume` — resumed runs equal uninterrupted ones;
* :func:`seed_everything`, :func:`load_checkpoint`, :class:`RunCSVLogger`.

A training command's work function::

    def train(cfg: GlacierTrainConfig) -> dict:
        datamodule = GlacierDataModule(cfg.data, seed=cfg.run.seed)
        task = GlacierTask(cfg.model, cfg.loss, **cfg.optim.hparams())
        return fit_run(task, datamodule, cfg, command="glacier-train", monitor="val/mcc", mode="max")

See ``docs/common_training.md`` and ``docs/developing.md``.
"""

from .callbacks import EpochSeed, FiniteMonitor, NaNGuard, NonFiniteLossError, PlateauResume
from .module import OPTIMIZERS, STAGES, EOModule, flatten_metrics
from .run import (
    RunCSVLogger,
    best_epoch_metrics,
    build_trainer,
    device_description,
    fit_run,
    load_checkpoint,
    parse_devices,
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
    "FiniteMonitor",
    "build_trainer",
    "RunCSVLogger",
    "parse_devices",
    "fit_run",
    "load_checkpoint",
    "best_epoch_metrics",
    "device_description",
]
