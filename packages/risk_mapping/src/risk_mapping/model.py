"""The risk network: smp U-Net + switchable spatial attention + softmax head + CORAL ordinal head.

::

    x (B, C, H, W) -> smp encoder (any registered name) -> features f_1 .. f_5
                      f_5 -> [SpatialAttention (CBAM): channel attention, then spatial attention]
                   -> smp U-Net decoder -> d (B, D, H, W) -> Dropout2d(p)
                   -> softmax head: 3x3 conv D -> 3 class logits        (B, 3, H, W)
                   -> CORAL head:  one shared 1x1 weight, 2 biases      (B, 2, H, W)

The CORAL head is :class:`eo_common.losses.CoralLayer` applied per pixel; with
``ordered_biases=True`` its biases are parametrised to stay decreasing, so
``sigmoid(z_0) >= sigmoid(z_1)`` (P(rank > 0) >= P(rank > 1)) at every pixel for any weights.

Example:
    >>> net = RiskNet(in_channels=6, encoder="resnet18", encoder_weights=None)
    >>> out = net(torch.zeros(2, 6, 64, 64))
    >>> out["logits"].shape, out["coral_logits"].shape
    (torch.Size([2, 3, 64, 64]), torch.Size([2, 2, 64, 64]))
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
from eo_common.io import atomic_save_json
from eo_common.losses import CoralLayer, coral_class_probabilities
from torch import Tensor, nn

from risk_mapping.config import NUM_CLASSES, ModelConfig

__all__ = [
    "ChannelAttention",
    "SpatialAttention",
    "RiskNet",
    "build_model",
    "class_probabilities",
    "expected_rank",
    "to_smp_unet",
    "export_smp",
]


class ChannelAttention(nn.Module):
    """CBAM channel attention: ``sigmoid(MLP(avgpool(x)) + MLP(maxpool(x)))`` scales each channel.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1, bias=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        avg = self.mlp(torch.mean(x, dim=(2, 3), keepdim=True))
        mx = self.mlp(torch.amax(x, dim=(2, 3), keepdim=True))
        return x * torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """CBAM block: channel attention (avg + max pooling), then spatial attention.

    The spatial step stacks the channel-wise mean and max maps ``(B, 2, H, W)``, convolves them with a
    ``kernel_size`` kernel and multiplies the features by the sigmoid of the result.

    Shape: ``(B, C, H, W) -> (B, C, H, W)``.

    Example:
        >>> SpatialAttention(32)(torch.randn(1, 32, 8, 8)).shape
        torch.Size([1, 32, 8, 8])
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.channel(x)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(pooled))


class RiskNet(nn.Module):
    """U-Net (segmentation_models_pytorch) with attention on the deepest features and two heads.

    Args:
        in_channels: bands of the input stack.
        encoder: smp encoder name (``resnet18``, ``resnet50``, ``efficientnet-b4``, ...).
        encoder_weights: ``"imagenet"`` or None (random init; needed offline).
        attention: add :class:`SpatialAttention` on the deepest encoder feature map.
        attention_reduction: channel reduction of the attention MLP.
        dropout_prob: ``Dropout2d`` before both heads (kept on for MC-dropout inference).
        decoder_channels: U-Net decoder widths (5 values for encoder depth 5).
        coral_ordered_biases: keep the CORAL biases ordered (rank-consistent at every pixel).

    Returns (forward): ``{"logits": (B, 3, H, W), "coral_logits": (B, 2, H, W)}``; H and W must be
    multiples of 32.
    """

    def __init__(
        self,
        in_channels: int,
        encoder: str = "resnet34",
        encoder_weights: str | None = None,
        attention: bool = True,
        attention_reduction: int = 16,
        dropout_prob: float = 0.2,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        coral_ordered_biases: bool = True,
    ):
        super().__init__()
        unet = smp.Unet(
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            in_channels=in_channels,
            classes=NUM_CLASSES,
            decoder_channels=tuple(decoder_channels),
            encoder_depth=len(decoder_channels),
        )
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        deepest = self.encoder.out_channels[-1]
        self.attention = (
            SpatialAttention(deepest, attention_reduction) if attention else nn.Identity()
        )
        width = decoder_channels[-1]
        self.dropout = nn.Dropout2d(dropout_prob) if dropout_prob > 0 else nn.Identity()
        self.class_head = nn.Conv2d(width, NUM_CLASSES, kernel_size=3, padding=1)
        self.coral_head = CoralLayer(width, NUM_CLASSES, ordered_biases=coral_ordered_biases)
        self.in_channels = in_channels
        self.encoder_name = encoder
        self.decoder_channels = tuple(decoder_channels)
        self.has_attention = bool(attention)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"height and width must be multiples of 32, got {tuple(x.shape[-2:])}")
        features = list(self.encoder(x))
        features[-1] = self.attention(features[-1])
        decoded = self.dropout(self.decoder(features))
        return {"logits": self.class_head(decoded), "coral_logits": self.coral_head(decoded)}


def build_model(cfg: ModelConfig, in_channels: int) -> RiskNet:
    """:class:`RiskNet` from the ``model`` config section."""
    return RiskNet(
        in_channels=in_channels,
        encoder=cfg.encoder,
        encoder_weights=cfg.encoder_weights,
        attention=cfg.attention,
        attention_reduction=cfg.attention_reduction,
        dropout_prob=cfg.dropout_prob,
        decoder_channels=cfg.decoder_channels,
        coral_ordered_biases=cfg.coral_ordered_biases,
    )


def class_probabilities(
    outputs: dict[str, Tensor], head: Literal["softmax", "coral", "average"] = "softmax"
) -> Tensor:
    """``(B, 3, H, W)`` class probabilities from the softmax head, the CORAL head, or their mean.

    CORAL probabilities are ``P(y=k) = P(y>k-1) - P(y>k)``
    (:func:`eo_common.losses.coral_class_probabilities`).
    """
    soft = torch.softmax(outputs["logits"], dim=1)
    if head == "softmax":
        return soft
    coral = coral_class_probabilities(outputs["coral_logits"], dim=1)
    if head == "coral":
        return coral
    if head == "average":
        return 0.5 * (soft + coral)
    raise ValueError(f"unknown head {head!r}; choose softmax, coral or average")


def expected_rank(probs: Tensor | np.ndarray) -> Tensor:  # noqa: F821
    """Susceptibility = expected rank ``sum_k k P(y=k)`` in [0, 2]; ``(B, 3, H, W) -> (B, H, W)``
    (also ``(3, H, W) -> (H, W)`` for NumPy arrays).

    Example:
        >>> expected_rank(torch.tensor([[[[0.2]], [[0.3]], [[0.5]]]]))
        tensor([[[1.3000]]])
    """
    axis = 1 if probs.ndim == 4 else 0
    if isinstance(probs, Tensor):
        ranks = torch.arange(probs.shape[axis], dtype=probs.dtype, device=probs.device)
        shape = [1] * probs.ndim
        shape[axis] = -1
        return (probs * ranks.view(shape)).sum(axis)
    import numpy as np

    ranks = np.arange(probs.shape[axis], dtype=np.float32).reshape(
        [-1 if i == axis else 1 for i in range(probs.ndim)]
    )
    return (probs * ranks).sum(axis)


def to_smp_unet(net: RiskNet) -> smp.Unet | None:
    """The plain ``smp.Unet`` inside a :class:`RiskNet`, with its weights, or None.

    The export holds the encoder, the U-Net decoder and the softmax class head (as smp's
    ``segmentation_head``: the same 3x3 convolution, no activation), so ``unet(x)`` returns the
    softmax-head logits ``(B, 3, H, W)`` of ``net(x)["logits"]`` in eval mode (``Dropout2d`` is
    inactive there). Not in it: the CORAL head (used for the ordinal loss only) and the
    CBAM attention block, which smp has no component for: with ``model.attention`` on the
    export would not reproduce the network, so None is returned.
    """
    if net.has_attention:
        return None
    unet = smp.Unet(
        encoder_name=net.encoder_name,
        encoder_weights=None,
        in_channels=net.in_channels,
        classes=NUM_CLASSES,
        decoder_channels=net.decoder_channels,
        encoder_depth=len(net.decoder_channels),
    )
    unet.encoder.load_state_dict(net.encoder.state_dict())
    unet.decoder.load_state_dict(net.decoder.state_dict())
    unet.segmentation_head[0].load_state_dict(net.class_head.state_dict())
    return unet.eval()


def export_smp(
    net: RiskNet,
    out_dir: str | os.PathLike,
    *,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    band_names: Sequence[str] | None = None,
) -> Path | None:
    """Save the smp part of ``net`` with ``save_pretrained`` (loadable by ``smp.from_pretrained``).

    Writes ``config.json``, ``model.safetensors`` and smp's ``README.md`` into ``out_dir``, plus
    ``preprocessing.json``: the input bands, the per-band mean and std that inputs must be
    standardised with (``(x - mean) / std``, missing pixels 0), the class names and what the export
    leaves out (see :func:`to_smp_unet`). Returns None (nothing written) when the network has the
    attention block.
    """
    unet = to_smp_unet(net)
    if unet is None:
        return None
    out = Path(out_dir)
    unet.save_pretrained(out)
    info: dict[str, Any] = {
        "input": "standardised stack: (x - mean) / std per band, missing pixels (nodata, NaN, inf) 0",
        "bands": list(band_names) if band_names else None,
        "mean": [float(v) for v in band_mean],
        "std": [float(v) for v in band_std],
        "output": "logits (B, 3, H, W) of low, medium, high; softmax gives the class probabilities",
        "classes": ["low", "medium", "high"],
        "not_included": "the CORAL ordinal head (training loss only)",
        "height_width": f"multiples of {2 ** len(net.decoder_channels)}",
    }
    atomic_save_json(info, out / "preprocessing.json")
    return out
