"""Train stage: Lightning training of :class:`risk_mapping.model.RiskNet` on the prepared tiles.

Training runs on :mod:`eo_common.training`: :class:`RiskModule` is an
:class:`eo_common.training.EOModule` (logs ``train/loss``, ``train/loss_focal``,
``train/loss_coral``, ``val/loss``, ``val/kappa``, ``val/per_class/medium/precision``, ... once per
epoch into ``metrics.csv``), :func:`eo_common.training.build_trainer` adds the best/last
checkpoints, early stopping on validation Cohen's kappa (``training.patience`` epochs), NaN guard and
loggers; an interrupted run continues from ``checkpoints/last.ckpt``.

One model is trained per seed of ``inference.ensemble_seeds`` (or the top-level ``seed``), each in
``<train dir>/seed<k>/``; a seed whose ``DONE.json`` exists is skipped. Validation kappa is computed
over every valid pixel of the validation tiles (one confusion matrix over the split).

Example:
    >>> ckpts = train_models(load_config("config.yaml"), "runs/risk/prepare", "runs/risk/train")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
from eo_common.io import atomic_save_json
from eo_common.metrics import SegmentationMetrics
from eo_common.normalize import BandStats
from eo_common.training import (
    EOModule,
    TrainConfig,
    build_trainer,
    prepare_run_dir,
    seed_everything,
)
from lightning.pytorch.callbacks import Timer
from torch.utils.data import DataLoader

from risk_mapping.config import (
    CLASS_NAMES,
    IGNORE_INDEX,
    NUM_CLASSES,
    ModelConfig,
    PipelineConfig,
    config_to_dict,
)
from risk_mapping.data import TileDataset, TileSet
from risk_mapping.losses import RiskLoss
from risk_mapping.model import build_model, class_probabilities

__all__ = ["RiskModule", "train_one", "train_models", "ensemble_seeds", "checkpoint_paths"]


class RiskModule(EOModule):
    """LightningModule: network, loss, validation metrics; hyper-parameters make a checkpoint self-contained.

    Args:
        model_config: the ``model`` config section as a dict.
        in_channels: stack bands.
        band_mean, band_std: training band statistics (stored so inference needs only the checkpoint).
        gamma, class_weights, label_smoothing, coral_weight, use_ordinal: see :class:`RiskLoss`.
        head: which head's probabilities the validation metrics use (``softmax``/``coral``/``average``).
        lr, weight_decay, lr_scheduler, max_epochs: read by :meth:`EOModule.configure_optimizers`.

    Batches are ``(x (B, C, t, t) float32, y (B, t, t) long)``.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        in_channels: int,
        band_mean: list[float],
        band_std: list[float],
        gamma: float = 2.0,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        coral_weight: float = 0.5,
        use_ordinal: bool = True,
        head: str = "softmax",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_scheduler: str = "cosine",
        max_epochs: int = 50,
        pipeline_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(ModelConfig(**model_config), in_channels)
        self.loss = RiskLoss(gamma, class_weights, label_smoothing, coral_weight, use_ordinal)
        self.val_metrics = SegmentationMetrics(
            NUM_CLASSES, ignore_index=IGNORE_INDEX, class_names=list(CLASS_NAMES)
        )
        self.head = head

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(x)

    def compute_losses(
        self, batch: Any, stage: str
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], Any]:
        x, y = batch
        outputs = self(x)
        total, parts = self.loss(outputs, y)
        return total, parts, outputs

    def update_metrics(self, stage: str, batch: Any, outputs: Any) -> None:
        if stage == "val":
            self.val_metrics.update(class_probabilities(outputs, self.head), batch[1])


def ensemble_seeds(cfg: PipelineConfig) -> list[int]:
    """Seeds to train: ``inference.ensemble_seeds`` or ``[seed]``."""
    return list(cfg.inference.ensemble_seeds) or [cfg.seed]


def checkpoint_paths(train_dir: str | os.PathLike, cfg: PipelineConfig) -> list[Path]:
    """Best checkpoint of every ensemble member (``seed<k>/checkpoints/best.ckpt``, else ``last.ckpt``)."""
    out = []
    for seed in ensemble_seeds(cfg):
        ckpt_dir = Path(train_dir) / f"seed{seed}" / "checkpoints"
        best = ckpt_dir / "best.ckpt"
        out.append(best if best.is_file() else ckpt_dir / "last.ckpt")
    return out


def _loader(tiles: TileSet, cfg: PipelineConfig, train: bool, seed: int) -> DataLoader:
    t = cfg.training
    aug = t.augmentation if train else None
    ds = TileDataset(tiles, aug, cfg.dataset.optical_bands if train else None)
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        ds,
        batch_size=t.batch_size,
        shuffle=train,
        num_workers=t.num_workers,
        generator=gen,
        drop_last=False,
        persistent_workers=False,
    )


def train_one(
    cfg: PipelineConfig,
    prepare_dir: str | os.PathLike,
    train_dir: str | os.PathLike,
    seed: int,
    *,
    budget_s: float | None = None,
    progress: bool = True,
) -> Path:
    """Train the model of one seed; resumes from ``last.ckpt`` after an interruption.

    Returns:
        path of the best checkpoint (by validation kappa), or ``last.ckpt`` if no validation ran.

    Raises:
        ValueError: there are no validation tiles (names ``dataset.val_fraction``).
    """
    prepare_dir, train_dir = Path(prepare_dir), Path(train_dir)
    name = f"seed{seed}"
    run_dir = train_dir / name
    done = run_dir / "DONE.json"
    if done.is_file():
        return Path(json.loads(done.read_text())["checkpoint"])
    train_tiles = TileSet.load(prepare_dir / "tiles_train.npz")
    val_tiles = TileSet.load(prepare_dir / "tiles_val.npz")
    if len(val_tiles) == 0:
        raise ValueError(
            f"{prepare_dir / 'tiles_val.npz'}: no validation tiles; early stopping on kappa needs some "
            "(raise dataset.val_fraction or lower dataset.block_size)"
        )
    stats = BandStats.load(prepare_dir / "band_stats.json")
    t = cfg.training
    tcfg = TrainConfig(
        seed=seed,
        max_epochs=t.epochs,
        lr=max(t.lr, 1e-12),
        weight_decay=t.weight_decay,
        batch_size=t.batch_size,
        num_workers=t.num_workers,
        early_stop_patience=t.patience,
        experiment_name=name,
        output_dir=train_dir,
        accelerator=t.accelerator,
        lr_scheduler=t.lr_scheduler,
    )
    seed_everything(seed)
    prepare_run_dir(train_dir, name, config_to_dict(cfg))
    module = RiskModule(
        model_config=dataclasses.asdict(cfg.model),
        in_channels=int(train_tiles.x.shape[1]),
        band_mean=stats.mean.tolist(),
        band_std=stats.std.tolist(),
        gamma=t.focal_gamma if t.use_focal_loss else 0.0,
        class_weights=t.class_weights,
        label_smoothing=t.label_smoothing,
        coral_weight=t.coral_weight,
        use_ordinal=t.use_ordinal_loss,
        head=cfg.inference.head,
        lr=t.lr,
        weight_decay=t.weight_decay,
        lr_scheduler=t.lr_scheduler,
        max_epochs=t.epochs,
        pipeline_config=config_to_dict(cfg),
    )
    budget = budget_s if budget_s is not None else t.budget_s
    extra = [Timer(duration=dt.timedelta(seconds=budget), interval="epoch")] if budget else []
    kwargs: dict[str, Any] = {"enable_progress_bar": progress, "enable_model_summary": False}
    if t.limit_train_batches:
        kwargs["limit_train_batches"] = t.limit_train_batches
    trainer = build_trainer(
        tcfg, run_dir, monitor="val/kappa", mode="max", extra_callbacks=extra, **kwargs
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    start = time.perf_counter()
    trainer.fit(
        module,
        _loader(train_tiles, cfg, True, seed),
        _loader(val_tiles, cfg, False, seed),
        ckpt_path=str(last) if last.is_file() else None,
    )
    best = run_dir / "checkpoints" / "best.ckpt"
    ckpt = best if best.is_file() else last
    if not ckpt.is_file():
        raise RuntimeError(f"{run_dir}: training ended without a checkpoint")
    _plot_curves(run_dir)
    score = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    atomic_save_json(
        {
            "checkpoint": str(ckpt),
            "best_val_kappa": None if score is None else float(score),
            "epochs_run": int(trainer.current_epoch),
            "seconds": time.perf_counter() - start,
        },
        done,
    )
    return ckpt


def _plot_curves(run_dir: Path) -> None:
    metrics_csv = run_dir / "metrics.csv"
    if not metrics_csv.is_file():
        return
    try:
        from eo_common.viz import plot_training_curves
    except ImportError:  # viz not available: curves stay in metrics.csv
        return
    try:
        plot_training_curves(
            metrics_csv,
            run_dir / "training_curves.png",
            metrics=["train/loss", "val/loss", "val/kappa"],
        )
    except (ValueError, KeyError):
        pass


def train_models(
    cfg: PipelineConfig,
    prepare_dir: str | os.PathLike,
    train_dir: str | os.PathLike,
    *,
    budget_s: float | None = None,
    progress: bool = True,
) -> list[Path]:
    """Train one model per ensemble seed (budget split evenly); returns their checkpoints."""
    seeds = ensemble_seeds(cfg)
    per_seed = None if budget_s is None else budget_s / len(seeds)
    return [
        train_one(cfg, prepare_dir, train_dir, s, budget_s=per_seed, progress=progress)
        for s in seeds
    ]
