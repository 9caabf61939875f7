"""The network (smp U-Net with scSE decoder attention) and its loss (a weighted sum from eo_common).

Encoder weights (``--encoder_weights``):

* ``none``: random initialisation (smp's default init for every channel).
* ``imagenet``: smp's ImageNet weights for the encoder (needs the Hugging Face hub, i.e. network).
* ``PATH``: a local file holding a 3-channel encoder state dict (torchvision/smp ResNet keys such
  as ``conv1.weight``; prefixes ``encoder.``/``module.`` and classifier ``fc.*`` keys are dropped;
  ``{"state_dict": ...}`` wrappers are unwrapped). Loaded strictly: a missing or unexpected key is
  an error that lists the keys.

How the first convolution gets ``in_channels > 3`` input channels from a 3-channel (RGB) filter
bank ``W_rgb`` (``--extra_channel_init``):

* ``rgb_matched`` (default): GlacierHack band order is B2 (blue), B3 (green), B4 (red), B6, B10,
  then GLCM channels. Channel 0/1/2 take the ImageNet *blue/green/red* filters (ImageNet's conv1
  is ordered R, G, B, so the blue band gets ``W_rgb[:, 2]``); every further channel (SWIR1,
  thermal, texture) starts with the mean of the three filters; everything is scaled by ``3 / C``
  so the first activation keeps its ImageNet magnitude.
* ``smp``: smp's own rule, ``W[:, i] = W_rgb[:, i % 3] * 3 / C`` (bands taken in file order, so
  the blue band gets the *red* filter and the texture channels get colour filters).
* ``zero``: the visible bands take their matched filters unscaled, extra channels start at 0, so
  the network starts exactly as the RGB ImageNet model and learns what the extra channels add.

Example:
    >>> model = build_model(ModelConfig(encoder_name="resnet18", in_channels=7))
    >>> model(torch.zeros(1, 7, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import segmentation_models_pytorch as smp
import torch
from eo_common.losses import (
    BoundaryLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    MCCLoss,
    TverskyLoss,
    WeightedSum,
)
from torch import Tensor, nn

__all__ = [
    "NUM_CLASSES",
    "EncoderWeightsError",
    "ModelConfig",
    "LossConfig",
    "build_model",
    "expand_first_conv",
    "load_encoder_state_dict",
    "build_loss",
]

NUM_CLASSES = 4
ExtraChannelInit = Literal["rgb_matched", "smp", "zero"]


class EncoderWeightsError(ValueError):
    """Encoder weights that cannot be obtained or loaded; the message names the file or source."""


@dataclass
class ModelConfig:
    """Network switches (one field per CLI flag).

    Attributes:
        encoder_name: any smp encoder name (default ``resnet34``).
        in_channels: input channels: 5 bands, or 5 + GLCM channels (7 by default).
        encoder_weights: ``"none"``, ``"imagenet"`` or a path to a local state dict.
        decoder_attention_type: ``"scse"`` (default) or ``"none"``.
        extra_channel_init: see the module docstring.
        num_classes: 4 (background, glacier, debris, lake).
        decoder_channels: U-Net decoder widths, one per encoder stage (smp default).
    """

    encoder_name: str = "resnet34"
    in_channels: int = 7
    encoder_weights: str = "none"
    decoder_attention_type: str = "scse"
    extra_channel_init: ExtraChannelInit = "rgb_matched"
    num_classes: int = NUM_CLASSES
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)


def expand_first_conv(
    weight_rgb: Tensor, in_channels: int, mode: ExtraChannelInit = "rgb_matched"
) -> Tensor:
    """First-conv weights for ``in_channels`` inputs from an RGB filter bank.

    Args:
        weight_rgb: (O, 3, k, k) filters with ImageNet's input order R, G, B.
        in_channels: wanted number of input channels (>= 1).
        mode: ``rgb_matched``, ``smp`` or ``zero`` (module docstring).

    Returns:
        (O, in_channels, k, k) tensor.

    Example:
        >>> w = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)  # filters R=1, G=2, B=3
        >>> expand_first_conv(w, 4, "rgb_matched").flatten().tolist()
        [2.25, 1.5, 0.75, 1.5]
        >>> expand_first_conv(w, 4, "smp").flatten().tolist()
        [0.75, 1.5, 2.25, 0.75]
    """
    if weight_rgb.ndim != 4 or weight_rgb.shape[1] != 3:
        raise ValueError(f"expected (O, 3, k, k) RGB filters, got shape {tuple(weight_rgb.shape)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    out_c, _, kh, kw = weight_rgb.shape
    new = weight_rgb.new_zeros(out_c, in_channels, kh, kw)
    if mode == "smp":
        for i in range(in_channels):
            new[:, i] = weight_rgb[:, i % 3]
        return new * (3.0 / in_channels)
    bgr = weight_rgb[:, [2, 1, 0]]  # our band order is blue, green, red
    n_vis = min(3, in_channels)
    new[:, :n_vis] = bgr[:, :n_vis]
    if mode == "rgb_matched":
        new[:, n_vis:] = weight_rgb.mean(dim=1, keepdim=True)
        return new * (3.0 / in_channels)
    if mode == "zero":
        return new
    raise ValueError(f"extra_channel_init must be 'rgb_matched', 'smp' or 'zero', got {mode!r}")


def _unwrap_state_dict(obj: object, path: Path) -> dict[str, Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise EncoderWeightsError(f"{path}: not a state dict of tensors")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "model.", "encoder."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        if key.startswith(("fc.", "classifier.", "head.")):
            continue
        out[key] = value
    return out


def load_encoder_state_dict(encoder_name: str, source: str) -> dict[str, Tensor]:
    """A 3-channel encoder state dict from ``"imagenet"`` (smp download) or a local file."""
    if source == "imagenet":
        try:
            encoder = smp.encoders.get_encoder(encoder_name, in_channels=3, weights="imagenet")
        except Exception as exc:  # network/hub errors come in many types
            raise EncoderWeightsError(
                f"could not obtain ImageNet weights for encoder {encoder_name!r} ({type(exc).__name__}: "
                f"{exc}); offline, pass a local file with --encoder_weights PATH"
            ) from exc
        return encoder.state_dict()
    path = Path(source)
    if not path.is_file():
        raise EncoderWeightsError(f"encoder weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise EncoderWeightsError(f"{path}: cannot read encoder weights ({exc})") from exc
    return _unwrap_state_dict(obj, path)


def _first_conv_name(encoder: nn.Module) -> str:
    for name, module in encoder.named_modules():
        if isinstance(module, nn.Conv2d):
            return f"{name}.weight"
    raise EncoderWeightsError("encoder has no Conv2d")


def _drop_unused_attention(model: smp.Unet) -> None:
    """smp builds ``attention1`` (applied to ``[x, skip]``) in the last decoder block too, which has
    no skip connection, so it is never called: parameters without gradients, which DDP rejects
    unless ``find_unused_parameters=True``. Replace it by the identity it effectively is."""
    last = model.decoder.blocks[-1]
    if hasattr(last, "attention1") and not isinstance(last.attention1, nn.Identity):
        last.attention1 = nn.Identity()


def build_model(cfg: ModelConfig) -> smp.Unet:
    """smp U-Net with the configured encoder, scSE decoder attention and encoder weights.

    Returns:
        ``nn.Module`` mapping (B, in_channels, H, W) -> (B, num_classes, H, W) logits; H and W
        must be multiples of 32.

    Raises:
        EncoderWeightsError: weights unavailable, unreadable or not matching the encoder.
    """
    attention = None if cfg.decoder_attention_type in (None, "none") else cfg.decoder_attention_type
    model = smp.Unet(
        encoder_name=cfg.encoder_name,
        encoder_weights=None,
        in_channels=cfg.in_channels,
        classes=cfg.num_classes,
        decoder_attention_type=attention,
        decoder_channels=tuple(cfg.decoder_channels),
    )
    _drop_unused_attention(model)
    weights = (cfg.encoder_weights or "none").strip()
    if weights.lower() in ("none", "null", ""):
        return model
    state = load_encoder_state_dict(cfg.encoder_name, weights)
    conv_key = _first_conv_name(model.encoder)
    if conv_key not in state:
        raise EncoderWeightsError(
            f"{weights}: no first-convolution weight {conv_key!r} in the state dict"
        )
    rgb = state[conv_key]
    if rgb.ndim != 4 or rgb.shape[1] != 3:
        raise EncoderWeightsError(
            f"{weights}: {conv_key} has shape {tuple(rgb.shape)}, expected (O, 3, k, k)"
        )
    state = dict(state)
    state[conv_key] = expand_first_conv(rgb.float(), cfg.in_channels, cfg.extra_channel_init)
    # nn.Module.load_state_dict: smp encoders override it and return None
    missing, unexpected = nn.Module.load_state_dict(model.encoder, state, strict=False)
    if missing or unexpected:
        raise EncoderWeightsError(
            f"{weights}: does not match encoder {cfg.encoder_name!r}: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}"
        )
    return model


@dataclass
class LossConfig:
    """Loss weights and parameters (one field per flag); a weight of 0 switches a term off.

    Attributes:
        focal_weight, dice_weight, mcc_weight, boundary_weight, lovasz_weight, tversky_weight:
            term weights.
        focal_gamma: one gamma, or one per class (background, glacier, debris, lake).
        class_weights: focal alpha per class, or None.
        tversky_alpha, tversky_beta: Tversky false-positive / false-negative weights.
    """

    focal_weight: float = 1.0
    dice_weight: float = 1.0
    mcc_weight: float = 0.5
    boundary_weight: float = 0.0
    lovasz_weight: float = 0.0
    tversky_weight: float = 0.0
    focal_gamma: tuple[float, ...] = (2.0,)
    class_weights: tuple[float, ...] | None = None
    tversky_alpha: float = 0.3
    tversky_beta: float = 0.7


class _LogitsTarget(nn.Module):
    """Adapter for smp losses (they take (logits, target) but no ignore-free guarantees)."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self.loss(logits, target)


def build_loss(cfg: LossConfig, num_classes: int = NUM_CLASSES) -> WeightedSum:
    """The weighted sum of the enabled terms (``eo_common.losses.WeightedSum``).

    Call as ``total, parts = loss(logits, target, boundary=(logits, dist_maps))``; the boundary
    term needs :func:`eo_common.losses.signed_distance_map` of the target.
    """
    gamma = cfg.focal_gamma[0] if len(cfg.focal_gamma) == 1 else list(cfg.focal_gamma)
    if not isinstance(gamma, float) and len(gamma) != num_classes:
        raise ValueError(f"focal_gamma needs 1 or {num_classes} values, got {len(cfg.focal_gamma)}")
    alpha = list(cfg.class_weights) if cfg.class_weights else None
    terms: dict[str, tuple[nn.Module, float]] = {
        "focal": (FocalLoss(alpha=alpha, gamma=gamma), cfg.focal_weight),
        "dice": (DiceLoss(num_classes), cfg.dice_weight),
        "mcc": (MCCLoss(num_classes), cfg.mcc_weight),
        "boundary": (BoundaryLoss(classes=tuple(range(1, num_classes))), cfg.boundary_weight),
        "lovasz": (_LogitsTarget(LovaszLoss(mode="multiclass")), cfg.lovasz_weight),
        "tversky": (
            _LogitsTarget(
                TverskyLoss(mode="multiclass", alpha=cfg.tversky_alpha, beta=cfg.tversky_beta)
            ),
            cfg.tversky_weight,
        ),
    }
    if all(w == 0 for _, w in terms.values()):
        raise ValueError("every loss weight is 0: enable at least one term")
    return WeightedSum(terms)
