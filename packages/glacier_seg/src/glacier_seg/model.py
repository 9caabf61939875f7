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

The configs (:class:`~glacier_seg.config.ModelConfig`, :class:`~glacier_seg.config.LossConfig`) live in
:mod:`glacier_seg.config`; a checkpoint stores them as dicts plus ``in_channels`` and ``num_classes``.
:func:`export_smp` writes a trained network with smp's ``save_pretrained``.

Example:
    >>> model = build_model(ModelConfig(encoder_name="resnet18"), in_channels=7)
    >>> model(torch.zeros(1, 7, 64, 64)).shape
    torch.Size([1, 4, 64, 64])
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from eo_common.errors import InputError
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

from glacier_seg.config import LossConfig, ModelConfig
from glacier_seg.layout import IGNORE_INDEX

__all__ = [
    "NUM_CLASSES",
    "EncoderWeightsError",
    "ModelConfig",
    "LossConfig",
    "build_model",
    "expand_first_conv",
    "load_encoder_state_dict",
    "build_loss",
    "model_config_from_hparams",
    "model_hparams",
    "padded_forward",
    "export_smp",
]

NUM_CLASSES = 4
ExtraChannelInit = Literal["rgb_matched", "smp", "zero"]


class EncoderWeightsError(InputError):
    """Encoder weights that cannot be obtained or loaded; the message names the file or source."""


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


def _unwrap_state_dict(obj: object, path: Path, known: set[str] | None = None) -> dict[str, Tensor]:
    """The tensors of a saved state dict, keys normalised to the encoder's (``known``): wrapper
    prefixes (``module.``, ``model.``, ``encoder.``) are dropped until a key is known, and classifier
    heads are dropped."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise EncoderWeightsError(f"{path}: not a state dict of tensors")
    out: dict[str, Tensor] = {}
    for key, value in obj.items():
        for prefix in ("module.", "encoder.", "model."):
            if (known is None or key not in known) and key.startswith(prefix):
                key = key[len(prefix) :]
        if (known is None or key not in known) and key.startswith(("fc.", "classifier.", "head.")):
            continue
        out[key] = value
    return out


def load_encoder_state_dict(
    encoder_name: str, source: str, known: set[str] | None = None
) -> dict[str, Tensor]:
    """A 3-channel encoder state dict from ``"imagenet"`` (smp download) or a local file (keys
    normalised to ``known``, the encoder's own keys, when given)."""
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
    return _unwrap_state_dict(obj, path, known)


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


def _unet_kwargs(cfg: ModelConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    attention = None if cfg.decoder_attention_type in (None, "none") else cfg.decoder_attention_type
    return {
        "encoder_name": cfg.encoder_name,
        "encoder_weights": None,
        "in_channels": int(in_channels),
        "classes": int(num_classes),
        "decoder_attention_type": attention,
        "decoder_channels": tuple(int(c) for c in cfg.decoder_channels),
    }


def build_model(cfg: ModelConfig, in_channels: int, num_classes: int = NUM_CLASSES) -> smp.Unet:
    """smp U-Net with the configured encoder, scSE decoder attention and encoder weights.

    Args:
        cfg: the ``model`` group.
        in_channels: input channels (5 bands, or 5 + the GLCM channels).
        num_classes: output classes (4).

    Returns:
        ``nn.Module`` mapping (B, in_channels, H, W) -> (B, num_classes, H, W) logits; H and W
        must be multiples of 32.

    Raises:
        EncoderWeightsError: weights unavailable, unreadable or not matching the encoder.
    """
    model = smp.Unet(**_unet_kwargs(cfg, in_channels, num_classes))
    _drop_unused_attention(model)
    weights = (cfg.encoder_weights or "none").strip()
    if weights.lower() in ("none", "null", ""):
        return model
    state = load_encoder_state_dict(cfg.encoder_name, weights, set(model.encoder.state_dict()))
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
    state[conv_key] = expand_first_conv(rgb.float(), in_channels, cfg.extra_channel_init)
    # nn.Module.load_state_dict: smp encoders override it and return None
    missing, unexpected = nn.Module.load_state_dict(model.encoder, state, strict=False)
    if missing or unexpected:
        raise EncoderWeightsError(
            f"{weights}: does not match encoder {cfg.encoder_name!r}: missing {sorted(missing)[:8]}, "
            f"unexpected {sorted(unexpected)[:8]}"
        )
    return model


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
    gammas = [float(g) for g in cfg.focal_gamma]
    if len(gammas) not in (1, num_classes):
        raise ValueError(f"loss.focal_gamma: give 1 or {num_classes} values, got {len(gammas)}")
    gamma: float | list[float] = gammas[0] if len(gammas) == 1 else gammas
    alpha = [float(a) for a in cfg.class_weights] if cfg.class_weights else None
    terms: dict[str, tuple[nn.Module, float]] = {
        "focal": (FocalLoss(alpha=alpha, gamma=gamma), cfg.focal_weight),
        "dice": (DiceLoss(num_classes), cfg.dice_weight),
        "mcc": (MCCLoss(num_classes), cfg.mcc_weight),
        "boundary": (BoundaryLoss(classes=tuple(range(1, num_classes))), cfg.boundary_weight),
        "lovasz": (
            _LogitsTarget(LovaszLoss(mode="multiclass", ignore_index=IGNORE_INDEX)),
            cfg.lovasz_weight,
        ),
        "tversky": (
            _LogitsTarget(
                TverskyLoss(
                    mode="multiclass",
                    alpha=cfg.tversky_alpha,
                    beta=cfg.tversky_beta,
                    ignore_index=IGNORE_INDEX,
                )
            ),
            cfg.tversky_weight,
        ),
    }
    if all(w == 0 for _, w in terms.values()):
        raise ValueError("loss: every loss weight is 0: enable at least one term")
    return WeightedSum(terms)


def model_config_from_hparams(model: Mapping[str, Any]) -> tuple[ModelConfig, int, int]:
    """(``ModelConfig``, in_channels, num_classes) from a checkpoint's ``model`` hyper-parameters
    (those of every release: a dict of the config fields plus ``in_channels`` and ``num_classes``)."""
    names = {f.name for f in fields(ModelConfig)}
    values = {k: v for k, v in model.items() if k in names}
    if "decoder_channels" in values:
        values["decoder_channels"] = [int(c) for c in values["decoder_channels"]]
    return (
        ModelConfig(**values),
        int(model["in_channels"]),
        int(model.get("num_classes", NUM_CLASSES)),
    )


def model_hparams(
    cfg: ModelConfig, in_channels: int, num_classes: int = NUM_CLASSES
) -> dict[str, Any]:
    """The ``model`` hyper-parameters a checkpoint stores (inverse of :func:`model_config_from_hparams`)."""
    out = asdict(cfg)
    out.update(in_channels=int(in_channels), num_classes=int(num_classes))
    return out


def padded_forward(model: nn.Module, x: Tensor, multiple: int = 32) -> Tensor:
    """Run ``model`` on ``x`` (B, C, H, W) of any size: reflect-pad H and W up to a multiple of
    ``multiple`` (U-Net strides), then crop the logits back to (B, K, H, W)."""
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return model(x)[..., :height, :width]


def export_smp(
    net: nn.Module,
    cfg: ModelConfig,
    in_channels: int,
    out_dir: str | Path,
    *,
    inputs: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    num_classes: int = NUM_CLASSES,
) -> Path:
    """Write a trained U-Net with smp's ``save_pretrained`` (``smp.from_pretrained(out_dir)`` loads it).

    :func:`build_model` replaces the never-called scSE block of the last decoder stage by an identity;
    smp's loader expects the block, so the export is a fresh ``smp.Unet`` of the same configuration that
    receives every trained weight (only that unused block keeps its initial weights; it never runs, so
    the outputs are the trained network's). ``inputs`` (channels, normaliser, GLCM) are written beside
    it as ``glacier_inputs.json``: what a user must feed the network.

    Raises:
        ValueError: the trained weights do not fit the configuration (a bug, not a user fault).
    """
    out = Path(out_dir)
    fresh = smp.Unet(**_unet_kwargs(cfg, in_channels, num_classes))
    missing, unexpected = fresh.load_state_dict(net.state_dict(), strict=False)
    unused = [
        k
        for k in missing
        if ".attention1." in k and k.startswith(f"decoder.blocks.{len(fresh.decoder.blocks) - 1}.")
    ]
    if unexpected or set(missing) - set(unused):
        raise ValueError(
            f"export: weights do not fit the U-Net: missing {missing}, unexpected {unexpected}"
        )
    fresh.eval()
    fresh.save_pretrained(
        str(out), metrics=dict(metrics) if metrics else None, dataset="GlacierHack"
    )
    if inputs is not None:
        (out / "glacier_inputs.json").write_text(
            json.dumps(dict(inputs), indent=2), encoding="utf-8"
        )
    return out
