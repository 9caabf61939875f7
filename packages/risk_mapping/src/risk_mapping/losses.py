r"""The risk loss: focal (or cross-entropy) with optional label smoothing, plus ``coral_weight`` x CORAL.

.. math::
    L = (1 - \varepsilon)\,L_\text{focal}(\gamma, \alpha) + \varepsilon\,\frac{1}{N}\sum_{i}\frac{1}{K}
        \sum_k -\log p_{ik} \;+\; w_\text{coral}\,L_\text{CORAL}

over the N pixels whose label is not 255. With ``gamma = 0``, no class weights and smoothing
``eps`` this is exactly ``torch.nn.functional.cross_entropy(..., label_smoothing=eps,
ignore_index=255)``; ``eolab``'s :func:`eo_common.losses.focal_loss` has no label smoothing, so the
smoothing term is added here. ``use_focal_loss: false`` means ``gamma = 0`` (weighted cross-entropy).

Example:
    >>> loss = RiskLoss(gamma=0.0, coral_weight=0.0)
    >>> logits = torch.zeros(1, 3, 1, 2); coral = torch.zeros(1, 2, 1, 2)
    >>> total, parts = loss({"logits": logits, "coral_logits": coral}, torch.tensor([[[0, 255]]]))
    >>> round(float(total), 4)  # log(3)
    1.0986
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from eo_common.losses import CoralLoss, focal_loss
from torch import Tensor, nn

from risk_mapping.config import IGNORE_INDEX, NUM_CLASSES, TrainingConfig

__all__ = ["RiskLoss", "build_loss"]


class RiskLoss(nn.Module):
    """Focal/CE + label smoothing + CORAL; ``forward(outputs, target) -> (total, parts)``.

    Args:
        gamma: focal exponent (0 = cross-entropy).
        class_weights: per-class alpha ``(3,)`` or None.
        label_smoothing: epsilon in [0, 1).
        coral_weight: weight of the CORAL term (0 or ``use_ordinal=False`` drops it).
        use_ordinal: add the CORAL term.

    Shapes: ``outputs["logits"]`` ``(B, 3, H, W)``, ``outputs["coral_logits"]`` ``(B, 2, H, W)``,
    ``target`` ``(B, H, W)`` long with 255 = ignore.
    """

    def __init__(
        self,
        gamma: float = 2.0,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        coral_weight: float = 0.5,
        use_ordinal: bool = True,
    ):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.gamma = float(gamma)
        weights = (
            None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        )
        self.register_buffer("class_weights", weights, persistent=False)
        self.label_smoothing = float(label_smoothing)
        self.coral_weight = float(coral_weight) if use_ordinal else 0.0
        self.coral = CoralLoss(NUM_CLASSES, ignore_index=IGNORE_INDEX)

    def forward(
        self, outputs: dict[str, Tensor], target: Tensor
    ) -> tuple[Tensor, dict[str, Tensor]]:
        logits = outputs["logits"]
        parts: dict[str, Tensor] = {}
        main = focal_loss(logits, target, self.class_weights, self.gamma, IGNORE_INDEX)
        total = main
        parts["focal" if self.gamma > 0 else "ce"] = main.detach()
        if self.label_smoothing > 0:
            valid = target != IGNORE_INDEX
            uniform = -F.log_softmax(logits, dim=1).mean(dim=1)
            smooth = (uniform * valid).sum() / valid.sum().clamp_min(1)
            total = (1 - self.label_smoothing) * main + self.label_smoothing * smooth
            parts["smoothing"] = smooth.detach()
        if self.coral_weight > 0:
            coral = self.coral(outputs["coral_logits"], target)
            total = total + self.coral_weight * coral
            parts["coral"] = coral.detach()
        return total, parts


def build_loss(cfg: TrainingConfig) -> RiskLoss:
    """:class:`RiskLoss` from the ``training`` config section."""
    return RiskLoss(
        gamma=cfg.focal_gamma if cfg.use_focal_loss else 0.0,
        class_weights=cfg.class_weights,
        label_smoothing=cfg.label_smoothing,
        coral_weight=cfg.coral_weight,
        use_ordinal=cfg.use_ordinal_loss,
    )
