"""LEGACY (removed once every package uses eo_common.training.run.fit_run). Run folders, the Trainer factory and ``--resume``.

A run folder ``<output_dir>/<experiment_name>/`` holds::

    config.json           all arguments, git commit, package versions, timestamp, command line
    metrics.csv           one row per logged epoch (CSVLogger), kept across --resume
    hparams.yaml          the module's hyper-parameters (CSVLogger)
    tensorboard/          TensorBoard event files
    checkpoints/best.ckpt best epoch by the monitored metric
    checkpoints/last.ckpt latest epoch (what --resume continues from)
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import socket
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import lightning as L
from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

from ..io import atomic_save_json, atomic_write, git_commit, package_versions
from .callbacks import EpochSeed, NaNGuard
from .config import TrainConfig, parse_devices

__all__ = [
    "ResumeError",
    "RunCSVLogger",
    "prepare_run_dir",
    "build_trainer",
    "resume_checkpoint",
]

CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best"
LAST_NAME = "last"


class ResumeError(FileNotFoundError):
    """``--resume`` was given but there is no checkpoint to resume from (message names the path)."""


def _is_global_zero() -> bool:
    return rank_zero_only.rank == 0


def prepare_run_dir(
    output_dir: str | os.PathLike, experiment_name: str, config: dict[str, Any]
) -> Path:
    """Create ``output_dir/experiment_name`` and write ``config.json`` there atomically.

    ``config.json`` holds ``arguments`` (``config`` as given: every CLI argument), ``git_commit``
    (with ``-dirty`` for uncommitted changes; None outside a git checkout), ``package_versions``,
    ``timestamp`` (UTC, ISO 8601), ``argv`` and ``hostname``. An existing ``config.json`` (a resumed
    or repeated run) is kept as ``config.<its timestamp>.json`` first. Under DDP only global rank 0
    writes; every rank gets the path.

    Example:
        >>> run_dir = prepare_run_dir("runs", "glacier_unet", {"lr": 1e-3})  # doctest: +SKIP
        >>> json.loads((run_dir / "config.json").read_text())["arguments"]["lr"]  # doctest: +SKIP
        0.001
    """
    name = str(experiment_name)
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"experiment_name must be a plain folder name, got {name!r}")
    run_dir = Path(output_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    if not _is_global_zero():
        return run_dir

    config_path = run_dir / "config.json"
    if config_path.exists():
        import json

        try:
            old_stamp = json.loads(config_path.read_text(encoding="utf-8")).get("timestamp", "")
        except (ValueError, OSError):
            old_stamp = ""
        stamp = "".join(c for c in str(old_stamp)[:19] if c.isalnum()) or "previous"
        backup = run_dir / f"config.{stamp}.json"
        n = 1
        while backup.exists():
            backup = run_dir / f"config.{stamp}-{n}.json"
            n += 1
        os.replace(config_path, backup)

    commit = git_commit(Path(__file__).resolve().parent) or git_commit()
    record = {
        "arguments": dict(config),
        "git_commit": commit,
        "package_versions": package_versions(),
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
        "hostname": socket.gethostname(),
    }
    atomic_save_json(record, config_path)
    return run_dir


def resume_checkpoint(run_dir: str | os.PathLike, resume: bool | str | None) -> str | None:
    """The checkpoint path to pass to ``trainer.fit(ckpt_path=...)``, or None to start fresh.

    Args:
        run_dir: the run folder (``checkpoints/`` inside it is searched).
        resume: None/False/"" = start fresh; True or ``"last"`` = ``run_dir/checkpoints/last.ckpt``;
            ``"best"`` = ``run_dir/checkpoints/best.ckpt``; anything else = a checkpoint path.

    Raises:
        ResumeError: resuming was asked for and the checkpoint does not exist.

    Example:
        >>> resume_checkpoint("runs/x", None) is None
        True
    """
    if resume is None or resume is False or resume == "":
        return None
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if resume is True or resume in ("last", LAST_NAME + ".ckpt"):
        path = ckpt_dir / f"{LAST_NAME}.ckpt"
    elif resume in ("best", BEST_NAME + ".ckpt"):
        path = ckpt_dir / f"{BEST_NAME}.ckpt"
    else:
        path = Path(str(resume))
    if not path.is_file():
        raise ResumeError(
            f"--resume: checkpoint {path} does not exist (run folder {run_dir}). Start without "
            "--resume, check --output_dir/--experiment_name, or pass an existing checkpoint path."
        )
    return str(path)


class _AppendingExperimentWriter(ExperimentWriter):
    """CSV writer that keeps an existing ``metrics.csv`` (Lightning's own deletes it)."""

    def _check_log_dir_exists(self) -> None:
        self.reload_header()

    def reload_header(self) -> None:
        self.metrics_keys = []
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = list(header)  # the on-disk column order, for appending


class RunCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` writing ``run_dir/metrics.csv`` directly.

    Unlike the stock logger it never deletes an existing ``metrics.csv``: on ``--resume`` the rows of
    the finished epochs stay and new rows are appended (rows of epochs that are about to be re-run are
    dropped by :meth:`truncate`, which :func:`build_trainer` arranges at the start of training).
    """

    def __init__(self, run_dir: str | os.PathLike, flush_logs_every_n_steps: int = 50):
        super().__init__(
            save_dir=run_dir, name="", version="", flush_logs_every_n_steps=flush_logs_every_n_steps
        )

    @property
    def log_dir(self) -> str:
        return self.save_dir

    @property
    def experiment(self) -> _ExperimentWriter:  # type: ignore[override]
        if self._experiment is None:
            os.makedirs(self.save_dir, exist_ok=True)
            self._experiment = _AppendingExperimentWriter(log_dir=self.save_dir)
        return self._experiment

    @rank_zero_only
    def truncate(self, from_epoch: int, from_step: int) -> None:
        """Drop rows with ``epoch >= from_epoch`` (or, without an epoch, ``step >= from_step``)."""
        writer = self.experiment
        path = Path(writer.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fieldnames = list(reader.fieldnames or [])
            rows = list(reader)

        def keep(row: dict[str, str]) -> bool:
            epoch, step = row.get("epoch", ""), row.get("step", "")
            if epoch not in ("", None):
                return float(epoch) < from_epoch
            if step not in ("", None):
                return float(step) < from_step
            return True

        kept = [r for r in rows if keep(r)]
        if len(kept) != len(rows):
            with atomic_write(path, "w") as f:
                out = csv.DictWriter(f, fieldnames=fieldnames, lineterminator="\n")
                out.writeheader()
                out.writerows(kept)
        if isinstance(writer, _AppendingExperimentWriter):
            writer.reload_header()


class _RunFiles(L.Callback):
    """Keeps ``metrics.csv`` consistent with the checkpoints: trims re-run epochs, flushes on save."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.truncate(from_epoch=trainer.current_epoch, from_step=trainer.global_step)

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, RunCSVLogger):
                logger.save()


def _torchrun_topology() -> tuple[int, int] | None:
    """(devices per node, nodes) from torchrun's environment, or None outside torchrun."""
    if not TorchElasticEnvironment.detect():
        return None
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    world = int(os.environ.get("WORLD_SIZE", local_world))
    return local_world, max(1, world // local_world)


def build_trainer(
    cfg: TrainConfig,
    run_dir: str | os.PathLike,
    monitor: str,
    mode: Literal["max", "min"],
    extra_callbacks: Iterable[L.Callback] = (),
    **trainer_kwargs: Any,
) -> L.Trainer:
    """A :class:`lightning.Trainer` wired for an eolab run folder.

    Loggers: :class:`RunCSVLogger` (``run_dir/metrics.csv``) and TensorBoard (``run_dir/tensorboard``).
    Callbacks: :class:`~lightning.pytorch.callbacks.ModelCheckpoint` (``checkpoints/best.ckpt`` by
    ``monitor``/``mode`` and ``checkpoints/last.ckpt`` every validation), EarlyStopping on ``monitor``
    (unless ``cfg.early_stop_patience`` is 0), :class:`NaNGuard` (``cfg.max_bad_steps``),
    :class:`EpochSeed` (``cfg.seed``; exact resume), LearningRateMonitor, TQDM progress bar, plus
    ``extra_callbacks``. ``cfg.grad_clip`` (norm), ``cfg.accumulate_grad_batches``, ``cfg.precision``,
    ``cfg.devices``/``num_nodes``/``strategy``/``accelerator`` go to the Trainer. Under ``torchrun``
    with ``--devices auto`` the device and node counts are taken from torchrun's environment.

    Args:
        cfg: the common training settings.
        run_dir: the run folder from :func:`prepare_run_dir`.
        monitor: logged metric for best checkpoint and early stopping, e.g. ``"val/loss"``.
        mode: ``"min"`` if lower ``monitor`` is better, else ``"max"``.
        extra_callbacks: further callbacks (plots, prediction writers, ...).
        **trainer_kwargs: overrides of other :class:`lightning.Trainer` arguments
            (e.g. ``limit_train_batches``, ``enable_progress_bar``, ``deterministic``).

    Example:
        >>> cfg = TrainConfig.from_args(parser.parse_args())  # doctest: +SKIP
        >>> seed_everything(cfg.seed)  # doctest: +SKIP
        >>> run_dir = prepare_run_dir(cfg.output_dir, cfg.experiment_name, vars(args))  # doctest: +SKIP
        >>> trainer = build_trainer(cfg, run_dir, monitor="val/mcc", mode="max")  # doctest: +SKIP
        >>> trainer.fit(module, datamodule, ckpt_path=resume_checkpoint(run_dir, cfg.resume))  # doctest: +SKIP
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    run_dir = Path(run_dir)
    devices = parse_devices(cfg.devices)
    num_nodes = cfg.num_nodes
    topology = _torchrun_topology()
    if topology is not None and devices == "auto":
        devices, torchrun_nodes = topology
        if num_nodes == 1:
            num_nodes = torchrun_nodes

    checkpoint = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=BEST_NAME,
        monitor=monitor,
        mode=mode,
        save_top_k=1,
        save_last=True,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [
        checkpoint,
        NaNGuard(max_bad_steps=cfg.max_bad_steps),
        EpochSeed(cfg.seed),
        LearningRateMonitor(),
        _RunFiles(),
    ]
    if trainer_kwargs.get("enable_progress_bar", True):
        # redraw every batch on a terminal; in log files (CI, nohup) every 20 batches
        callbacks.append(TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 20))
    if cfg.early_stop_patience > 0:
        callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stop_patience)
        )
    callbacks.extend(extra_callbacks)

    loggers = [
        RunCSVLogger(run_dir),
        TensorBoardLogger(
            save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False
        ),
    ]
    kwargs: dict[str, Any] = {
        "default_root_dir": run_dir,
        "max_epochs": cfg.max_epochs,
        "accelerator": cfg.accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": cfg.strategy,
        "precision": cfg.precision,
        "gradient_clip_val": cfg.grad_clip or None,
        "gradient_clip_algorithm": "norm",
        "accumulate_grad_batches": cfg.accumulate_grad_batches,
        "callbacks": callbacks,
        "logger": loggers,
        "log_every_n_steps": 10,
    }
    kwargs.update(trainer_kwargs)
    return L.Trainer(**kwargs)
