"""The Lightning module: model + losses + metrics + hard-example bookkeeping.

Logged per epoch (``EOModule`` conventions): ``{stage}/loss``, ``{stage}/loss_<term>`` for every
switched-on loss term, ``{stage}/psnr``, ``{stage}/ssim``, ``{stage}/sam_deg``, ``{stage}/mae``,
``{stage}/rmse``; on validation also ``val/identity_psnr`` etc. (the cloudy input scored as if it
were the prediction) and ``val/psnr_gain`` (model minus identity, dB).

Metrics are computed in the normalised optical space with ``data_range`` = the convention's range
(1 for GLF-CR), predictions clamped to [0, data_range]; SSIM uses an 11 x 11 Gaussian window with
sigma 1.5 and crops the border (scikit-image convention), SAM is reported in degrees.
"""

from __future__ import annotations

from typing import Any

import torch
from eo_common.config import config_to_dict
from eo_common.metrics import ImageQualityMetrics
from eo_common.normalize import S2_CONVENTIONS
from eo_common.training import EOModule
from torch import Tensor

from .config import LossConfig, ModelConfig
from .losses import CloudRemovalLoss
from .model import CloudRemovalOutput, build_model

__all__ = ["CloudRemovalTask", "data_range_of"]


def data_range_of(convention: str) -> float:
    """Range of normalised S2 values: clip_max / divisor (1.0 for GLF-CR, 5.0 for DSen2-CR)."""
    key = convention.strip().lower().replace("_", "-")
    c = S2_CONVENTIONS[key]
    return float(c.clip_max / c.divisor)


def _metrics(data_range: float) -> ImageQualityMetrics:
    return ImageQualityMetrics(data_range=data_range, ssim_kernel=11, ssim_sigma=1.5)


class CloudRemovalTask(EOModule):
    """Train/validate :class:`~cloud_removal.model.CloudRemovalCrossAttention`.

    Args:
        model_name: registry name (``--model_name``).
        model_config: :class:`ModelConfig` fields as a dict.
        loss_config: :class:`LossConfig` fields as a dict.
        convention: normalisation convention (sets the metric ``data_range``).
        optimizer, lr, weight_decay, lr_scheduler, warmup_epochs, max_epochs, lr_patience, T_0,
            T_mult, min_lr: optimiser settings read by :meth:`EOModule.configure_optimizers`
            (``eo_common.config.OptimConfig.hparams()``; the plateau scheduler watches val/psnr).

    Checkpoints of release 0.1.0 (``tests/data/cr_train_v0.1.0.ckpt``) carry a subset of these
    hyper-parameters and load unchanged; the missing ones take the defaults here.
    """

    def __init__(
        self,
        model_name: str = "CrossAttention",
        model_config: dict[str, Any] | None = None,
        loss_config: dict[str, Any] | None = None,
        convention: str = "glf-cr",
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        lr_scheduler: str = "cosine",
        lr_patience: int = 5,
        warmup_epochs: int = 0,
        max_epochs: int | None = None,
        T_0: int = 10,
        T_mult: int = 1,
        min_lr: float = 0.0,
        monitor: str = "val/psnr",
        mode: str = "max",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = ModelConfig(**(model_config or {}))
        self.loss_config = LossConfig(**(loss_config or {}))
        self.model = build_model(model_name, self.model_config)
        self.criterion = CloudRemovalLoss(self.loss_config)
        self.data_range = data_range_of(convention)
        self.train_metrics = _metrics(self.data_range)
        self.val_metrics = _metrics(self.data_range)
        self.val_identity_metrics = _metrics(self.data_range)
        self.test_metrics = _metrics(self.data_range)
        self.sample_psnr: dict[int, float] = {}

    @classmethod
    def from_configs(
        cls, model_config: ModelConfig, loss_config: LossConfig, **kwargs: Any
    ) -> CloudRemovalTask:
        """A task from the typed ``model`` and ``loss`` groups (stored as plain dicts in hparams)."""
        return cls(
            model_config=config_to_dict(model_config),
            loss_config=config_to_dict(loss_config),
            **kwargs,
        )

    def forward(self, optical: Tensor, sar: Tensor) -> CloudRemovalOutput:
        return self.model(optical, sar)

    def compute_losses(self, batch: dict, stage: str):
        out = self(batch["optical"], batch["sar"])
        total, parts = self.criterion(out, batch)
        if stage == "train":
            with torch.no_grad():
                pred = out.prediction.detach().float().clamp(0, self.data_range)
                mse = (pred - batch["target"].float()).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-12)
                psnr = 10 * torch.log10(self.data_range**2 / mse)
                for i, v in zip(batch["index"].tolist(), psnr.tolist()):
                    self.sample_psnr[int(i)] = float(v)
        return total, parts, out

    def update_metrics(self, stage: str, batch: dict, outputs: CloudRemovalOutput) -> None:
        pred = outputs.prediction.float().clamp(0, self.data_range)
        target = batch["target"].float()
        getattr(self, f"{stage}_metrics").update(pred, target)
        if stage == "val":
            self.val_identity_metrics.update(
                batch["optical"].float().clamp(0, self.data_range), target
            )

    def compute_metrics(self, stage: str) -> dict[str, Any]:
        out = dict(super().compute_metrics(stage))
        if stage == "val" and self.val_identity_metrics.update_count:
            ident = self.val_identity_metrics.compute()
            out.update({f"identity_{k}": v for k, v in ident.items()})
            if "psnr" in out:
                out["psnr_gain"] = out["psnr"] - ident["psnr"]
        return out

    def reset_metrics(self, stage: str) -> None:
        super().reset_metrics(stage)
        if stage == "val":
            self.val_identity_metrics.reset()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        dm = getattr(self.trainer, "datamodule", None)
        sampler = getattr(dm, "sampler", None)
        if sampler is not None:
            sampler.update(self.sample_psnr)

    def on_train_start(self) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        sampler = getattr(dm, "sampler", None)
        if sampler is not None and self.sample_psnr:
            sampler.update(self.sample_psnr)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["cr_sample_psnr"] = dict(self.sample_psnr)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.sample_psnr = {
            int(k): float(v) for k, v in checkpoint.get("cr_sample_psnr", {}).items()
        }
