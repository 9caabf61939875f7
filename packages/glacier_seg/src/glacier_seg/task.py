"""``GlacierTask``: the LightningModule of ``glacier-train`` (U-Net, weighted loss, competition MCC).

Its constructor takes plain dicts (``model``, ``loss``, ``data``) so that a checkpoint alone rebuilds the
network and its input pipeline; checkpoints of every release of ``glacier-train`` load with
:meth:`GlacierTask.load_from_checkpoint` (tested with one kept from the first release).
"""

from __future__ import annotations

from typing import Any

import torch
from eo_common.losses import signed_distance_map
from eo_common.metrics import SegmentationMetrics
from eo_common.training import EOModule
from torch import Tensor

from glacier_seg.config import CLASS_NAMES, LossConfig
from glacier_seg.layout import IGNORE_INDEX
from glacier_seg.model import build_loss, build_model, model_config_from_hparams, padded_forward
from glacier_seg.sampling import cutmix_batch, mixup_batch

__all__ = ["GlacierTask", "loss_config_from_hparams"]


def loss_config_from_hparams(loss: dict[str, Any]) -> LossConfig:
    """:class:`LossConfig` from a checkpoint's ``loss`` hyper-parameters (lists or tuples)."""
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in loss.items()}
    return LossConfig(**values)


class GlacierTask(EOModule):
    """U-Net + weighted loss + streaming competition MCC.

    Args:
        model: the ``model`` group as a dict plus ``in_channels`` and ``num_classes``
            (:func:`glacier_seg.model.model_hparams`).
        loss: the ``loss`` group as a dict.
        data: GLCM setting, fitted normaliser and split
            (:meth:`glacier_seg.data.GlacierDataModule.hparams_data`).
        mixup, mixup_alpha, cutmix, cutmix_alpha: batch mixing.
        seed: seed of the mixing generator.
        **optim: ``lr``, ``weight_decay``, ``lr_scheduler``, ``warmup_epochs``, ``max_epochs``,
            ``T_0``, ``T_mult``, ``min_lr``, ``lr_patience``, ``monitor``, ``mode``
            (:meth:`eo_common.config.OptimConfig.hparams`).

    Batches: ``{"image": (B, C, H, W), "mask": (B, H, W) long, 255 = invalid}``. Logged:
    ``{stage}/loss``, ``{stage}/loss_{term}``, ``val/mcc``, ``val/kappa``, ``val/accuracy``,
    ``val/per_class/<name>/iou`` and ``/f1`` ...; invalid pixels count nowhere.
    """

    def __init__(
        self,
        model: dict[str, Any],
        loss: dict[str, Any],
        data: dict[str, Any] | None = None,
        mixup: bool = False,
        mixup_alpha: float = 0.4,
        cutmix: bool = False,
        cutmix_alpha: float = 1.0,
        seed: int = 0,
        **optim: Any,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model_cfg, self.in_channels, self.num_classes = model_config_from_hparams(model)
        self.loss_cfg = loss_config_from_hparams(loss)
        self.net = build_model(self.model_cfg, self.in_channels, self.num_classes)
        self.criterion = build_loss(self.loss_cfg, self.num_classes)
        for stage in ("train", "val", "test"):
            metric = SegmentationMetrics(
                self.num_classes, ignore_index=IGNORE_INDEX, class_names=CLASS_NAMES
            )
            setattr(self, f"{stage}_metrics", metric)
        self.mix_generator = torch.Generator().manual_seed(seed)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) normalised channels -> (B, 4, H, W) logits (any H, W)."""
        return padded_forward(self.net, x)

    def _loss(self, logits: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        kwargs: dict[str, Any] = {}
        if self.loss_cfg.boundary_weight:
            dist = signed_distance_map(target, self.num_classes, ignore_index=IGNORE_INDEX)
            kwargs["boundary"] = (logits, dist.to(logits))
        return self.criterion(logits, target, **kwargs)

    def compute_losses(
        self, batch: dict[str, Tensor], stage: str
    ) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        images, masks = batch["image"], batch["mask"]
        hp = self.hparams
        if stage == "train" and (hp.cutmix or hp.mixup):
            use_cutmix = hp.cutmix and (
                not hp.mixup or bool(torch.rand(1, generator=self.mix_generator) < 0.5)
            )
            if use_cutmix:
                images, masks = cutmix_batch(images, masks, hp.cutmix_alpha, self.mix_generator)
            else:
                images, masks_a, masks_b, lam = mixup_batch(
                    images, masks, hp.mixup_alpha, self.mix_generator
                )
                logits = self(images)
                total_a, parts_a = self._loss(logits, masks_a)
                total_b, parts_b = self._loss(logits, masks_b)
                parts = {k: lam * parts_a[k] + (1 - lam) * parts_b[k] for k in parts_a}
                return lam * total_a + (1 - lam) * total_b, parts, logits.detach()
        logits = self(images)
        total, parts = self._loss(logits, masks)
        return total, parts, logits.detach()

    def update_metrics(self, stage: str, batch: dict[str, Tensor], outputs: Tensor) -> None:
        if stage == "train" and (self.hparams.cutmix or self.hparams.mixup):
            return  # mixed targets: no meaningful training confusion matrix
        getattr(self, f"{stage}_metrics").update(outputs, batch["mask"])
