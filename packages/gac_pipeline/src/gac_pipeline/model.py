"""Networks of the three stages, all built by registry name from terratorch, and their weight sources.

* Stage 1: ``terramind_v1_{size}_generate``, see :mod:`gac_pipeline.generator`.
* Stage 2: :class:`Stage2Refiner`: a Prithvi-EO backbone (``BACKBONE_REGISTRY``, default
  ``prithvi_eo_v2_300``) on the 6 HLS bands of opt_v1, LoRA on its attention projections, optional int8
  frozen linear layers (bitsandbytes), and a trainable upsampling head that predicts a residual for all 12
  bands (the head also sees all 12 opt_v1 bands, and optionally S1, at full resolution).
* Stage 3: :class:`Stage3Grounder`: the differentiable TerraMind encoder (``terramind_v1_{size}``) with S1GRD
  and opt_v2 (as S2L2A) as two input modalities, LoRA on its attention (optionally only there), and a head
  that predicts a correction to opt_v2. :class:`CycleSARPredictor` is the light opt->SAR network of the
  cycle-consistency loss.

Frozen random-init backbones (tests, demo) are re-created exactly from ``init_seed``, so checkpoints only
hold what was trained (LoRA adapters and heads). Weight files are checked, never trusted: a local
TerraMind file must hold every weight of the model (:func:`load_full_state_dict`), hub weights that are
not published or not reachable give one clear error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from eo_common.errors import CheckpointError, InputError
from torch import nn

from gac_pipeline.config import DEFAULT_STAGE2_LORA_TARGETS, PRITHVI_BACKBONES, TERRAMIND_SIZES
from gac_pipeline.data import PRITHVI_BAND_INDICES
from gac_pipeline.lora import apply_lora, quantize_linear_8bit

__all__ = [
    "TERRAMIND_SIZES",
    "PRITHVI_BACKBONES",
    "DEFAULT_STAGE2_LORA_TARGETS",
    "STAGE3_LORA_TARGETS_ALL",
    "STAGE3_LORA_TARGETS_CROSS",
    "import_terratorch",
    "pad_to_multiple",
    "crop_padding",
    "read_state_dict",
    "load_full_state_dict",
    "hub_errors",
    "build_prithvi",
    "build_terramind_encoder",
    "UpsamplingHead",
    "RefinerConfig",
    "Stage2Refiner",
    "GrounderConfig",
    "Stage3Grounder",
    "CycleSARPredictor",
]


def import_terratorch() -> None:
    """Import terratorch (its model registries) without its process-wide side effect.

    Importing terratorch imports its Clay v1.5 backbone module, which calls
    ``torch.set_float32_matmul_precision("medium")`` at import time. That changes the float32 matmul
    numerics of everything else the process trains (oneDNN may then compute float32 matmuls in
    bfloat16), so a run in a process that once built a gac model would not equal the same run in a
    fresh process. Every import of terratorch in this package goes through here and keeps the
    process's precision.
    """
    precision = torch.get_float32_matmul_precision()
    try:
        import terratorch  # noqa: F401  (registers the backbones and full models)
    finally:
        torch.set_float32_matmul_precision(precision)


STAGE3_LORA_TARGETS_ALL = r".*encoder\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|fc3))"
STAGE3_LORA_TARGETS_CROSS = r".*encoder\.\d+\.attn\.(qkv|proj)"
"""TerraMind fuses modalities by joint self-attention over the concatenated S1 and S2 tokens; the attention
projections are the only layers where tokens of one modality read the other (the MLPs are per token)."""


def pad_to_multiple(
    x: torch.Tensor, multiple: int = 16, mode: str = "reflect"
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Pad the last two dims of ``x`` (B, C, H, W) symmetrically up to a multiple of ``multiple``.

    TerraMind and Prithvi need H and W divisible by their patch size (16): 120 -> 128 (4 px per side).

    Returns:
        (padded tensor, pads) with pads = (left, right, top, bottom) for :func:`crop_padding`.

    Example:
        >>> x = torch.arange(120 * 120.0).reshape(1, 1, 120, 120)
        >>> y, pads = pad_to_multiple(x)
        >>> y.shape, pads
        (torch.Size([1, 1, 128, 128]), (4, 4, 4, 4))
        >>> torch.equal(crop_padding(y, pads), x)
        True
    """
    if x.ndim != 4:
        raise ValueError(f"pad_to_multiple expects (B, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph == 0 and pw == 0:
        return x, pads
    return F.pad(x, pads, mode=mode), pads


def crop_padding(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: crop (left, right, top, bottom) pixels off the last two dims."""
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top : h - bottom, left : w - right]


# --------------------------------------------------------------------------------------------------
# weight sources
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def hub_errors(model: str, local_flag: str) -> Iterator[None]:
    """Turn a failed Hugging Face download (offline, no network, no such file) into one clear line."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - huggingface_hub and requests raise many kinds
        if type(exc).__module__.split(".")[0] not in ("huggingface_hub", "requests", "urllib3"):
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{model}: the hub weights could not be fetched ({reason}; HF_HUB_OFFLINE="
            f"{os.environ.get('HF_HUB_OFFLINE', '0')}); give a local file with --{local_flag}, "
            "or --random_init for a test run"
        ) from None


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Read a local weights file that must be a plain state dict (``torch.save(model.state_dict())``).

    Raises:
        CheckpointError: missing, truncated or corrupt file; a Lightning checkpoint of another
            command; anything but a mapping of names to tensors. The message names the file.
    """
    from eo_common.training import load_checkpoint

    state = load_checkpoint(path)
    if (
        isinstance(state, dict)
        and "state_dict" in state
        and ("hyper_parameters" in state or "pytorch-lightning_version" in state)
    ):
        kind = (state.get("hyper_parameters") or {}).get("kind", "of another command")
        raise CheckpointError(
            f"a Lightning training checkpoint ({kind}), not {what} weights", path=path
        )
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"not a state dict of tensors for {what}", path=path)
    return state


def load_full_state_dict(
    model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str
) -> None:
    """Load ``state`` (from :func:`read_state_dict`) into ``model``, refusing anything but all of its
    weights: every tensor of ``model`` must be there with the same shape (extra keys are ignored).

    terratorch itself only logs missing keys and keeps random weights; here a file of another network
    is refused with a :class:`CheckpointError` that names it and counts what matched. Nothing is loaded
    when it is refused.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        example = (missing or wrong)[0]
        raise CheckpointError(
            f"holds {len(own) - len(missing) - len(wrong)} of the {len(own)} weights of {what} "
            f"({len(missing)} missing, {len(wrong)} of another shape, e.g. {example!r}): weights "
            "of another model?",
            path=path,
        )
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def _check_prithvi_hub(backbone: str) -> None:
    import_terratorch()
    from terratorch.models.backbones.prithvi_vit import pretrained_weights

    if backbone not in pretrained_weights:
        raise InputError(
            f"model.pretrained: {backbone} has no published weights (those with weights: "
            f"{', '.join(sorted(pretrained_weights))}); give --backbone_checkpoint PATH or "
            "--random_init"
        )


# --------------------------------------------------------------------------------------------------
# heads
# --------------------------------------------------------------------------------------------------
class UpsamplingHead(nn.Module):
    """Token grid -> full-resolution residual, with a full-resolution skip path.

    Four 2x transposed-conv stages take (B, D, H/16, W/16) token features to (B, 32, H, W); a 3x3 conv
    embeds the skip input (B, C_skip, H, W); both are fused into ``out_channels`` maps. The last conv is
    zero-initialised, so a fresh head predicts a zero residual (the stage starts as identity).

    Example:
        >>> head = UpsamplingHead(64, 14, 12)
        >>> head(torch.randn(2, 64, 8, 8), torch.randn(2, 14, 128, 128)).shape
        torch.Size([2, 12, 128, 128])
    """

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, width: int = 32):
        super().__init__()
        chans = [in_channels, 128, 64, width, width]
        ups = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            ups += [nn.ConvTranspose2d(a, b, 2, stride=2), nn.GroupNorm(1, b), nn.GELU()]
        self.up = nn.Sequential(*ups)
        self.skip = nn.Sequential(nn.Conv2d(skip_channels, width, 3, padding=1), nn.GELU())
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.GELU())
        self.out = nn.Conv2d(width, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(tokens)
        if up.shape[-2:] != skip.shape[-2:]:
            up = nn.functional.interpolate(
                up, size=skip.shape[-2:], mode="bilinear", align_corners=False
            )
        return self.out(self.fuse(torch.cat([up, self.skip(skip)], dim=1)))


def _tokens_to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, D) -> (B, D, h, w)."""
    b, n, d = tokens.shape
    if n != h * w:
        raise ValueError(f"expected {h * w} tokens for a {h}x{w} grid, got {n}")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def _tokens_to_grid(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h*w, D) -> (B, D, h, w)."""
    b, n, d = tokens.shape
    if n != h * w:
        raise ValueError(f"expected {h * w} tokens for a {h}x{w} grid, got {n}")
    return tokens.transpose(1, 2).reshape(b, d, h, w)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    """A network config from a checkpoint's stored dict; keys of other releases are ignored."""
    known = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------------------------------
# stage 2
# --------------------------------------------------------------------------------------------------
@dataclass
class RefinerConfig:
    """Everything needed to rebuild a :class:`Stage2Refiner` (stored in its checkpoints).

    ``pretrained`` and ``backbone_checkpoint`` both False/None: a random frozen backbone from
    ``init_seed`` (tests and demos).
    """

    backbone: str = "prithvi_eo_v2_300"
    backbone_checkpoint: str | None = None
    pretrained: bool = False
    use_s1: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = DEFAULT_STAGE2_LORA_TARGETS
    lora_dropout: float = 0.0
    load_in_8bit: bool = False
    use_lora: bool = True
    init_seed: int = 0
    img_size: int = 128

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RefinerConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_prithvi(config: RefinerConfig) -> nn.Module:
    """The frozen Prithvi backbone of a :class:`RefinerConfig`, without LoRA or int8 (seeded)."""
    import_terratorch()
    from terratorch.models.backbones.prithvi_vit import prithvi_cfgs
    from terratorch.registry import BACKBONE_REGISTRY

    if config.backbone not in prithvi_cfgs:
        raise InputError(
            f"model.backbone: must be a Prithvi backbone ({', '.join(PRITHVI_BACKBONES)}), "
            f"got {config.backbone!r}"
        )
    if config.pretrained and config.backbone_checkpoint is None:
        _check_prithvi_hub(config.backbone)
    if config.backbone_checkpoint is not None:
        from eo_common.training import load_checkpoint

        load_checkpoint(config.backbone_checkpoint)  # missing or corrupt: one clear line
    torch.manual_seed(config.init_seed)
    with hub_errors(config.backbone, "backbone_checkpoint"):
        return BACKBONE_REGISTRY.build(
            config.backbone,
            pretrained=bool(config.pretrained or config.backbone_checkpoint),
            ckpt_path=config.backbone_checkpoint,
            img_size=config.img_size,
            num_frames=1,
        )


class Stage2Refiner(nn.Module):
    """opt_v1 -> opt_v2 with a Prithvi-EO backbone (frozen, LoRA) and a trainable residual head.

    Input mapping: opt_v1 (12 S2 bands, [0, 1]) -> bands B02, B03, B04, B8A, B11, B12 (Prithvi's HLS
    BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2) -> x 10000 -> standardised with the backbone's own
    pretraining mean/std. Tiles are reflect-padded to a multiple of the patch size and cropped back.

    Shapes:
        forward(opt_v1 (B, 12, H, W), s1 (B, 2, H, W) or None) -> opt_v2 (B, 12, H, W), [0, 1] units.

    Example:
        >>> m = Stage2Refiner(RefinerConfig(backbone="prithvi_eo_tiny", lora_rank=2))  # doctest: +SKIP
        >>> m(torch.rand(1, 12, 120, 120), None).shape  # doctest: +SKIP
        torch.Size([1, 12, 120, 120])
    """

    def __init__(self, config: RefinerConfig):
        super().__init__()
        import_terratorch()
        from terratorch.models.backbones.prithvi_vit import prithvi_cfgs

        self.config = config
        self.backbone = build_prithvi(config)
        cfg = prithvi_cfgs[config.backbone]
        self.patch = int(cfg["patch_size"][-1])
        for key in ("mean", "std"):
            value = torch.tensor(cfg[key], dtype=torch.float32).view(1, -1, 1, 1)
            self.register_buffer(key, value, persistent=False)
        self.backbone.requires_grad_(False)
        if config.load_in_8bit:
            quantize_linear_8bit(self.backbone, r".*blocks\.\d+\..*")
        if config.use_lora:
            apply_lora(
                self.backbone, rank=config.lora_rank, alpha=config.lora_alpha,
                target_regex=config.lora_targets, dropout=config.lora_dropout,
            )  # fmt: skip
        self.head = UpsamplingHead(int(cfg["embed_dim"]), 12 + (2 if config.use_s1 else 0), 12)

    def build_base(self) -> nn.Module:
        """A fresh float copy of the frozen backbone (same weights), for the PEFT export."""
        return build_prithvi(self.config)

    def forward(self, opt_v1: torch.Tensor, s1: torch.Tensor | None = None) -> torch.Tensor:
        if opt_v1.ndim != 4 or opt_v1.shape[1] != 12:
            raise ValueError(f"opt_v1 must be (B, 12, H, W), got {tuple(opt_v1.shape)}")
        if self.config.use_s1 and s1 is None:
            raise ValueError("this stage-2 model was built with use_s1=True: pass s1 (B, 2, H, W)")
        skip = opt_v1 if not self.config.use_s1 else torch.cat([opt_v1, s1], dim=1)
        skip, pads = pad_to_multiple(skip, self.patch)
        hls = skip[:, list(PRITHVI_BAND_INDICES)] * 10000.0
        hls = (hls - self.mean) / self.std
        feats = self.backbone(hls)[-1][:, 1:, :]  # drop the CLS token: (B, N, D)
        h, w = skip.shape[-2] // self.patch, skip.shape[-1] // self.patch
        residual = self.head(_tokens_to_grid(feats.to(skip.dtype), h, w), skip)
        return crop_padding(skip[:, :12] + residual, pads)


# --------------------------------------------------------------------------------------------------
# stage 3
# --------------------------------------------------------------------------------------------------
@dataclass
class GrounderConfig:
    """Everything needed to rebuild a :class:`Stage3Grounder` (stored in its checkpoints)."""

    model_size: str = "base"
    backbone_checkpoint: str | None = None
    pretrained: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_cross_attention_only: bool = False
    lora_dropout: float = 0.0
    use_lora: bool = True
    init_seed: int = 0
    img_size: int = 128

    @property
    def lora_targets(self) -> str:
        return (
            STAGE3_LORA_TARGETS_CROSS if self.lora_cross_attention_only else STAGE3_LORA_TARGETS_ALL
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GrounderConfig:
        return _from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_terramind_encoder(config: GrounderConfig) -> nn.Module:
    """The frozen two-modality TerraMind encoder of a :class:`GrounderConfig` (seeded, no LoRA)."""
    import_terratorch()
    from terratorch.registry import BACKBONE_REGISTRY

    if config.model_size not in TERRAMIND_SIZES:
        raise InputError(
            f"model.model_size: one of {', '.join(TERRAMIND_SIZES)}, got {config.model_size!r}"
        )
    if config.backbone_checkpoint is not None:
        from eo_common.training import load_checkpoint

        load_checkpoint(config.backbone_checkpoint)  # missing or corrupt: one clear line
    torch.manual_seed(config.init_seed)
    name = f"terramind_v1_{config.model_size}"
    with hub_errors(name, "backbone_checkpoint"):
        return BACKBONE_REGISTRY.build(
            name,
            pretrained=bool(config.pretrained),
            ckpt_path=config.backbone_checkpoint,
            modalities=["S1GRD", "S2L2A"],
            merge_method="concat",
        )


class Stage3Grounder(nn.Module):
    """opt_v2 + S1 -> opt_v3 = opt_v2 + correction, with the TerraMind encoder as a two-modality backbone.

    The encoder (``terramind_v1_{size}``, frozen, LoRA) takes S1GRD (raw dB) and opt_v2 as S2L2A (DN), each
    standardised with TerraMind's pretraining statistics; their token grids are concatenated along the
    channel axis (``merge_method="concat"``) and an :class:`UpsamplingHead` predicts the correction from them
    plus a full-resolution skip of [opt_v2, S1].

    Shapes:
        forward(opt_v2 (B, 12, H, W) in [0, 1], s1_db (B, 2, H, W) dB, s1 (B, 2, H, W) in [0, 1])
        -> opt_v3 (B, 12, H, W).
    """

    def __init__(self, config: GrounderConfig):
        super().__init__()
        import_terratorch()
        from terratorch.models.backbones.terramind.model.terramind_register import (
            v1_pretraining_mean,
            v1_pretraining_std,
        )

        self.config = config
        self.backbone = build_terramind_encoder(config)
        self.backbone.requires_grad_(False)
        for key, name in (("s1", "untok_sen1grd@224"), ("s2", "untok_sen2l2a@224")):
            mean = torch.tensor(v1_pretraining_mean[name]).view(1, -1, 1, 1)
            std = torch.tensor(v1_pretraining_std[name]).view(1, -1, 1, 1)
            self.register_buffer(f"{key}_mean", mean, persistent=False)
            self.register_buffer(f"{key}_std", std, persistent=False)
        if config.use_lora:
            apply_lora(
                self.backbone, rank=config.lora_rank, alpha=config.lora_alpha,
                target_regex=config.lora_targets, dropout=config.lora_dropout,
            )  # fmt: skip
        dim = int(self.backbone.out_channels[-1])  # 2 x encoder width (concat of both modalities)
        self.head = UpsamplingHead(dim, 14, 12)

    def build_base(self) -> nn.Module:
        """A fresh copy of the frozen encoder (same weights), for the PEFT export."""
        return build_terramind_encoder(self.config)

    def forward(self, opt_v2: torch.Tensor, s1_db: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
        if opt_v2.ndim != 4 or opt_v2.shape[1] != 12:
            raise ValueError(f"opt_v2 must be (B, 12, H, W), got {tuple(opt_v2.shape)}")
        if s1_db.shape[1] != 2 or s1.shape[1] != 2:
            raise ValueError(
                f"s1 inputs must have 2 bands (VV, VH), got {s1_db.shape[1]} and {s1.shape[1]}"
            )
        x = torch.cat([opt_v2, s1, s1_db], dim=1)
        x, pads = pad_to_multiple(x, 16)
        opt, s1n, sdb = x[:, :12], x[:, 12:14], x[:, 14:16]
        inputs = {
            "S1GRD": (sdb - self.s1_mean) / self.s1_std,
            "S2L2A": (opt * 10000.0 - self.s2_mean) / self.s2_std,
        }
        tokens = self.backbone(inputs)[-1]  # (B, N, 2D)
        grid = _tokens_to_grid(tokens.to(x.dtype), x.shape[-2] // 16, x.shape[-1] // 16)
        correction = self.head(grid, torch.cat([opt, s1n], dim=1))
        return crop_padding(opt + correction, pads)


class CycleSARPredictor(nn.Module):
    """A light optical -> SAR network for the cycle-consistency loss: (B, 12, H, W) -> (B, 2, H, W) in [0, 1].

    Example:
        >>> CycleSARPredictor()(torch.rand(1, 12, 32, 32)).shape
        torch.Size([1, 2, 32, 32])
    """

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(12, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, 2, 1), nn.Sigmoid(),
        )  # fmt: skip

    def forward(self, optical: torch.Tensor) -> torch.Tensor:
        return self.net(optical)
