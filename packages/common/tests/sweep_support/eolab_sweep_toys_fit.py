"""The work of the ``toy-fit`` command: a linear regression on seeded random data, via fit_run."""

from __future__ import annotations

import lightning as L
import torch
from eo_common.training import EOModule, fit_run
from torch.utils.data import DataLoader, TensorDataset


class RegressionData(L.LightningDataModule):
    def __init__(self, samples: int, features: int, batch_size: int, seed: int, nan: bool):
        super().__init__()
        g = torch.Generator().manual_seed(1234)  # the data set is fixed; the seed varies training
        x = torch.randn(samples, features, generator=g)
        w = torch.linspace(-1.0, 1.0, features)
        y = x @ w[:, None] + 0.05 * torch.randn(samples, 1, generator=g)
        if nan:
            x[::2] = float("nan")
        cut = int(0.8 * samples)
        self.train_set = TensorDataset(x[:cut], y[:cut])
        self.val_set = TensorDataset(x[cut:], y[cut:])
        self.batch_size, self.seed = batch_size, seed

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=64)


class Regression(EOModule):
    def __init__(self, features: int, **hparams):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Linear(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B, 1)
        return self.net(x)

    def compute_losses(self, batch, stage):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        return loss, {"mse": loss}


def train(cfg) -> dict:
    data = RegressionData(
        cfg.data.samples, cfg.data.features, cfg.data.batch_size, cfg.run.seed, cfg.data.nan_inputs
    )
    task = Regression(cfg.data.features, **cfg.optim.hparams())
    return fit_run(
        task, data, cfg, command="toy-fit", monitor="val/loss", mode="min", headline=("val/loss",)
    )
