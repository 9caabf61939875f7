"""A tiny regression task in the shape of an eolab training command (for eo_common's training tests).

* :class:`TinyRegressor` -- two 3x3 convolutions ``(B, 1, 8, 8) -> (B, 1, 8, 8)``, optional dropout
  and BatchNorm; loss L1 + MSE; streaming MSE/MAE validation metrics.
* :func:`make_data` -- ``x ~ N(0, 1)`` and ``y = 0.5 * roll(x) + 0.1`` (learnable in a few steps).
* :class:`ToyDataModule` -- a LightningDataModule over those tensors with ``check_inputs()``
  (NaN in the validation targets is refused: the input check a real data module does).
* :class:`ToyTrainConfig` and :func:`toy_config` -- the ``optim`` + ``run`` groups of a command.
* :func:`train` -- the work function of a command: ``fit_run`` with ``val/loss`` monitored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torchmetrics
from eo_common.command import Command
from eo_common.config import DataConfig, OptimConfig, RunConfig
from eo_common.errors import InputError
from eo_common.training import EOModule, fit_run
from torch.utils.data import DataLoader, TensorDataset

QUIET = {"enable_model_summary": False}


class TinyRegressor(EOModule):
    """Two 3x3 convolutions (B, 1, 8, 8) -> (B, 1, 8, 8); loss = L1 + MSE, MSE/MAE as metrics."""

    def __init__(
        self,
        lr: float = 1e-2,
        weight_decay: float = 1e-2,
        lr_scheduler: str = "step",
        warmup_epochs: int = 1,
        max_epochs: int = 4,
        step_size: int = 1,
        dropout: float = 0.2,
        batch_norm: bool = False,
        **hparams: Any,
    ):
        super().__init__()
        self.save_hyperparameters()
        layers: list[torch.nn.Module] = [torch.nn.Conv2d(1, 4, 3, padding=1)]
        if batch_norm:
            layers.append(torch.nn.BatchNorm2d(4))
        layers += [torch.nn.ReLU(), torch.nn.Dropout(dropout), torch.nn.Conv2d(4, 1, 3, padding=1)]
        self.net = torch.nn.Sequential(*layers)
        self.val_metrics = torchmetrics.MetricCollection(
            {"mse": torchmetrics.MeanSquaredError(), "mae": torchmetrics.MeanAbsoluteError()}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def compute_losses(self, batch, stage):
        x, y = batch
        pred = self(x)
        l1 = (pred - y).abs().mean()
        mse = ((pred - y) ** 2).mean()
        return l1 + mse, {"l1": l1, "mse": mse}

    def update_metrics(self, stage, batch, outputs):
        if stage == "val":
            self.val_metrics.update(outputs, batch[1])


def make_data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` of ``n`` samples ``(n, 1, 8, 8)``, ``y = 0.5 * roll(x, 1, -1) + 0.1``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    return x, 0.5 * x.roll(1, dims=-1) + 0.1


class ToyDataModule(L.LightningDataModule):
    """Shuffled training batches of 4, validation on the same samples in batches of 8."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4, shuffle: bool = True):
        super().__init__()
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle

    def check_inputs(self) -> None:
        if not bool(torch.isfinite(self.x).all()):
            raise InputError("toy inputs hold NaN/inf", path="toy.pt")

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(self.x, self.y)
        return DataLoader(data, batch_size=self.batch_size, shuffle=self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)


@dataclass
class ToyTrainConfig:
    """The config of the toy command; ``data.root`` is a ``torch.save``-d ``(x, y)`` (None: the
    tensors of :func:`make_data`)."""

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)


def toy_config(output_dir: Path, name: str = "tiny", **optim: Any) -> ToyTrainConfig:
    """3 epochs, lr 1e-2, 1 warmup epoch then step decay, CPU, csv log, no progress bar;
    keyword arguments override ``optim`` fields, ``run_*`` ones override ``run`` fields."""
    run = {k[len("run_") :]: v for k, v in optim.items() if k.startswith("run_")}
    optim = {k: v for k, v in optim.items() if not k.startswith("run_")}
    base = dict(epochs=3, lr=1e-2, weight_decay=1e-2, scheduler="step", warmup_epochs=1)
    base.update(optim)
    run_base = dict(
        output_dir=Path(output_dir),
        name=name,
        accelerator="cpu",
        devices="1",
        progress=False,
        log=["csv"],
    )
    run_base.update(run)
    return ToyTrainConfig(optim=OptimConfig(**base), run=RunConfig(**run_base))


def train_command(cfg: ToyTrainConfig) -> dict:
    """The work of :data:`TOY_TRAIN`: the data from ``cfg.data.root`` (or :func:`make_data`)."""
    data = None
    if cfg.data.root is not None:
        if not cfg.data.root.is_file():
            raise FileNotFoundError(2, "No such file or directory", str(cfg.data.root))
        data = torch.load(cfg.data.root, weights_only=True)
    return train(cfg, data=data)


#: a training command as a package declares one (``toy-train --output_dir ... --resume``)
TOY_TRAIN = Command(
    "toy-train",
    ToyTrainConfig,
    f"{__name__}:train_command",
    description="Train the toy regressor.",
    defaults={
        "optim.epochs": 3,
        "optim.lr": 1e-2,
        "optim.weight_decay": 1e-2,
        "optim.scheduler": "step",
        "optim.warmup_epochs": 1,
        "run.accelerator": "cpu",
        "run.devices": "1",
        "run.progress": False,
        "run.log": ["csv"],
    },
)


def toy_task(cfg: ToyTrainConfig, **kwargs: Any) -> TinyRegressor:
    return TinyRegressor(**{**cfg.optim.hparams(), "step_size": 1, **kwargs})


def train(
    cfg: ToyTrainConfig,
    task: L.LightningModule | None = None,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    **trainer_kwargs: Any,
) -> dict:
    """The work function of a toy training command: ``fit_run``, monitoring ``val/loss``."""
    x, y = data if data is not None else make_data()
    return fit_run(
        task if task is not None else toy_task(cfg),
        ToyDataModule(x, y),
        cfg,
        command="toy-train",
        monitor="val/loss",
        mode="min",
        headline=("val/loss", "val/mse", "val/mae"),
        plot_metrics=("loss", "mse"),
        **{**QUIET, **trainer_kwargs},
    )


def fit_plain(
    output_dir: Path,
    module: L.LightningModule,
    x: torch.Tensor,
    y: torch.Tensor,
    callbacks: list[L.Callback] | tuple = (),
    shuffle: bool = False,
    **overrides: Any,
) -> tuple[Path, L.Trainer]:
    """``build_trainer`` + ``trainer.fit`` on training batches of 4 only (no validation), for the
    tests of callbacks and of the module API; ``overrides`` as in :func:`toy_config`."""
    from eo_common.training import build_trainer, seed_everything

    cfg = toy_config(output_dir, **overrides)
    seed_everything(cfg.run.seed)
    run_dir = cfg.run.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    train_dl = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=shuffle)
    trainer = build_trainer(
        cfg.run,
        cfg.optim,
        run_dir,
        "train/loss",
        "min",
        extra_callbacks=list(callbacks),
        limit_val_batches=0,
        **QUIET,
    )
    trainer.fit(module, train_dl)
    return run_dir, trainer
