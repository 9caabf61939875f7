"""The LightningModule of risk_mapping: network, loss, validation kappa.

:class:`RiskModule` is an :class:`eo_common.training.EOModule`: it logs ``train/loss``,
``train/loss_focal``, ``train/loss_coral``, ``val/loss``, ``val/kappa``,
``val/per_class/medium/precision``, ... once per epoch. Validation kappa is computed over every valid
pixel of the validation tiles (one confusion matrix over the split). Its hyper-parameters make a
checkpoint self-contained: the ``model`` section, the band count and the training band statistics,
so inference needs only the checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch
from eo_common.metrics import SegmentationMetrics
from eo_common.training import EOModule

from risk_mapping.config import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, ModelConfig
from risk_mapping.losses import RiskLoss
from risk_mapping.model import build_model, class_probabilities

__all__ = ["RiskModule"]


class RiskModule(EOModule):
    """Network + loss + validation metrics.

    Args:
        model_config: the ``model`` config section as a dict.
        in_channels: stack bands.
        band_mean, band_std: training band statistics (stored so inference needs only the checkpoint).
        focal_gamma, class_weights, label_smoothing, coral_weight, use_ordinal: see :class:`RiskLoss`.
        head: which head's probabilities the validation metrics use (``softmax``/``coral``/``average``).
        pipeline_config: the resolved run config (its ``inference`` and ``evaluation`` sections are
            what ``risk-evaluate`` uses by default).
        band_names: names of the stack bands.
        **optim: ``eo_common.config.OptimConfig.hparams()`` (lr, weight_decay, lr_scheduler,
            max_epochs, ...), read by :meth:`EOModule.configure_optimizers`.

    Batches are ``(x (B, C, t, t) float32, y (B, t, t) long)``.
    """

    def __init__(
        self,
        model_config: dict[str, Any],
        in_channels: int,
        band_mean: list[float],
        band_std: list[float],
        focal_gamma: float = 2.0,
        class_weights: list[float] | None = None,
        label_smoothing: float = 0.0,
        coral_weight: float = 0.5,
        use_ordinal: bool = True,
        head: str = "softmax",
        pipeline_config: dict[str, Any] | None = None,
        band_names: list[str] | None = None,
        **optim: Any,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_model(ModelConfig(**model_config), in_channels)
        self.loss = RiskLoss(focal_gamma, class_weights, label_smoothing, coral_weight, use_ordinal)
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
