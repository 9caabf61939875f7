"""SAR-guided cloud-removal network ("GLF-CR Enhanced") with every enhancement as a switch.

``CloudRemovalCrossAttention(optical (B,13,H,W), sar (B,2,H,W))`` returns a
:class:`CloudRemovalOutput` named tuple ``(prediction, confidence, residual, embeddings)``:

* ``prediction`` (B,13,H,W): the cloud-free estimate in the normalised optical space of the input.
* ``confidence`` (B,1,H,W) in [0, 1] (0 = clear, 1 = cloudy), or ``None`` when the
  ``CloudConfidencePredictor`` is switched off.
* ``residual`` (B,13,H,W): what the decoder adds before the confidence weighting.
* ``embeddings``: ``(optical, sar)`` global-average-pooled bottleneck features, each (B, D), used by
  the cross-modal contrastive loss (no extra parameters).

Because it is a named tuple, ``prediction, confidence = out[:2]`` works, as does ``out.prediction``.

Architecture (default configuration, about 6.0 M parameters)::

    SAR (B,2,H,W) -> SpectralAttentionSAR -> stem -> [ResBlocks, down] x 2 -> ResBlocks   (SAR encoder)
    optical (B,13,H,W) -> stem -> [ResBlocks, down] x 2 -> ResBlocks                     (optical encoder)
    at each level: optical-guided gate on the SAR features (SARGate), 1x1 fusion of both streams
    bottleneck (1/4 resolution): N transformer blocks, optical tokens attend to SAR tokens
    decoder: [upsample, fuse skip, ResBlocks] x 2 -> 3x3 head -> residual (B,13,H,W)
    CloudConfidencePredictor on the fused bottleneck -> sigmoid -> bilinear upsample to (B,1,H,W)
    output = cloudy optical + confidence * residual        (cloud-aware weighted global residual)
    optional multi-scale: the whole trunk runs on the input at full, 1/2 and 1/4 resolution (average
    pooled), residuals and confidences are upsampled and combined with learned (softmax) or fixed weights.

All ResBlocks use GroupNorm by default (``norm="group"``; ``"batch"`` and ``"none"`` selectable).
Everything is pure PyTorch (``F.scaled_dot_product_attention`` for attention), so CPU runs work.

Example:
    >>> import torch
    >>> model = CloudRemovalCrossAttention(ModelConfig(base_width=16, num_cross_attn_blocks=1))
    >>> out = model(torch.rand(1, 13, 32, 32), torch.rand(1, 2, 32, 32))
    >>> tuple(out.prediction.shape), tuple(out.confidence.shape)
    ((1, 13, 32, 32), (1, 1, 32, 32))
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (
    CloudConfidencePredictor,
    CrossAttentionBlock,
    Encoder,
    ResBlock,
    SARGate,
    SpectralAttentionSAR,
    norm_layer,
)
from .config import ModelConfig, ModelInfoConfig

__all__ = [
    "ModelConfig",
    "CloudRemovalOutput",
    "CloudRemovalCrossAttention",
    "SpectralAttentionSAR",
    "CrossAttentionBlock",
    "SARGate",
    "CloudConfidencePredictor",
    "ResBlock",
    "MODEL_REGISTRY",
    "build_model",
    "count_parameters",
    "describe",
]


class CloudRemovalOutput(NamedTuple):
    """Forward result of :class:`CloudRemovalCrossAttention`.

    Attributes:
        prediction: (B, C_opt, H, W) cloud-free estimate (same normalisation as the optical input).
        confidence: (B, 1, H, W) cloud confidence in [0, 1] (1 = cloudy) or None when switched off.
        residual: (B, C_opt, H, W) decoder output before confidence weighting.
        embeddings: (optical (B, D), sar (B, D)) pooled bottleneck features of the full-scale trunk.
    """

    prediction: Tensor
    confidence: Tensor | None
    residual: Tensor
    embeddings: tuple[Tensor, Tensor]


class _Trunk(nn.Module):
    """Encoders, fusion, bottleneck attention and decoder for one scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        self.sar_attention = (
            SpectralAttentionSAR(cfg.in_sar) if cfg.use_spectral_attention else None
        )
        self.optical_encoder = Encoder(cfg.in_optical, cfg)
        self.sar_encoder = Encoder(cfg.in_sar, cfg)
        self.gates = nn.ModuleList([SARGate(w) for w in widths]) if cfg.use_sar_gating else None
        self.fusions = nn.ModuleList([nn.Conv2d(2 * w, w, 1) for w in widths])
        top = widths[-1]
        self.cross_attn = (
            nn.ModuleList(
                [
                    CrossAttentionBlock(top, cfg.num_heads, cfg.mlp_ratio)
                    for _ in range(cfg.num_cross_attn_blocks)
                ]
            )
            if cfg.use_cross_attn
            else None
        )
        self.confidence = (
            CloudConfidencePredictor(top, cfg.norm, cfg.num_groups) if cfg.use_confidence else None
        )
        self.ups = nn.ModuleList()
        self.skip_fusions = nn.ModuleList()
        self.dec_levels = nn.ModuleList()
        for j, i in enumerate(range(cfg.num_levels - 2, -1, -1)):
            self.ups.append(nn.Conv2d(widths[i + 1], widths[i], 3, padding=1))
            self.skip_fusions.append(nn.Conv2d(2 * widths[i], widths[i], 1))
            self.dec_levels.append(
                nn.Sequential(
                    *[
                        ResBlock(widths[i], cfg.norm, cfg.num_groups)
                        for _ in range(cfg.decoder_blocks[j])
                    ]
                )
            )
        self.head = nn.Sequential(
            norm_layer(cfg.norm, widths[0], cfg.num_groups),
            nn.SiLU(),
            nn.Conv2d(widths[0], cfg.in_optical, 3, padding=1),
        )
        nn.init.normal_(self.head[-1].weight, std=cfg.residual_init_std)
        nn.init.zeros_(self.head[-1].bias)

    def forward(
        self, optical: Tensor, sar: Tensor
    ) -> tuple[Tensor, Tensor | None, tuple[Tensor, Tensor]]:
        if self.sar_attention is not None:
            sar = self.sar_attention(sar)
        opt_feats = self.optical_encoder(optical)
        sar_feats = self.sar_encoder(sar)
        if self.gates is not None:
            sar_feats = [g(o, s) for g, o, s in zip(self.gates, opt_feats, sar_feats)]
        opt_top, sar_top = opt_feats[-1], sar_feats[-1]
        embeddings = (opt_top.mean(dim=(2, 3)), sar_top.mean(dim=(2, 3)))
        if self.cross_attn is not None:
            for blk in self.cross_attn:
                opt_top = blk(opt_top, sar_top)
        fused = [f(torch.cat([o, s], 1)) for f, o, s in zip(self.fusions, opt_feats, sar_feats)]
        x = self.fusions[-1](torch.cat([opt_top, sar_top], 1))
        conf_logits = self.confidence(x) if self.confidence is not None else None
        for j, i in enumerate(range(self.cfg.num_levels - 2, -1, -1)):
            x = F.interpolate(x, size=fused[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.ups[j](x)
            x = self.skip_fusions[j](torch.cat([x, fused[i]], 1))
            x = self.dec_levels[j](x)
        return self.head(x), conf_logits, embeddings


class CloudRemovalCrossAttention(nn.Module):
    """SAR-guided cloud removal with cross-attention; see the module docstring for the design.

    Args:
        config: a :class:`ModelConfig` (default: the full model, about 6.0 M parameters).

    Shapes:
        optical (B, 13, H, W) and sar (B, 2, H, W), normalised (GLF-CR convention: both in [0, 1]);
        H and W divisible by ``config.stride`` (16 by default). Returns :class:`CloudRemovalOutput`.

    Example:
        >>> m = CloudRemovalCrossAttention(ModelConfig(base_width=8, multi_scale=False))
        >>> m(torch.rand(2, 13, 20, 20), torch.rand(2, 2, 20, 20)).prediction.shape
        torch.Size([2, 13, 20, 20])
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        problems = self.config.check()
        if problems:
            raise ValueError("ModelConfig." + "; ModelConfig.".join(problems))
        self.trunk = _Trunk(self.config)
        if self.config.multi_scale and self.config.multi_scale_weights == "learned":
            init = torch.log(torch.tensor(self.config.fixed_scale_weights, dtype=torch.float32))
            self.scale_logits = nn.Parameter(init)
        else:
            self.register_parameter("scale_logits", None)

    @property
    def stride(self) -> int:
        return self.config.stride

    def scale_weights(self) -> Tensor:
        """Weights (3,) of the full, 1/2 and 1/4 scales (sum to 1); only with multi-scale on."""
        if self.scale_logits is not None:
            return torch.softmax(self.scale_logits, dim=0)
        w = torch.tensor(self.config.fixed_scale_weights)
        return w / w.sum()

    def _check(self, optical: Tensor, sar: Tensor) -> None:
        cfg = self.config
        if optical.ndim != 4 or optical.shape[1] != cfg.in_optical:
            raise ValueError(
                f"optical must be (B, {cfg.in_optical}, H, W), got {tuple(optical.shape)}"
            )
        if sar.ndim != 4 or sar.shape[1] != cfg.in_sar:
            raise ValueError(f"sar must be (B, {cfg.in_sar}, H, W), got {tuple(sar.shape)}")
        if optical.shape[0] != sar.shape[0] or optical.shape[-2:] != sar.shape[-2:]:
            raise ValueError(
                f"optical {tuple(optical.shape)} and sar {tuple(sar.shape)} differ in batch or H, W"
            )
        h, w = optical.shape[-2:]
        if h % cfg.stride or w % cfg.stride:
            why = f"{cfg.num_levels - 1} downsampling(s)" + (
                " x the 1/4 multi-scale branch" if cfg.multi_scale else ""
            )
            raise ValueError(
                f"input H={h}, W={w} must be divisible by the network stride {cfg.stride} ({why}); "
                f"crop or pad the input, e.g. to {max(cfg.stride, (h // cfg.stride) * cfg.stride)}"
            )

    def forward(self, optical: Tensor, sar: Tensor) -> CloudRemovalOutput:
        self._check(optical, sar)
        cfg = self.config
        size = optical.shape[-2:]
        if cfg.multi_scale:
            weights = self.scale_weights().to(optical.dtype)
            residual = torch.zeros_like(optical)
            conf = optical.new_zeros(optical.shape[0], 1, *size) if cfg.use_confidence else None
            embeddings = None
            for k, factor in enumerate((1, 2, 4)):
                o = F.avg_pool2d(optical, factor) if factor > 1 else optical
                s = F.avg_pool2d(sar, factor) if factor > 1 else sar
                res_k, logits_k, emb_k = self.trunk(o, s)
                if factor > 1:
                    res_k = F.interpolate(res_k, size=size, mode="bilinear", align_corners=False)
                residual = residual + weights[k] * res_k
                if conf is not None:
                    conf = conf + weights[k] * F.interpolate(
                        torch.sigmoid(logits_k), size=size, mode="bilinear", align_corners=False
                    )
                if embeddings is None:
                    embeddings = emb_k
        else:
            residual, logits, embeddings = self.trunk(optical, sar)
            conf = (
                F.interpolate(
                    torch.sigmoid(logits), size=size, mode="bilinear", align_corners=False
                )
                if logits is not None
                else None
            )
        assert embeddings is not None
        if cfg.use_global_residual:
            pred = optical + (conf * residual if conf is not None else residual)
        else:
            pred = (1 - conf) * optical + conf * residual if conf is not None else residual
        return CloudRemovalOutput(pred, conf, residual, embeddings)


MODEL_REGISTRY: dict[str, type[CloudRemovalCrossAttention]] = {
    "CrossAttention": CloudRemovalCrossAttention,
}


def build_model(name: str = "CrossAttention", config: ModelConfig | None = None) -> nn.Module:
    """Build a registered model by name (``--model_name``).

    Raises:
        ValueError: an unknown name or an inconsistent :class:`ModelConfig`.
    """
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown --model_name {name!r}; available: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def describe(cfg: ModelInfoConfig) -> None:
    """``python -m cloud_removal.model``: parameter count, switches and parameters by part."""
    model = build_model(cfg.model_name, cfg.model)
    n = count_parameters(model)
    print(f"{cfg.model_name}: {n:,} trainable parameters ({n / 1e6:.2f} M)")
    for k, v in cfg.model.enabled_components().items():
        print(f"  {k:28s} {v}")
    per = {name: count_parameters(mod) for name, mod in model.trunk.named_children()}
    print("  parameters by part: " + ", ".join(f"{k}={v:,}" for k, v in per.items() if v))


if __name__ == "__main__":
    from .cli import model_info

    raise SystemExit(model_info())
