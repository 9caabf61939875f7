"""The building blocks of the cloud-removal network: residual blocks, attention, gates, encoders.

Each block is a plain ``nn.Module`` with its shapes in the docstring; :mod:`cloud_removal.model`
assembles them into :class:`~cloud_removal.model.CloudRemovalCrossAttention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig

__all__ = [
    "ResBlock",
    "SpectralAttentionSAR",
    "SARGate",
    "CrossAttentionBlock",
    "CloudConfidencePredictor",
    "Encoder",
    "norm_layer",
]


def norm_layer(kind: str, channels: int, groups: int) -> nn.Module:
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
            norm_layer(norm, channels, groups),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            norm_layer(norm, channels, groups),
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
            norm_layer(norm, hidden, groups),
            nn.SiLU(),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)


class Encoder(nn.Module):
    """A stem and ``num_levels`` levels of ResBlocks with stride-2 convolutions between them.

    ``(B, C_in, H, W)`` -> a list of ``num_levels`` feature maps, level ``i`` of shape
    ``(B, base_width * 2**i, H / 2**i, W / 2**i)``.
    """

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
