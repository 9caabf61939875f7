"""Loss terms of stages 2 and 3 (each an ``nn.Module``, combined by :class:`eo_common.losses.WeightedSum`).

* Stage 2: ``w_l1 * L1 + w_msssim * (1 - MS-SSIM) + w_lpips * LPIPS`` on opt_v2 vs the real S2.
  MS-SSIM uses three scales (120 px tiles are too small for the usual five with an 11 px window):
  the first three of the standard exponents (0.0448, 0.2856, 0.3001), **renormalised here to sum 1**
  (:data:`MSSSIM_BETAS`, 0.0711, 0.4530, 0.4760) before they go to torchmetrics, which uses exponents
  as given; so MS-SSIM is 1 for identical images and a proper weighted geometric mean of the scales
  otherwise (exponents summing to 0.63 would shrink ``1 - MS-SSIM``). data_range 1, ReLU-normalised
  contrast terms (stable early in training). LPIPS runs on B04, B03, B02 with backbone weights from a
  local file (:func:`eo_common.metrics.build_lpips`); without a file the term is off and the run log
  says so.
* Stage 3: ``w_l1 * L1(opt_v3, target) + w_edge * SAR-edge disagreement(opt_v3, S1)
  + w_cycle * L1(P(opt_v3), S1)`` where ``P`` is the light opt->SAR network
  (:class:`gac_pipeline.model.CycleSARPredictor`). ``P`` learns from the real pairs
  (``w_cycle * L1(P(target), S1)``, added to the loss) and is applied to opt_v3 with its weights
  detached, so the cycle term moves opt_v3 and never teaches ``P`` to accept bad images.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from eo_common.losses import L1Loss, WeightedSum
from torch import Tensor, nn
from torch.func import functional_call

from gac_pipeline.data import RGB_INDICES
from gac_pipeline.evaluate import sar_edge_disagreement

__all__ = [
    "MSSSIMLoss",
    "LPIPSLoss",
    "SAREdgeLoss",
    "CycleLoss",
    "build_stage2_loss",
    "build_stage3_loss",
]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


_STANDARD_BETAS = (0.0448, 0.2856, 0.3001)  # Wang et al. 2003, the first three of five scales
MSSSIM_BETAS = tuple(b / sum(_STANDARD_BETAS) for b in _STANDARD_BETAS)
"""Exponents of the three MS-SSIM scales, summing to 1."""


class MSSSIMLoss(nn.Module):
    """``1 - MS-SSIM`` (torchmetrics, 3 scales, data_range 1) of (B, C, H, W) images, H, W >= 41.

    Example:
        >>> x = torch.rand(1, 3, 64, 64)
        >>> float(MSSSIMLoss()(x, x)) < 1e-5
        True
    """

    def __init__(self, data_range: float = 1.0, kernel_size: int = 11):
        super().__init__()
        self.data_range = data_range
        self.kernel_size = kernel_size

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        from torchmetrics.functional.image import (
            multiscale_structural_similarity_index_measure as msssim,
        )

        value = msssim(
            pred.float(), target.float(), data_range=self.data_range, kernel_size=self.kernel_size,
            betas=MSSSIM_BETAS, normalize="relu",
        )  # fmt: skip
        return 1.0 - value


class LPIPSLoss(nn.Module):
    """LPIPS on the RGB bands (B04, B03, B02), inputs in [0, 1]; backbone weights from a local file."""

    def __init__(self, weights_path: str | Path, net: str = "alex"):
        super().__init__()
        from eo_common.metrics import build_lpips

        self.lpips = build_lpips(weights_path, net)
        self.lpips.requires_grad_(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        rgb = list(RGB_INDICES)
        x = pred[:, rgb].float().clamp(0, 1)
        y = target[:, rgb].float().clamp(0, 1)
        return self.lpips(x, y, normalize=True).mean()


class SAREdgeLoss(nn.Module):
    """Mean SAR-edge disagreement of an optical image with the SAR (see :mod:`gac_pipeline.evaluate`).

    Tiles whose score is undefined (NaN: no usable pixels, e.g. the SAR entirely missing) are left out
    of the mean; a batch of only such tiles gives 0 (the term has nothing to say about them).
    """

    def forward(self, pred: Tensor, s1: Tensor) -> Tensor:
        scores = sar_edge_disagreement(pred, s1)
        finite = torch.isfinite(scores)
        if not bool(finite.any()):
            return pred.new_zeros(())
        return scores[finite].mean()


class CycleLoss(nn.Module):
    """Cycle consistency through a light opt->SAR predictor ``P``.

    ``forward(pred, target, s1) = L1(P_frozen(pred), s1) + L1(P(target), s1)``: the first term (weights of
    ``P`` detached) pulls the prediction towards images from which the SAR can be re-predicted; the second
    trains ``P`` on the real pairs.
    """

    def __init__(self, predictor: nn.Module):
        super().__init__()
        self.predictor = predictor

    def forward(self, pred: Tensor, target: Tensor, s1: Tensor) -> Tensor:
        frozen = {k: v.detach() for k, v in self.predictor.named_parameters()}
        frozen.update(dict(self.predictor.named_buffers()))
        cycle = (functional_call(self.predictor, frozen, (pred.float(),)) - s1).abs().mean()
        fit = (self.predictor(target.float()) - s1).abs().mean()
        return cycle + fit


def build_stage2_loss(
    l1_weight: float = 1.0,
    msssim_weight: float = 0.2,
    lpips_weight: float = 0.1,
    lpips_weights: str | Path | None = None,
    log=None,
) -> WeightedSum:
    """``WeightedSum`` of L1, MS-SSIM and (only with a local weights file) LPIPS."""
    terms: dict[str, tuple[nn.Module, float]] = {
        "l1": (L1Loss(), l1_weight),
        "msssim": (MSSSIMLoss(), msssim_weight),
    }
    if lpips_weights is not None and lpips_weight > 0:
        terms["lpips"] = (LPIPSLoss(lpips_weights), lpips_weight)
    elif lpips_weight > 0:
        (log or _stderr)(
            "LPIPS loss term is OFF: no --lpips_weights file given (its ImageNet backbone cannot be downloaded)"
        )
    return WeightedSum(terms)


def build_stage3_loss(
    predictor: nn.Module,
    l1_weight: float = 1.0,
    edge_weight: float = 0.1,
    cycle_weight: float = 0.1,
) -> WeightedSum:
    """``WeightedSum`` of L1 to the target, SAR-edge disagreement and cycle consistency.

    Call as ``loss(l1=(pred, target), edge=(pred, s1), cycle=(pred, target, s1))``.
    """
    return WeightedSum(
        {
            "l1": (L1Loss(), l1_weight),
            "edge": (SAREdgeLoss(), edge_weight),
            "cycle": (CycleLoss(predictor), cycle_weight),
        }
    )
