"""Networks of the three stages, all built by registry name from terratorch.

* Stage 1: ``terramind_v1_{size}_generate`` (terratorch ``FULL_MODEL_REGISTRY``), S1GRD in, S2L2A out.
  Generation samples discrete tokens and then runs a diffusion decoder, so no gradient flows through
  it: it is used frozen, for precomputation only (:func:`build_generator`, :func:`generate_optical`).
* Stage 2: :class:`Stage2Refiner`: a Prithvi-EO backbone (``BACKBONE_REGISTRY``, default
  ``prithvi_eo_v2_300``) on the 6 HLS bands of opt_v1, LoRA on its attention projections, optional int8
  frozen linear layers (bitsandbytes), and a trainable upsampling head that predicts a residual for all 12
  bands (the head also sees all 12 opt_v1 bands, and optionally S1, at full resolution).
* Stage 3: :class:`Stage3Grounder`: the differentiable TerraMind encoder (``terramind_v1_{size}``) with S1GRD
  and opt_v2 (as S2L2A) as two input modalities, LoRA on its attention (optionally only there), and a head
  that predicts a correction to opt_v2. :class:`CycleSARPredictor` is the light opt->SAR network of the
  cycle-consistency loss.

Frozen random-init backbones (tests, demo) are re-created exactly from ``init_seed``, so checkpoints only
hold what was trained (LoRA adapters and heads).
"""

from __future__ import annotations

import random
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from gac_pipeline.data import PRITHVI_BAND_INDICES, crop_padding, pad_to_multiple

__all__ = [
    "TERRAMIND_SIZES",
    "PRITHVI_BACKBONES",
    "DEFAULT_STAGE2_LORA_TARGETS",
    "STAGE3_LORA_TARGETS_ALL",
    "STAGE3_LORA_TARGETS_CROSS",
    "build_generator",
    "generate_optical",
    "tile_seed",
    "quantize_linear_8bit",
    "apply_lora",
    "lora_parameter_count",
    "trainable_state_dict",
    "merge_lora",
    "UpsamplingHead",
    "Stage2Config",
    "Stage2Refiner",
    "Stage3Config",
    "Stage3Grounder",
    "CycleSARPredictor",
]

# bitsandbytes warns on every int8 matmul of a float32 input (it computes in float16); once is enough
warnings.filterwarnings("once", message="MatMul8bitLt: inputs will be cast")

GENERATOR_MULTIPLE = 32
"""Tile sides fed to the generate model are padded to a multiple of this (its diffusion U-Net needs 32)."""
TERRAMIND_SIZES = ("tiny", "small", "base", "large")
PRITHVI_BACKBONES = (
    "prithvi_eo_tiny",
    "prithvi_eo_v1_100",
    "prithvi_eo_v2_tiny_tl",
    "prithvi_eo_v2_100_tl",
    "prithvi_eo_v2_300",
    "prithvi_eo_v2_300_tl",
    "prithvi_eo_v2_600",
    "prithvi_eo_v2_600_tl",
)
DEFAULT_STAGE2_LORA_TARGETS = r".*blocks\.\d+\.attn\.(qkv|proj)"
"""Prithvi attention projections only; a bare ``'proj'`` would also hit the Conv3d patch embedding."""
STAGE3_LORA_TARGETS_ALL = r".*encoder\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2|fc3))"
STAGE3_LORA_TARGETS_CROSS = r".*encoder\.\d+\.attn\.(qkv|proj)"
"""TerraMind fuses modalities by joint self-attention over the concatenated S1 and S2 tokens; the attention
projections are the only layers where tokens of one modality read the other (the MLPs are per token)."""


# --------------------------------------------------------------------------------------------------
# stage 1: TerraMind generation (frozen)
# --------------------------------------------------------------------------------------------------
def build_generator(
    size: str = "base",
    *,
    checkpoint: str | Path | None = None,
    pretrained: bool = False,
    random_init: bool = False,
    timesteps: int = 10,
    init_seed: int = 0,
) -> nn.Module:
    """Build ``terramind_v1_{size}_generate`` (S1GRD -> S2L2A, ``standardize=True``) in eval mode.

    Exactly one weight source must be chosen: ``checkpoint`` (a local state dict), ``pretrained`` (the
    Hugging Face hub, online users) or ``random_init`` (tests and demos: the images are meaningless; the
    zero-initialised output layers of the diffusion decoder get small random weights so that outputs vary
    with the input and seed instead of being one constant image).

    Raises:
        ValueError: unknown size or not exactly one weight source.
        FileNotFoundError: the checkpoint file does not exist.
    """
    from terratorch.registry import FULL_MODEL_REGISTRY

    if size not in TERRAMIND_SIZES:
        raise ValueError(f"model size must be one of {', '.join(TERRAMIND_SIZES)}, got {size!r}")
    sources = sum([checkpoint is not None, bool(pretrained), bool(random_init)])
    if sources != 1:
        raise ValueError("choose exactly one of --checkpoint PATH, --pretrained, --random-init")
    if checkpoint is not None and not Path(checkpoint).exists():
        raise FileNotFoundError(f"{checkpoint}: TerraMind checkpoint not found")
    torch.manual_seed(init_seed)
    model = FULL_MODEL_REGISTRY.build(
        f"terramind_v1_{size}_generate",
        pretrained=bool(pretrained),
        ckpt_path=None if checkpoint is None else str(checkpoint),
        modalities=["S1GRD"],
        output_modalities=["S2L2A"],
        standardize=True,
        timesteps=timesteps,
    )
    if random_init:
        _perturb_zero_initialised(model, std=0.02)
    return model.eval().requires_grad_(False)


def _perturb_zero_initialised(model: nn.Module, std: float) -> int:
    """Fill weight tensors that are exactly zero after init with N(0, std^2) (random-init models only).

    The diffusion decoder zero-initialises its residual output convs, so a randomly initialised
    generator returns the same constant image (the pretraining mean) for every input and seed; with this
    noise its outputs depend on the input and the seed, which is what tests and demos need to exercise.
    """
    changed = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "norm" not in name and not p.any():
                p.normal_(0.0, std)
                changed += 1
    return changed


def tile_seed(seed: int, first_tile_id: str) -> int:
    """A 63-bit seed for one work unit from the run seed and its first tile id (stable across runs)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{first_tile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def generate_optical(
    generator: nn.Module, s1_db: torch.Tensor, *, timesteps: int, seed: int
) -> torch.Tensor:
    """Generate S2 L2A DN from S1 dB with a TerraMind generate model.

    Pads by reflection to a multiple of 32 and crops back: the TerraMind encoder needs multiples of 16 and
    the diffusion decoder of the generate model multiples of 32 (48, 80, 112 px fail inside its U-Net);
    120 -> 128 satisfies both. TerraMind draws its
    sampling seed from Python's ``random`` (and the diffusion noise from torch), so both are seeded.

    Args:
        generator: model from :func:`build_generator`.
        s1_db: (B, 2, H, W) VV, VH in dB.
        timesteps: diffusion decoder steps.
        seed: the same seed and input give the same output.

    Returns:
        (B, 12, H, W) float32 S2 L2A digital numbers, band order :data:`gac_pipeline.data.S2_BANDS`.
    """
    if s1_db.ndim != 4 or s1_db.shape[1] != 2:
        raise ValueError(f"s1_db must be (B, 2, H, W), got {tuple(s1_db.shape)}")
    device = next(generator.parameters()).device
    padded, pads = pad_to_multiple(s1_db.to(device), GENERATOR_MULTIPLE)
    random.seed(seed)
    torch.manual_seed(seed)
    out = generator({"S1GRD": padded}, timesteps=timesteps)["S2L2A"]
    return crop_padding(out.float(), pads).cpu()


# --------------------------------------------------------------------------------------------------
# LoRA and 8-bit
# --------------------------------------------------------------------------------------------------
def quantize_linear_8bit(module: nn.Module, target_regex: str = r".*") -> int:
    """Replace the ``nn.Linear`` layers of a frozen module whose name matches by bitsandbytes int8 layers.

    The weights are quantised (LLM.int8, row-wise absmax) when the module is next moved with ``.to()``;
    bitsandbytes 0.50 runs these layers on CPU too. Returns the number of layers replaced.
    """
    import bitsandbytes as bnb

    pattern = re.compile(target_regex)
    replaced = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, nn.Linear) or not pattern.fullmatch(name):
            continue
        q = bnb.nn.Linear8bitLt(
            child.in_features, child.out_features, bias=child.bias is not None,
            has_fp16_weights=False, threshold=6.0,
        )  # fmt: skip
        q.load_state_dict(child.state_dict())
        q.requires_grad_(False)
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, attr, q)
        replaced += 1
    module.to("cpu")  # quantise now (Int8Params quantise on .to())
    return replaced


def apply_lora(
    module: nn.Module, *, rank: int, alpha: float, target_regex: str, dropout: float = 0.0
) -> nn.Module:
    """Freeze ``module`` and inject LoRA adapters (peft) into the layers whose full name matches.

    Raises:
        ValueError: rank < 1, or the regex matches no layer (the message shows a few layer names).
    """
    from peft import LoraConfig, inject_adapter_in_model

    if rank < 1:
        raise ValueError(f"--lora-rank must be >= 1, got {rank}")
    module.requires_grad_(False)
    pattern = re.compile(target_regex)
    names = [n for n, m in module.named_modules() if pattern.fullmatch(n)]
    if not names:
        examples = [n for n, _ in module.named_modules()][:12]
        raise ValueError(
            f"--lora-targets {target_regex!r} matches no layer; layers look like {examples}"
        )
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_regex)
    return inject_adapter_in_model(config, module)


def lora_parameter_count(module: nn.Module) -> int:
    """Number of LoRA adapter parameters (``lora_A``/``lora_B``) in ``module``."""
    return sum(p.numel() for n, p in module.named_parameters() if "lora_" in n)


def trainable_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that require grad (adapters and heads), detached, on CPU."""
    return {n: p.detach().cpu().clone() for n, p in module.named_parameters() if p.requires_grad}


def merge_lora(module: nn.Module) -> int:
    """Merge every LoRA adapter into its base layer and remove the adapter wrappers (in place).

    Base layers must be float (rebuild without ``--load-in-8bit`` before merging). Returns the number
    of layers merged.
    """
    from peft.tuners.lora import LoraLayer

    merged = 0
    for name, child in list(module.named_modules()):
        if isinstance(child, LoraLayer):
            child.merge()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, child.get_base_layer())
            merged += 1
    return merged


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


# --------------------------------------------------------------------------------------------------
# stage 2
# --------------------------------------------------------------------------------------------------
@dataclass
class Stage2Config:
    """Everything needed to rebuild a :class:`Stage2Refiner` (stored in its checkpoints)."""

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


class Stage2Refiner(nn.Module):
    """opt_v1 -> opt_v2 with a Prithvi-EO backbone (frozen, LoRA) and a trainable residual head.

    Input mapping: opt_v1 (12 S2 bands, [0, 1]) -> bands B02, B03, B04, B8A, B11, B12 (Prithvi's HLS
    BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2) -> x 10000 -> standardised with the backbone's own
    pretraining mean/std. Tiles are reflect-padded to a multiple of the patch size and cropped back.

    Args:
        config: :class:`Stage2Config`.

    Shapes:
        forward(opt_v1 (B, 12, H, W), s1 (B, 2, H, W) or None) -> opt_v2 (B, 12, H, W), both in [0, 1] units.

    Example:
        >>> m = Stage2Refiner(Stage2Config(backbone="prithvi_eo_tiny", lora_rank=2))  # doctest: +SKIP
        >>> m(torch.rand(1, 12, 120, 120), None).shape  # doctest: +SKIP
        torch.Size([1, 12, 120, 120])
    """

    def __init__(self, config: Stage2Config):
        super().__init__()
        from terratorch.models.backbones.prithvi_vit import prithvi_cfgs
        from terratorch.registry import BACKBONE_REGISTRY

        if config.backbone not in prithvi_cfgs:
            raise ValueError(
                f"--backbone must be a Prithvi backbone ({', '.join(PRITHVI_BACKBONES)}), got {config.backbone!r}"
            )
        if config.backbone_checkpoint is not None and not Path(config.backbone_checkpoint).exists():
            raise FileNotFoundError(f"{config.backbone_checkpoint}: Prithvi checkpoint not found")
        self.config = config
        cfg = prithvi_cfgs[config.backbone]
        self.patch = int(cfg["patch_size"][-1])
        torch.manual_seed(config.init_seed)
        self.backbone = BACKBONE_REGISTRY.build(
            config.backbone,
            pretrained=bool(config.pretrained or config.backbone_checkpoint),
            ckpt_path=config.backbone_checkpoint,
            img_size=config.img_size,
            num_frames=1,
        )
        self.register_buffer(
            "mean",
            torch.tensor(cfg["mean"], dtype=torch.float32).view(1, -1, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "std", torch.tensor(cfg["std"], dtype=torch.float32).view(1, -1, 1, 1), persistent=False
        )
        self.backbone.requires_grad_(False)
        if config.load_in_8bit:
            quantize_linear_8bit(self.backbone, r".*blocks\.\d+\..*")
        if config.use_lora:
            apply_lora(
                self.backbone, rank=config.lora_rank, alpha=config.lora_alpha,
                target_regex=config.lora_targets, dropout=config.lora_dropout,
            )  # fmt: skip
        embed_dim = int(cfg["embed_dim"])
        self.head = UpsamplingHead(embed_dim, 12 + (2 if config.use_s1 else 0), 12)

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
        residual = self.head(_tokens_to_grid(feats.float(), h, w), skip)
        return crop_padding(skip[:, :12] + residual, pads)


# --------------------------------------------------------------------------------------------------
# stage 3
# --------------------------------------------------------------------------------------------------
@dataclass
class Stage3Config:
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
    extra: dict = field(default_factory=dict)

    @property
    def lora_targets(self) -> str:
        return (
            STAGE3_LORA_TARGETS_CROSS if self.lora_cross_attention_only else STAGE3_LORA_TARGETS_ALL
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

    def __init__(self, config: Stage3Config):
        super().__init__()
        from terratorch.models.backbones.terramind.model.terramind_register import (
            v1_pretraining_mean,
            v1_pretraining_std,
        )
        from terratorch.registry import BACKBONE_REGISTRY

        if config.model_size not in TERRAMIND_SIZES:
            raise ValueError(
                f"model size must be one of {', '.join(TERRAMIND_SIZES)}, got {config.model_size!r}"
            )
        if config.backbone_checkpoint is not None and not Path(config.backbone_checkpoint).exists():
            raise FileNotFoundError(f"{config.backbone_checkpoint}: TerraMind checkpoint not found")
        self.config = config
        torch.manual_seed(config.init_seed)
        self.backbone = BACKBONE_REGISTRY.build(
            f"terramind_v1_{config.model_size}",
            pretrained=bool(config.pretrained),
            ckpt_path=config.backbone_checkpoint,
            modalities=["S1GRD", "S2L2A"],
            merge_method="concat",
        )
        self.backbone.requires_grad_(False)
        for key, name in (("s1", "untok_sen1grd@224"), ("s2", "untok_sen2l2a@224")):
            self.register_buffer(
                f"{key}_mean",
                torch.tensor(v1_pretraining_mean[name]).view(1, -1, 1, 1),
                persistent=False,
            )
            self.register_buffer(
                f"{key}_std",
                torch.tensor(v1_pretraining_std[name]).view(1, -1, 1, 1),
                persistent=False,
            )
        if config.use_lora:
            apply_lora(
                self.backbone, rank=config.lora_rank, alpha=config.lora_alpha,
                target_regex=config.lora_targets, dropout=config.lora_dropout,
            )  # fmt: skip
        dim = int(self.backbone.out_channels[-1])  # 2 x encoder width (concat of both modalities)
        self.head = UpsamplingHead(dim, 14, 12)

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
        grid = _tokens_to_grid(tokens.float(), x.shape[-2] // 16, x.shape[-1] // 16)
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


def config_to_dict(config: Stage2Config | Stage3Config) -> dict:
    return asdict(config)


def named_trainable(module: nn.Module) -> Iterable[tuple[str, nn.Parameter]]:
    return ((n, p) for n, p in module.named_parameters() if p.requires_grad)
