"""Cloud-removal losses: the eo_common terms plus :class:`CloudFocusedLoss`, combined by flags.

Terms (each with a ``--use_*`` switch and a ``--*_weight`` flag; logged as ``{stage}/loss_{name}``):

================  ==================================================================  ===========
name              what                                                                default
================  ==================================================================  ===========
``l1``            :class:`eo_common.losses.L1Loss` (prediction vs clear target)        on, 1.0
``perceptual``    :class:`eo_common.losses.VGGPerceptualLoss` on B04/B03/B02            off, 0.1
``fft``           :class:`eo_common.losses.FFTLoss`                                     off, 0.1
``gradient``      :class:`eo_common.losses.GradientLoss` (Sobel)                        off, 0.1
``contrastive``   :class:`eo_common.losses.ContrastiveLoss` between the pooled optical  off, 0.05
                  and SAR bottleneck embeddings (needs batch >= 2; 0 otherwise)
``texture``       :class:`eo_common.losses.GramTextureLoss` (VGG features with           off, 0.1
                  ``--vgg_weights``, raw bands otherwise)
``cloud_focused`` :class:`CloudFocusedLoss`                                             off, 1.0
``confidence``    BCE between the predicted confidence and the sample's cloud mask      on, 0.1
================  ==================================================================  ===========

No package ships ImageNet VGG16 weights and none can be downloaded here: without ``--vgg_weights``
the perceptual term uses random VGG weights (eo_common warns), which is only useful for tests.
"""

from __future__ import annotations

import torch
from eo_common.losses import (
    ContrastiveLoss,
    FFTLoss,
    GradientLoss,
    GramTextureLoss,
    L1Loss,
    VGGPerceptualLoss,
    l1_loss,
)
from torch import Tensor, nn

from .config import LossConfig
from .model import CloudRemovalOutput

__all__ = [
    "CloudFocusedLoss",
    "cloud_focused_loss",
    "confidence_bce",
    "LossConfig",
    "CloudRemovalLoss",
]


def cloud_focused_loss(pred: Tensor, target: Tensor, cloud: Tensor, factor: float = 2.0) -> Tensor:
    r"""L1 weighted towards cloudy pixels.

    .. math::
        w = 1 + \text{factor}\cdot c, \qquad L = \frac{\sum_i w_i |p_i - t_i|}{\sum_i w_i}

    with ``c`` the cloud intensity in [0, 1] (one value per pixel, shared by the bands) and ``i``
    over all elements of (B, C, H, W).

    Args:
        pred, target: (B, C, H, W).
        cloud: (B, 1, H, W) cloud intensity in [0, 1].
        factor: extra weight of a fully cloudy pixel (>= 0).

    Example:
        >>> pred = torch.tensor([[[[1.0, 1.0]]]])
        >>> target = torch.zeros(1, 1, 1, 2)
        >>> cloud = torch.tensor([[[[1.0, 0.0]]]])
        >>> cloud_focused_loss(pred, target, cloud, factor=2.0)  # (3*1 + 1*1) / (3 + 1)
        tensor(1.)
        >>> pred = torch.tensor([[[[1.0, 0.0]]]])
        >>> cloud_focused_loss(pred, target, cloud, factor=2.0)  # 3 / 4
        tensor(0.7500)
    """
    if factor < 0:
        raise ValueError(f"cloud_weight_factor must be >= 0, got {factor}")
    if cloud.ndim != 4 or cloud.shape[1] != 1 or cloud.shape[0] != pred.shape[0]:
        raise ValueError(
            f"cloud intensity must be (B, 1, H, W) matching pred {tuple(pred.shape)}, got {tuple(cloud.shape)}"
        )
    weight = 1.0 + factor * cloud.clamp(0.0, 1.0)
    return l1_loss(pred, target, weight)


class CloudFocusedLoss(nn.Module):
    """Module form of :func:`cloud_focused_loss` (pixel weight = 1 + factor x cloud intensity)."""

    def __init__(self, factor: float = 2.0):
        super().__init__()
        if factor < 0:
            raise ValueError(f"cloud_weight_factor must be >= 0, got {factor}")
        self.factor = float(factor)

    def forward(self, pred: Tensor, target: Tensor, cloud: Tensor) -> Tensor:
        return cloud_focused_loss(pred, target, cloud, self.factor)


def confidence_bce(confidence: Tensor, cloud: Tensor, eps: float = 1e-6) -> Tensor:
    r"""Binary cross-entropy between a confidence map and a cloud mask, NaN-transparent.

    .. math::
        L = -\frac{1}{N}\sum_i \big[m_i \log c_i + (1 - m_i) \log(1 - c_i)\big],
        \qquad c = \operatorname{clamp}(\text{confidence}, \epsilon, 1 - \epsilon)

    Equal to :func:`torch.nn.functional.binary_cross_entropy` for inputs in [0, 1], but a NaN/inf
    confidence (a diverged network) gives a NaN loss instead of an exception, so the NaN guard
    (:class:`eo_common.training.NaNGuard`) can skip the step and stop the run with one clear line.
    Computed in float32 even under autocast.

    Args:
        confidence: (B, 1, H, W) predicted cloud confidence in [0, 1].
        cloud: (B, 1, H, W) cloud mask / intensity in [0, 1] (the target).
        eps: clamp of the confidence away from 0 and 1.

    Example:
        >>> c = torch.tensor([[[[0.9, 0.2]]]])
        >>> m = torch.tensor([[[[1.0, 0.0]]]])
        >>> confidence_bce(c, m)  # -(log 0.9 + log 0.8) / 2
        tensor(0.1643)
        >>> confidence_bce(torch.full_like(c, float("nan")), m)
        tensor(nan)
    """
    with torch.autocast(device_type=confidence.device.type, enabled=False):
        c = confidence.float().clamp(eps, 1 - eps)
        m = cloud.float().clamp(0, 1)
        return -(m * torch.log(c) + (1 - m) * torch.log1p(-c)).mean()


class CloudRemovalLoss(nn.Module):
    """All switched-on terms: ``forward(out, batch) -> (total, {term: unweighted value})``.

    ``out`` is a :class:`~cloud_removal.model.CloudRemovalOutput`; ``batch`` a dict with ``target``
    (B, 13, H, W) and ``cloud_mask`` (B, 1, H, W). Without a confidence map (predictor switched off),
    the ``confidence`` term is skipped.
    """

    def __init__(self, cfg: LossConfig | None = None, rgb_bands: tuple[int, int, int] = (3, 2, 1)):
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.weights = self.cfg.enabled()
        if not self.weights:
            raise ValueError("every loss term is switched off; enable at least one --use_*_loss")
        mods: dict[str, nn.Module] = {}
        if "l1" in self.weights:
            mods["l1"] = L1Loss()
        if "perceptual" in self.weights:
            mods["perceptual"] = VGGPerceptualLoss(
                weights_path=self.cfg.vgg_weights, rgb_bands=rgb_bands
            )
        if "fft" in self.weights:
            mods["fft"] = FFTLoss()
        if "gradient" in self.weights:
            mods["gradient"] = GradientLoss()
        if "contrastive" in self.weights:
            mods["contrastive"] = ContrastiveLoss(temperature=0.1)
        if "texture" in self.weights:
            mods["texture"] = (
                GramTextureLoss(weights_path=self.cfg.vgg_weights, rgb_bands=rgb_bands)
                if self.cfg.vgg_weights
                else GramTextureLoss(feature_extractor=None)
            )
        if "cloud_focused" in self.weights:
            mods["cloud_focused"] = CloudFocusedLoss(self.cfg.cloud_weight_factor)
        self.terms = nn.ModuleDict(mods)

    def forward(self, out: CloudRemovalOutput, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        pred, target = out.prediction, batch["target"]
        cloud = batch["cloud_mask"]
        parts: dict[str, Tensor] = {}
        for name in self.weights:
            if name == "confidence":
                if out.confidence is None:
                    continue
                parts[name] = confidence_bce(out.confidence, cloud)
            elif name == "contrastive":
                z_opt, z_sar = out.embeddings
                if z_opt.shape[0] < 2:
                    parts[name] = pred.new_zeros(())
                    continue
                parts[name] = self.terms[name](z_opt, z_sar)
            elif name == "cloud_focused":
                parts[name] = self.terms[name](pred, target, cloud)
            else:
                parts[name] = self.terms[name](pred, target)
        total = sum(self.weights[k] * v for k, v in parts.items())
        assert isinstance(total, Tensor)
        return total, {k: v.detach() for k, v in parts.items()}
