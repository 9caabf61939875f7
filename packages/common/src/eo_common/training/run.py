"""The Trainer factory, the run-folder CSV logger and :func:`fit_run`, the one way every package trains.

A training run folder (see :mod:`eo_common.runs` for the rerun rule) holds::

    config.yaml            the full resolved config (``--config`` repeats the run)
    summary.json           command, versions, commit, config hash, seed, device, times, best epoch,
                           headline metrics, paths (status "running" until the run ends)
    metrics.csv            one row per logged epoch (kept across --resume)
    training_curves.png    loss and headline metrics per epoch
    tensorboard/           TensorBoard event files (``run.log`` has ``tensorboard``)
    checkpoints/best.ckpt  best epoch by the monitored metric
    checkpoints/last.ckpt  latest validation (what ``--resume`` continues from)
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch.callbacks import (
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from ..config import OptimConfig, RunConfig
from ..errors import CheckpointError, UserError
from ..io import atomic_write
from ..runs import RunFolder, global_rank_from_env
from .callbacks import EpochSeed, FiniteMonitor, NaNGuard, PlateauResume
from .seeding import seed_everything

__all__ = [
    "CHECKPOINT_DIR",
    "RunCSVLogger",
    "build_loggers",
    "build_trainer",
    "best_epoch_metrics",
    "device_description",
    "fit_run",
    "global_rank_from_env",
    "parse_devices",
]

CHECKPOINT_DIR = "checkpoints"
BEST_NAME = "best"
LAST_NAME = "last"


def parse_devices(devices: str | int | Sequence[int]) -> str | int | list[int]:
    """Turn ``run.devices`` into what :class:`lightning.Trainer` expects.

    Example:
        >>> parse_devices("auto"), parse_devices("2"), parse_devices("-1"), parse_devices("0,1")
        ('auto', 2, -1, [0, 1])
    """
    if isinstance(devices, int):
        return devices
    if not isinstance(devices, str):
        return [int(d) for d in devices]
    text = devices.strip().strip("[]")
    if text == "auto":
        return "auto"
    if "," in text:
        return [int(d) for d in text.split(",") if d.strip()]
    return int(text)


class RunCSVLogger(Logger):
    """Writes ``run_dir/metrics.csv``: one row per :meth:`log_metrics` call, columns grown as new
    metrics appear; rows are kept across ``--resume`` (rows of epochs about to be re-run are dropped
    by :meth:`truncate`, which :func:`build_trainer` arranges at the start of training).

    Built on Lightning's public :class:`~lightning.pytorch.loggers.Logger` interface only.
    """

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "metrics.csv"
        self._rows: list[dict[str, Any]] = []

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    @property
    def save_dir(self) -> str:
        return str(self.run_dir)

    @property
    def log_dir(self) -> str:
        return str(self.run_dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Hyper-parameters live in the run's ``config.yaml``; nothing to do."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        row = {k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}
        row["step"] = step
        self._rows.append(row)

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.is_file():
            return [], []
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def _write(self, header: list[str], rows: list[dict[str, Any]]) -> None:
        with atomic_write(self.path, "w") as f:
            out = csv.DictWriter(f, fieldnames=header, lineterminator="\n", extrasaction="ignore")
            out.writeheader()
            out.writerows(rows)

    @rank_zero_only
    def save(self) -> None:
        if not self._rows:
            return
        header, old = self._read()
        new_keys = [k for row in self._rows for k in row if k not in header]
        header = header + list(dict.fromkeys(new_keys))
        if "epoch" in header:  # epoch and step first, as people read them
            header = ["epoch", "step"] + [k for k in header if k not in ("epoch", "step")]
        rows = old + [{k: ("" if v is None else v) for k, v in r.items()} for r in self._rows]
        self._write(header, rows)
        self._rows = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    @rank_zero_only
    def truncate(self, from_epoch: int, from_step: int) -> None:
        """Drop rows with ``epoch >= from_epoch`` (or, without an epoch, ``step >= from_step``)."""
        self._rows = []
        header, rows = self._read()

        def keep(row: dict[str, str]) -> bool:
            epoch, step = row.get("epoch", ""), row.get("step", "")
            if epoch not in ("", None):
                return float(epoch) < from_epoch
            if step not in ("", None):
                return float(step) < from_step
            return True

        kept = [r for r in rows if keep(r)]
        if len(kept) != len(rows):
            self._write(header, kept)


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


def build_loggers(run: RunConfig, run_dir: Path, command: str = "eolab") -> list[Logger]:
    """The loggers ``run.log`` names: csv, tensorboard, mlflow, wandb (the last two optional)."""
    loggers: list[Logger] = []
    for name in run.log:
        if name == "csv":
            loggers.append(RunCSVLogger(run_dir))
        elif name == "tensorboard":
            loggers.append(
                TensorBoardLogger(
                    save_dir=run_dir, name="tensorboard", version="", default_hp_metric=False
                )
            )
        elif name == "mlflow":
            try:
                from lightning.pytorch.loggers import MLFlowLogger

                uri = run.log_uri
                if not uri:  # a local file store shared by the runs of one output folder
                    uri = (Path(run.output_dir).resolve() / "mlruns").as_uri()
                    # MLflow 3 keeps its file store in maintenance mode and refuses it unless told
                    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
                loggers.append(
                    MLFlowLogger(
                        experiment_name=command,
                        run_name=run.name or Path(run_dir).name,
                        tracking_uri=uri,
                    )
                )
            except ModuleNotFoundError as exc:
                raise UserError(
                    f"run.log: mlflow needs the mlflow package ({exc}); install it with "
                    "'uv sync --extra mlflow' or drop mlflow from --log"
                ) from None
        elif name == "wandb":
            try:
                from lightning.pytorch.loggers import WandbLogger

                loggers.append(
                    WandbLogger(
                        project=run.log_uri or command,
                        name=run.name or Path(run_dir).name,
                        save_dir=str(run_dir),
                    )
                )
            except ModuleNotFoundError as exc:
                raise UserError(
                    f"run.log: wandb needs the wandb package ({exc}); install it with "
                    "'uv sync --extra wandb' or drop wandb from --log"
                ) from None
    return loggers


def _torchrun_topology() -> tuple[int, int] | None:
    """(devices per node, nodes) from torchrun's environment, or None outside torchrun."""
    if not TorchElasticEnvironment.detect():
        return None
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    world = int(os.environ.get("WORLD_SIZE", local_world))
    return local_world, max(1, world // local_world)


def _limit(value: float) -> float | int:
    return int(value) if value > 1 else float(value)


def build_trainer(
    run: RunConfig,
    optim: OptimConfig,
    run_dir: str | os.PathLike,
    monitor: str,
    mode: Literal["max", "min"],
    extra_callbacks: Iterable[L.Callback] = (),
    command: str = "eolab",
    **trainer_kwargs: Any,
) -> L.Trainer:
    """A :class:`lightning.Trainer` wired for an eolab run folder.

    Loggers from ``run.log``; callbacks: :class:`~lightning.pytorch.callbacks.ModelCheckpoint`
    (``checkpoints/best.ckpt`` by ``monitor``/``mode``, ``checkpoints/last.ckpt`` every validation),
    EarlyStopping on ``monitor`` (unless ``optim.early_stop_patience`` is 0), :class:`NaNGuard`,
    :class:`FiniteMonitor` (a NaN ``monitor`` fails the run), :class:`EpochSeed` and
    :class:`PlateauResume` (exact resume), LearningRateMonitor, a progress bar (``run.progress``), plus
    ``extra_callbacks``. Gradient clipping, accumulation, epochs, batch limits, validation interval,
    time budget, precision, devices, nodes and strategy come from the two config groups. Under
    ``torchrun`` with ``devices auto`` the device and node counts are taken from torchrun.

    Args:
        run, optim: the ``run`` and ``optim`` groups of the command's config.
        run_dir: the run folder.
        monitor: logged metric for the best checkpoint and early stopping, e.g. ``"val/mcc"``.
        mode: ``"min"`` if lower ``monitor`` is better, else ``"max"``.
        extra_callbacks: further callbacks (plots, samplers, the sweep pruner, ...).
        command: the command's name (MLflow experiment, W&B project).
        **trainer_kwargs: overrides of other :class:`lightning.Trainer` arguments.
    """
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    run_dir = Path(run_dir)
    devices = parse_devices(run.devices)
    num_nodes = run.num_nodes
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
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # last.ckpt at every validation: Lightning 2.6's save_last only refreshes it when best.ckpt
    # improves, so --resume would restart from the best epoch instead of the latest one
    latest = ModelCheckpoint(
        dirpath=run_dir / CHECKPOINT_DIR,
        filename=LAST_NAME,
        monitor=None,
        save_top_k=1,
        enable_version_counter=False,
    )
    callbacks: list[L.Callback] = [
        checkpoint,
        latest,
        NaNGuard(max_bad_steps=optim.max_bad_steps),
        FiniteMonitor(monitor),
        EpochSeed(run.seed),
        PlateauResume(),
        LearningRateMonitor(),
        _RunFiles(),
    ]
    progress = bool(trainer_kwargs.pop("enable_progress_bar", run.progress))
    if progress:  # redraw every batch on a terminal; in log files (CI, nohup) every 20 batches
        callbacks.append(TQDMProgressBar(refresh_rate=1 if sys.stderr.isatty() else 20))
    if optim.early_stop_patience > 0:
        callbacks.append(
            EarlyStopping(monitor=monitor, mode=mode, patience=optim.early_stop_patience)
        )
    callbacks.extend(extra_callbacks)

    kwargs: dict[str, Any] = {
        "default_root_dir": run_dir,
        "max_epochs": optim.epochs,
        "accelerator": run.accelerator,
        "devices": devices,
        "num_nodes": num_nodes,
        "strategy": run.strategy,
        "precision": run.precision,
        "gradient_clip_val": optim.grad_clip or None,
        "gradient_clip_algorithm": "norm",
        "accumulate_grad_batches": optim.accumulate_grad_batches,
        "limit_train_batches": _limit(optim.limit_train_batches),
        "limit_val_batches": _limit(optim.limit_val_batches),
        "callbacks": callbacks,
        "logger": build_loggers(run, run_dir, command),
        "log_every_n_steps": 10,
        "enable_progress_bar": progress,
    }
    if optim.val_every_n_steps:
        kwargs["val_check_interval"] = optim.val_every_n_steps * optim.accumulate_grad_batches
        kwargs["check_val_every_n_epoch"] = None
    if run.time_budget_s:
        kwargs["max_time"] = {"seconds": float(run.time_budget_s)}
    kwargs.update(trainer_kwargs)
    return L.Trainer(**kwargs)


def best_epoch_metrics(
    metrics_csv: str | os.PathLike, monitor: str, mode: str
) -> tuple[int | None, dict[str, float]]:
    """(best epoch, every metric logged at that epoch) from a run's ``metrics.csv``.

    Rows of one epoch (training and validation are logged separately) are merged.
    """
    path = Path(metrics_csv)
    if not path.is_file():
        return None, {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_epoch: dict[int, dict[str, float]] = {}
    for row in rows:
        if row.get("epoch") in ("", None):
            continue
        epoch = int(float(row["epoch"]))
        merged = by_epoch.setdefault(epoch, {})
        for key, value in row.items():
            if key in ("epoch", "step") or value in ("", None):
                continue
            try:
                merged[key] = float(value)
            except ValueError:
                continue
    scored = [(e, m[monitor]) for e, m in by_epoch.items() if monitor in m]
    if not scored:
        return None, {}
    pick = max if mode == "max" else min
    epoch = pick(scored, key=lambda t: (t[1], -t[0]) if mode == "max" else (t[1], t[0]))[0]
    return epoch, by_epoch[epoch]


def device_description(trainer: L.Trainer | None = None) -> str:
    """``"cuda:0 NVIDIA H200 (bf16-mixed)"`` or ``"cpu (2 threads, 32)"`` for summary.json."""
    root = getattr(trainer, "strategy", None)
    device = getattr(root, "root_device", None) if root is not None else None
    precision = f", {trainer.precision}" if trainer is not None else ""
    if device is not None and device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)} x{trainer.world_size}{precision}"
    return f"cpu ({torch.get_num_threads()} threads{precision})"


def fit_run(
    task: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: Any,
    *,
    command: str,
    monitor: str,
    mode: Literal["max", "min"],
    headline: Sequence[str] = (),
    extra_callbacks: Iterable[L.Callback] = (),
    extra: Mapping[str, Any] | None = None,
    plot_metrics: Sequence[str] = ("loss",),
    **trainer_kwargs: Any,
) -> dict[str, Any]:
    """Train one run the eolab way and return its ``summary.json`` record.

    1. seeds everything from ``cfg.run.seed`` (and sets ``cfg.run.threads``);
    2. checks the inputs (``datamodule.check_inputs()`` when the data module has it) *before* the
       run folder is touched, so a bad input never costs an existing run anything;
    3. opens the run folder by the rerun rule (``--resume`` continues from ``last.ckpt``,
       ``--overwrite`` replaces the old run now that the inputs are fine);
    4. fits; on a failure or interruption ``summary.json`` says ``failed`` / ``interrupted`` with
       the error, and the exception goes on to the command layer;
    5. writes ``summary.json`` with the best epoch's ``headline`` metrics (every ``val/*`` metric of
       that epoch when ``headline`` is empty) and ``training_curves.png``.

    Args:
        task: the LightningModule.
        datamodule: the LightningDataModule.
        cfg: the command's config (with ``run`` and ``optim`` groups).
        command: the command's name (``glacier-train``), recorded in ``summary.json``.
        monitor, mode: the selection metric (``"val/mcc"``, ``"max"``).
        headline: metric names for ``summary.json``'s ``metrics``.
        extra_callbacks: further Lightning callbacks.
        extra: package-specific entries for ``summary.json``'s ``extra``.
        plot_metrics: metric stems for ``training_curves.png`` (``"loss"``, ``"psnr"``).
        **trainer_kwargs: overrides of :class:`lightning.Trainer` arguments.
    """
    run, optim = cfg.run, cfg.optim
    if run.threads:
        torch.set_num_threads(run.threads)
    seed_everything(run.seed)
    folder = RunFolder.plan(cfg, command)
    check = getattr(datamodule, "check_inputs", None)
    if callable(check):
        check()
    rank0 = global_rank_from_env() == 0
    run_dir = folder.open() if rank0 else folder.path
    ckpt_path = None
    last = run_dir / CHECKPOINT_DIR / f"{LAST_NAME}.ckpt"
    if folder.mode == "resume":
        if last.is_file():
            ckpt_path = str(last)
        elif rank0:
            print(f"{command}: no {last} yet: starting the run from epoch 0", file=sys.stderr)
    from ..sweep.pruning import trial_callbacks  # the sweep's pruning callback; [] outside a sweep

    callbacks = [*extra_callbacks, *trial_callbacks()]
    trainer = build_trainer(
        run, optim, run_dir, monitor, mode, callbacks, command=command, **trainer_kwargs
    )
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    except BaseException as exc:
        if rank0:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            folder.finish(status=status, error=f"{type(exc).__name__}: {exc}"[:2000])
        raise
    if not rank0:
        return {}
    if trainer.interrupted:
        folder.finish(status="interrupted", error="interrupted; rerun with --resume to continue")
        raise KeyboardInterrupt
    best_epoch, at_best = best_epoch_metrics(run_dir / "metrics.csv", monitor, mode)
    names = list(headline) or [k for k in at_best if k.startswith("val/")]
    metrics = {k: at_best[k] for k in names if k in at_best}
    best = run_dir / CHECKPOINT_DIR / f"{BEST_NAME}.ckpt"
    if not best.is_file():  # stopped (time budget) before any validation
        trainer.save_checkpoint(last)
        best = last
    paths = {
        "best_checkpoint": best,
        "last_checkpoint": last,
        "metrics_csv": run_dir / "metrics.csv",
    }
    try:
        from ..viz import plot_training_curves

        plot_training_curves(
            run_dir / "metrics.csv", run_dir / "training_curves.png", metrics=list(plot_metrics)
        )
        paths["training_curves"] = run_dir / "training_curves.png"
    except Exception as exc:  # noqa: BLE001 - a missing plot must not fail a finished training
        print(f"{command}: training curves not plotted: {exc}", file=sys.stderr)
    return folder.finish(
        metrics=metrics,
        paths=paths,
        best_epoch=best_epoch,
        epochs_run=int(trainer.current_epoch),
        monitor=monitor,
        device=device_description(trainer),
        extra=dict(extra or {}),
    )


def load_checkpoint(path: str | os.PathLike, *, expect_keys: Sequence[str] = ()) -> dict[str, Any]:
    """``torch.load`` a checkpoint with one clear error for a missing, truncated or foreign file.

    Args:
        path: the ``.ckpt`` / ``.pt`` file.
        expect_keys: top-level keys it must have (``("state_dict", "hyper_parameters")``).

    Raises:
        CheckpointError: the file is missing, cannot be read as a torch checkpoint (truncated,
            corrupt, not a checkpoint) or lacks an expected key.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError("checkpoint not found", path=file)
    try:
        data = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch raise many kinds here
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"not a readable torch checkpoint (truncated or corrupt?): {reason}", path=file
        ) from None
    if expect_keys:
        if not isinstance(data, dict):
            raise CheckpointError(
                f"expected a checkpoint dict, got {type(data).__name__}", path=file
            )
        missing = [k for k in expect_keys if k not in data]
        if missing:
            raise CheckpointError(
                f"not a Lightning checkpoint of this kind: no {missing}", path=file
            )
    return data


__all__ += ["load_checkpoint"]
