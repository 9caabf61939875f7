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

import argparse
import math
from dataclasses import asdict, dataclass, fields
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    "add_model_args",
    "model_config_from_args",
    "str2bool",
]


def str2bool(value: str | bool) -> bool:
    """Parse ``true/false/1/0/yes/no/on/off`` (case-insensitive) for argparse switches."""
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {value!r}")


@dataclass
class ModelConfig:
    """Every architectural switch of :class:`CloudRemovalCrossAttention`.

    Attributes:
        in_optical: optical bands (13 for Sentinel-2 L1C as in SEN12MS-CR).
        in_sar: SAR bands (2: VV, VH).
        base_width: channels at full resolution; level ``i`` has ``base_width * 2**i``.
        num_levels: resolution levels; the encoder downsamples ``num_levels - 1`` times.
        encoder_blocks: ResBlocks per encoder level (both streams), ``num_levels`` entries.
        decoder_blocks: ResBlocks per decoder level (from coarse to fine), ``num_levels - 1`` entries.
        use_spectral_attention: ``SpectralAttentionSAR`` (channel attention over VV/VH) before the SAR stem.
        use_cross_attn: transformer cross-attention at the bottleneck (off: 1x1 concatenation fusion only).
        num_cross_attn_blocks: stacked cross-attention blocks (1-3).
        num_heads: attention heads.
        mlp_ratio: hidden width of the transformer MLP relative to the token width.
        use_sar_gating: optical-guided sigmoid gate on the SAR features at every level.
        use_confidence: ``CloudConfidencePredictor`` + cloud-aware weighted residual
            (off: plain global residual ``output = input + residual``).
        use_global_residual: add the cloudy input back (off: the decoder predicts the image directly;
            with the confidence predictor on, ``output = (1 - c) * input + c * decoded``).
        multi_scale: run the trunk at full, 1/2 and 1/4 resolution and combine.
        multi_scale_weights: ``"learned"`` (softmax over 3 learned logits) or ``"fixed"``.
        fixed_scale_weights: weights of the full, 1/2 and 1/4 scales (also the learned initial value).
        norm: ``"group"`` (GroupNorm), ``"batch"`` or ``"none"`` inside the ResBlocks.
        num_groups: GroupNorm groups.
        residual_init_std: std of the output head's weights; small, so training starts near the
            identity (the cloudy input), the baseline every figure is compared with.
    """

    in_optical: int = 13
    in_sar: int = 2
    base_width: int = 48
    num_levels: int = 3
    encoder_blocks: tuple[int, ...] = (1, 1, 3)
    decoder_blocks: tuple[int, ...] = (1, 1)
    use_spectral_attention: bool = True
    use_cross_attn: bool = True
    num_cross_attn_blocks: int = 2
    num_heads: int = 4
    mlp_ratio: float = 2.0
    use_sar_gating: bool = True
    use_confidence: bool = True
    use_global_residual: bool = True
    multi_scale: bool = True
    multi_scale_weights: Literal["learned", "fixed"] = "learned"
    fixed_scale_weights: tuple[float, float, float] = (0.6, 0.25, 0.15)
    norm: Literal["group", "batch", "none"] = "group"
    num_groups: int = 8
    residual_init_std: float = 1e-3

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(int(b) for b in self.encoder_blocks)
        self.decoder_blocks = tuple(int(b) for b in self.decoder_blocks)
        self.fixed_scale_weights = tuple(float(w) for w in self.fixed_scale_weights)  # type: ignore[assignment]
        if self.num_levels < 1:
            raise ValueError(f"ModelConfig.num_levels must be >= 1, got {self.num_levels}")
        if len(self.encoder_blocks) != self.num_levels:
            raise ValueError(
                f"ModelConfig.encoder_blocks needs {self.num_levels} entries (one per level), "
                f"got {self.encoder_blocks}"
            )
        if len(self.decoder_blocks) != self.num_levels - 1:
            raise ValueError(
                f"ModelConfig.decoder_blocks needs {self.num_levels - 1} entries, got {self.decoder_blocks}"
            )
        if self.use_cross_attn and not 1 <= self.num_cross_attn_blocks <= 3:
            raise ValueError(
                f"ModelConfig.num_cross_attn_blocks must be 1-3, got {self.num_cross_attn_blocks}"
            )
        if self.norm not in ("group", "batch", "none"):
            raise ValueError(f"ModelConfig.norm must be group/batch/none, got {self.norm!r}")
        if self.multi_scale_weights not in ("learned", "fixed"):
            raise ValueError(
                f"ModelConfig.multi_scale_weights must be learned/fixed, got {self.multi_scale_weights!r}"
            )
        if len(self.fixed_scale_weights) != 3 or min(self.fixed_scale_weights) <= 0:
            raise ValueError(
                f"ModelConfig.fixed_scale_weights needs 3 positive weights, got {self.fixed_scale_weights}"
            )
        top = self.base_width * 2 ** (self.num_levels - 1)
        if top % self.num_heads:
            raise ValueError(
                f"bottleneck width {top} (ModelConfig.base_width * 2**(num_levels-1)) must be "
                f"divisible by ModelConfig.num_heads={self.num_heads}"
            )

    @property
    def widths(self) -> list[int]:
        return [self.base_width * 2**i for i in range(self.num_levels)]

    @property
    def stride(self) -> int:
        """H and W must be divisible by this (downsampling x the 1/4 multi-scale branch)."""
        return 2 ** (self.num_levels - 1) * (4 if self.multi_scale else 1)

    def enabled_components(self) -> dict[str, str]:
        """Human-readable state of every switch."""

        def onoff(b: bool) -> str:
            return "on" if b else "off"

        return {
            "SpectralAttentionSAR": onoff(self.use_spectral_attention),
            "cross-attention": (
                f"on ({self.num_cross_attn_blocks} block(s), {self.num_heads} heads)"
                if self.use_cross_attn
                else "off (1x1 concat fusion)"
            ),
            "SAR gating": onoff(self.use_sar_gating),
            "CloudConfidencePredictor": (
                "on (cloud-aware weighted residual)" if self.use_confidence else "off"
            ),
            "global residual": onoff(self.use_global_residual),
            "multi-scale": (
                f"on ({self.multi_scale_weights} weights, init {self.fixed_scale_weights})"
                if self.multi_scale
                else "off"
            ),
            "ResBlock norm": self.norm,
            "levels/widths": f"{self.num_levels} / {self.widths}",
            "stride (H, W multiple of)": str(self.stride),
        }


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


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    if kind == "group":
        g = math.gcd(groups, channels)
        return nn.GroupNorm(g, channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv(act(norm(conv(act(norm(x))))))``, (B,C,H,W) -> same.

    Example:
        >>> blk = ResBlock(16)
        >>> blk(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 16, 8, 8])
    """

    def __init__(self, channels: int, norm: str = "group", groups: int = 8):
        super().__init__()
        self.body = nn.Sequential(
            _norm(norm, channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            _norm(norm, channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class SpectralAttentionSAR(nn.Module):
    """Channel attention over the SAR polarisations (VV, VH), applied before the SAR stem.

    Per image and channel, the mean, max and standard deviation over space form a (B, 3*C) descriptor;
    a two-layer MLP maps it to (B, C) logits and the channels are rescaled by ``2 * sigmoid(logit)``
    (so a zero-initialised last layer starts as the identity). Input and output: (B, C, H, W).

    Example:
        >>> att = SpectralAttentionSAR(2)
        >>> x = torch.rand(3, 2, 16, 16)
        >>> torch.allclose(att(x), x)  # identity at initialisation
        True
    """

    def __init__(self, channels: int = 2, hidden: int = 16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(3 * channels, hidden), nn.SiLU(), nn.Linear(hidden, channels)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def weights(self, x: Tensor) -> Tensor:
        """Channel weights (B, C) in (0, 2)."""
        flat = x.flatten(2)
        desc = torch.cat([flat.mean(-1), flat.amax(-1), flat.std(-1, unbiased=False)], dim=1)
        return 2.0 * torch.sigmoid(self.mlp(desc))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.weights(x)[:, :, None, None]


class SARGate(nn.Module):
    """Optical-guided gating: ``sar * sigmoid(conv1x1([optical, sar]))``, features (B,C,H,W) -> (B,C,H,W).

    The bias starts at +2 (gate ~0.88), so SAR information flows from the start.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)
        nn.init.constant_(self.conv.bias, 2.0)

    def forward(self, optical: Tensor, sar: Tensor) -> Tensor:
        return sar * torch.sigmoid(self.conv(torch.cat([optical, sar], dim=1)))


class CrossAttentionBlock(nn.Module):
    """Pre-norm transformer block where optical tokens (queries) attend to SAR tokens (keys/values).

    ``x = opt + Attn(LN(opt), LN(sar)); x = x + MLP(LN(x))`` on (B, C, H, W) maps flattened to
    (B, H*W, C) tokens; returns (B, C, H, W). Global attention over all bottleneck positions.
    """

    def __init__(self, dim: int, num_heads: int = 4, mlp_ratio: float = 2.0):
        super().__init__()
        self.num_heads = num_heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, optical: Tensor, sar: Tensor) -> Tensor:
        b, c, h, w = optical.shape
        q_tokens = optical.flatten(2).transpose(1, 2)  # (B, N, C)
        kv_tokens = sar.flatten(2).transpose(1, 2)
        heads = self.num_heads
        q = self.q(self.norm_q(q_tokens)).view(b, h * w, heads, c // heads).transpose(1, 2)
        k, v = (
            self.kv(self.norm_kv(kv_tokens))
            .view(b, h * w, 2, heads, c // heads)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        att = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C/heads)
        x = q_tokens + self.proj(att.transpose(1, 2).reshape(b, h * w, c))
        x = x + self.mlp(self.norm_mlp(x))
        return x.transpose(1, 2).reshape(b, c, h, w)


class CloudConfidencePredictor(nn.Module):
    """Cloud confidence from bottleneck features: (B, C, h, w) -> logits (B, 1, h, w).

    ``sigmoid(logits)`` is the confidence in [0, 1] (0 clear, 1 cloudy); the network upsamples it
    bilinearly to the input size.
    """

    def __init__(self, channels: int, norm: str = "group", groups: int = 8):
        super().__init__()
        hidden = max(channels // 4, 8)
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1),
            _norm(norm, hidden, groups),
            nn.SiLU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class _Encoder(nn.Module):
    def __init__(self, in_channels: int, cfg: ModelConfig):
        super().__init__()
        widths = cfg.widths
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, w in enumerate(widths):
            self.levels.append(
                nn.Sequential(
                    *[ResBlock(w, cfg.norm, cfg.num_groups) for _ in range(cfg.encoder_blocks[i])]
                )
            )
            if i < len(widths) - 1:
                self.downs.append(nn.Conv2d(w, widths[i + 1], 3, stride=2, padding=1))

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = []
        x = self.stem(x)
        for i, level in enumerate(self.levels):
            x = level(x)
            feats.append(x)
            if i < len(self.downs):
                x = self.downs[i](x)
        return feats


class _Trunk(nn.Module):
    """Encoders, fusion, bottleneck attention and decoder for one scale."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        widths = cfg.widths
        self.sar_attention = (
            SpectralAttentionSAR(cfg.in_sar) if cfg.use_spectral_attention else None
        )
        self.optical_encoder = _Encoder(cfg.in_optical, cfg)
        self.sar_encoder = _Encoder(cfg.in_sar, cfg)
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
            _norm(cfg.norm, widths[0], cfg.num_groups),
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
    """Build a registered model by name (``--model_name``)."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown --model_name {name!r}; available: {sorted(MODEL_REGISTRY)}")
    return MODEL_REGISTRY[name](config)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


_SWITCHES = {
    "use_spectral_attention": "SpectralAttentionSAR (channel attention over VV/VH)",
    "use_cross_attn": "transformer cross-attention at the bottleneck",
    "use_sar_gating": "optical-guided gating of the SAR features",
    "use_confidence": "CloudConfidencePredictor + cloud-aware weighted residual",
    "use_global_residual": "add the cloudy input back (global residual)",
    "multi_scale": "multi-scale processing (full, 1/2, 1/4 resolution)",
}


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Model flags, one per :class:`ModelConfig` field that a user switches.

    Booleans accept ``--flag`` (true), ``--flag false`` and ``--no-flag``.
    """
    d = ModelConfig()
    g = parser.add_argument_group("model")
    g.add_argument("--model_name", default="CrossAttention", choices=sorted(MODEL_REGISTRY))
    for name, help_text in _SWITCHES.items():
        g.add_argument(
            f"--{name}",
            type=str2bool,
            nargs="?",
            const=True,
            default=getattr(d, name),
            help=f"{help_text} (default {getattr(d, name)})",
        )
        g.add_argument(f"--no-{name}", dest=name, action="store_false", help=argparse.SUPPRESS)
    g.add_argument(
        "--num_cross_attn_blocks", type=int, default=d.num_cross_attn_blocks, choices=(1, 2, 3)
    )
    g.add_argument("--num_heads", type=int, default=d.num_heads)
    g.add_argument(
        "--multi_scale_weights", default=d.multi_scale_weights, choices=("learned", "fixed")
    )
    g.add_argument(
        "--norm",
        default=d.norm,
        choices=("group", "batch", "none"),
        help="normalisation inside ResBlocks (default GroupNorm)",
    )
    g.add_argument(
        "--base_width",
        type=int,
        default=d.base_width,
        help="channels at full resolution (48 gives ~6.0 M parameters)",
    )


def model_config_from_args(ns: argparse.Namespace) -> ModelConfig:
    """Build a :class:`ModelConfig` from parsed flags (only fields present in ``ns``)."""
    names = {f.name for f in fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in vars(ns).items() if k in names})


def main(argv: list[str] | None = None) -> None:
    """``python -m cloud_removal.model``: parameter count and enabled components."""
    parser = argparse.ArgumentParser(
        prog="python -m cloud_removal.model",
        description="Print parameter count and enabled components.",
    )
    add_model_args(parser)
    ns = parser.parse_args(argv)
    cfg = model_config_from_args(ns)
    model = build_model(ns.model_name, cfg)
    n = count_parameters(model)
    print(f"{ns.model_name}: {n:,} trainable parameters ({n / 1e6:.2f} M)")
    for k, v in cfg.enabled_components().items():
        print(f"  {k:28s} {v}")
    per = {name: count_parameters(mod) for name, mod in model.trunk.named_children()}
    print("  parameters by part: " + ", ".join(f"{k}={v:,}" for k, v in per.items() if v))
    _ = asdict(cfg)


if __name__ == "__main__":
    main()
