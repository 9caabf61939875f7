"""Typed configuration of every cloud_removal command (``cr-*``); no torch import here.

Each command's config is a dataclass of groups; the command layer (:mod:`eo_common.command`) turns it
into flags (``--data.crop_size`` and ``--crop_size``), ``--config file.yaml``, ``--print_config`` and
validation. Shared concepts use the shared groups of :mod:`eo_common.config` (``run``, ``optim``, the
``data`` base); the researchers' own spellings (``--batch_sz``, ``--save_model_dir``,
``--input_data_folder``) are aliases declared in :mod:`cloud_removal.cli`.

=================  ======================================  ==========================================
command            config                                  groups
=================  ======================================  ==========================================
cr-train           :class:`CRTrainConfig`                  data, model, loss, optim, run
cr-ablate          :class:`CRAblateConfig`                 ablate + everything of cr-train
cr-eval            :class:`CREvalConfig`                   data, run + checkpoint, thresholds
cr-predict         :class:`CRPredictConfig`                tiling, run + checkpoint, inputs
cr-make-datalist   :class:`CRMakeDatalistConfig`           folders, fractions, seed
=================  ======================================  ==========================================

Example:
    >>> cfg = CRTrainConfig()
    >>> cfg.model.stride, cfg.data.crop_size
    (16, 128)
    >>> from eo_common.config import config_problems
    >>> config_problems(CRTrainConfig(data=CRDataConfig(root=Path("d"), crop_size=40)))
    ['data.crop_size: 40 is not a multiple of the network stride 16 (multi-scale x 2 downsamplings); try 32']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eo_common.config import LAST_TILE_HELP, DataConfig, LastTile, OptimConfig, RunConfig, opt

__all__ = [
    "ModelConfig",
    "LossConfig",
    "CRDataConfig",
    "CRTrainConfig",
    "CREvalData",
    "CREvalConfig",
    "CRPredictConfig",
    "CRMakeDatalistConfig",
    "ModelInfoConfig",
    "SamplesConfig",
    "TRAIN_METRICS",
    "EVAL_SPLITS",
    "eval_metrics",
    "EVAL_METRICS",
    "parse_progressive",
    "SEASONS",
]

#: the four SEN12MS-CR seasons (ROI folders of the official download)
SEASONS: tuple[str, ...] = (
    "ROIs1158_spring",
    "ROIs1868_summer",
    "ROIs1970_fall",
    "ROIs2017_winter",
)


def parse_progressive(spec: str | None) -> list[tuple[int, int]]:
    """Parse a progressive crop schedule ``"128:30,192:30,256:30"`` into ``[(crop px, epochs), ...]``.

    Raises:
        ValueError: not ``size:epochs`` pairs of positive integers.

    Example:
        >>> parse_progressive("64:2,96:1")
        [(64, 2), (96, 1)]
        >>> parse_progressive("")
        []
    """
    if not spec:
        return []
    out = []
    for part in str(spec).split(","):
        try:
            size, epochs = (int(v) for v in part.strip().split(":"))
        except ValueError:
            raise ValueError(
                f"expected 'size:epochs,...' like 128:30,192:30, got {part!r}"
            ) from None
        if size <= 0 or epochs <= 0:
            raise ValueError(f"size and epochs must be positive, got {part!r}")
        out.append((size, epochs))
    return out


# ------------------------------------------------------------------------------------------ model
@dataclass
class ModelConfig:
    """model: the network (CloudRemovalCrossAttention); every enhancement is a switch."""

    in_optical: int = opt(13, help="optical bands (Sentinel-2 L1C in SEN12MS-CR: 13)", min=1)
    in_sar: int = opt(2, help="SAR bands (Sentinel-1 VV, VH)", min=1)
    base_width: int = opt(
        48,
        help="channels at full resolution; level i has base_width x 2^i (48: 6.14 M parameters)",
        min=1,
    )
    num_levels: int = opt(
        3, help="resolution levels (the encoder halves the size levels-1 times)", min=1
    )
    encoder_blocks: tuple[int, ...] = opt(
        (1, 1, 3), help="ResBlocks per encoder level, one entry per level", min=0
    )
    decoder_blocks: tuple[int, ...] = opt(
        (1, 1), help="ResBlocks per decoder level (coarse to fine), levels-1 entries", min=0
    )
    use_spectral_attention: bool = opt(
        True, help="SpectralAttentionSAR: channel attention over VV/VH before the SAR stem"
    )
    use_cross_attn: bool = opt(
        True, help="transformer cross-attention at the bottleneck (off: 1x1 concat fusion only)"
    )
    num_cross_attn_blocks: int = opt(2, help="stacked cross-attention blocks", min=1, max=3)
    num_heads: int = opt(4, help="attention heads (must divide the bottleneck width)", min=1)
    mlp_ratio: float = opt(
        2.0, help="transformer MLP width / token width", min=0, min_exclusive=True
    )
    use_sar_gating: bool = opt(
        True, help="optical-guided sigmoid gate on the SAR features per level"
    )
    use_confidence: bool = opt(
        True,
        help="CloudConfidencePredictor: output = cloudy + confidence x residual "
        "(off: cloudy + residual)",
    )
    use_global_residual: bool = opt(
        True,
        help="add the cloudy input back (off: direct prediction, blended by the confidence if on)",
    )
    multi_scale: bool = opt(True, help="run the trunk at full, 1/2 and 1/4 resolution and combine")
    multi_scale_weights: Literal["learned", "fixed"] = opt(
        "learned", help="scale weights: learned (softmax of 3 logits) or fixed"
    )
    fixed_scale_weights: tuple[float, float, float] = opt(
        (0.6, 0.25, 0.15),
        help="weights of the full, 1/2, 1/4 scales (also the learned weights' start)",
        min=0,
        min_exclusive=True,
    )
    norm: Literal["group", "batch", "none"] = opt("group", help="normalisation inside ResBlocks")
    num_groups: int = opt(8, help="GroupNorm groups", min=1)
    residual_init_std: float = opt(
        1e-3,
        help="std of the output head's initial weights (small: training starts at the identity)",
        min=0,
    )

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(int(b) for b in self.encoder_blocks)
        self.decoder_blocks = tuple(int(b) for b in self.decoder_blocks)
        self.fixed_scale_weights = tuple(float(w) for w in self.fixed_scale_weights)  # type: ignore[assignment]

    def check(self) -> list[str]:
        """Rules across fields, as ``field: message`` lines (empty: valid)."""
        problems = []
        if len(self.encoder_blocks) != self.num_levels:
            problems.append(
                f"encoder_blocks: needs {self.num_levels} entries (one per level), "
                f"got {list(self.encoder_blocks)}"
            )
        if len(self.decoder_blocks) != self.num_levels - 1:
            problems.append(
                f"decoder_blocks: needs {self.num_levels - 1} entries, got {list(self.decoder_blocks)}"
            )
        if len(self.fixed_scale_weights) != 3:
            problems.append(f"fixed_scale_weights: needs 3 weights, got {self.fixed_scale_weights}")
        top = self.base_width * 2 ** (self.num_levels - 1)
        if top % self.num_heads:
            problems.append(
                f"num_heads: the bottleneck width {top} (base_width x 2^(levels-1)) must be "
                f"divisible by num_heads={self.num_heads}"
            )
        return problems

    @property
    def widths(self) -> list[int]:
        """Channels per level, full resolution first."""
        return [self.base_width * 2**i for i in range(self.num_levels)]

    @property
    def stride(self) -> int:
        """H and W must be multiples of this (downsamplings x the 1/4 multi-scale branch)."""
        return 2 ** (self.num_levels - 1) * (4 if self.multi_scale else 1)

    def stride_reason(self) -> str:
        why = f"{self.num_levels - 1} downsamplings"
        return f"multi-scale x {why}" if self.multi_scale else why

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


# ------------------------------------------------------------------------------------------- loss
@dataclass
class LossConfig:
    """loss: the terms of the training loss (total = sum of weight x term); see losses.py."""

    use_l1_loss: bool = opt(True, help="L1 between prediction and clear target")
    l1_weight: float = opt(1.0, help="weight of the L1 term", min=0)
    use_perceptual_loss: bool = opt(
        False, help="VGG16 perceptual term on B04/B03/B02 (meaningful only with --vgg_weights)"
    )
    perceptual_weight: float = opt(0.1, help="weight of the perceptual term", min=0)
    vgg_weights: Path | None = opt(
        None, help="local ImageNet VGG16 weights (.pth) for the perceptual and texture terms"
    )
    use_fft_loss: bool = opt(False, help="L1 between the amplitude spectra (FFT)")
    fft_weight: float = opt(0.1, help="weight of the FFT term", min=0)
    use_gradient_loss: bool = opt(False, help="L1 between Sobel gradients")
    gradient_weight: float = opt(0.1, help="weight of the gradient term", min=0)
    use_contrastive_loss: bool = opt(
        False, help="NT-Xent between pooled optical and SAR bottleneck features (batch >= 2)"
    )
    contrastive_weight: float = opt(0.05, help="weight of the contrastive term", min=0)
    use_texture_loss: bool = opt(False, help="Gram-matrix texture term")
    texture_weight: float = opt(0.1, help="weight of the texture term", min=0)
    use_cloud_focused_loss: bool = opt(
        False, help="L1 weighted 1 + factor x cloud intensity (CloudFocusedLoss)"
    )
    cloud_weight_factor: float = opt(
        2.0, help="CloudFocusedLoss: extra weight of a fully cloudy pixel", min=0
    )
    cloud_focused_weight: float = opt(1.0, help="weight of the cloud-focused term", min=0)
    use_confidence_loss: bool = opt(
        True, help="BCE between the predicted confidence and the sample's cloud mask"
    )
    confidence_weight: float = opt(0.1, help="weight of the confidence term", min=0)

    def enabled(self) -> dict[str, float]:
        """``{term: weight}`` of the switched-on terms with a non-zero weight."""
        table = {
            "l1": (self.use_l1_loss, self.l1_weight),
            "perceptual": (self.use_perceptual_loss, self.perceptual_weight),
            "fft": (self.use_fft_loss, self.fft_weight),
            "gradient": (self.use_gradient_loss, self.gradient_weight),
            "contrastive": (self.use_contrastive_loss, self.contrastive_weight),
            "texture": (self.use_texture_loss, self.texture_weight),
            "cloud_focused": (self.use_cloud_focused_loss, self.cloud_focused_weight),
            "confidence": (self.use_confidence_loss, self.confidence_weight),
        }
        return {k: float(w) for k, (on, w) in table.items() if on and w != 0}

    def check(self) -> list[str]:
        if not self.enabled():
            return ["use_l1_loss: every loss term is off or has weight 0; switch one on"]
        return []


# ------------------------------------------------------------------------------------------- data
@dataclass
class CRDataConfig(DataConfig):
    """data: SEN12MS-CR samples (data list + GeoTIFFs) and how they become network inputs."""

    data_list: Path | None = opt(
        None,
        help="data list (no header; split,s1_folder,s2_cloudfree_folder,s2_cloudy_folder,filename; "
        "comma or tab separated; default <root>/data.csv)",
        aliases=("--data_list_filepath",),
    )
    load_size: int = opt(
        256, help="centre crop of every tile before anything else (px; 0: as stored)", min=0
    )
    crop_size: int = opt(
        128, help="training crop, random (px; a multiple of the network stride)", min=0
    )
    eval_crop_size: int = opt(0, help="validation/test centre crop (px; 0: crop_size)", min=0)
    normalization: Literal["glf-cr", "dsen2-cr", "uncrtaints"] = opt(
        "glf-cr",
        help="glf-cr: S2/10000, VV [-25,0] and VH [-32.5,0] dB to [0,1]; dsen2-cr; uncrtaints",
    )
    cloud_mask: Literal["difference", "s2cloudless"] = opt(
        "difference",
        help="cloud mask of a sample: |cloudy - clear| / 0.1, or the s2cloudless detector",
    )
    augment: bool = opt(
        True, help="training augmentation: flips, 90-degree rotations, brightness/contrast, noise"
    )
    synthetic_cloud_prob: float = opt(
        0.0, help="probability of procedural clouds over the clear target (training)", min=0, max=1
    )
    progressive: str = opt(
        "", help="crop schedule size:epochs,..., e.g. 128:30,192:30,256:30 (empty: crop_size)"
    )
    hard_example_mining: bool = opt(
        False, help="oversample the worst-PSNR quarter of the training tiles each epoch"
    )
    hard_example_factor: float = opt(
        3.0, help="sampling weight of the worst-PSNR tiles (others: 1)", min=1
    )
    val_fraction: float = opt(
        0.1,
        help="a list without validation rows (split 2): share of the training scenes held out "
        "for validation, whole scenes (0: refuse such a list)",
        min=0,
        max=0.5,
    )
    samples: bool = opt(
        False,
        help="use the built-in sample dataset (real BigEarthNet S1/S2 + L1C tiles, simulated "
        "clouds; built from the fetched samples on first use) instead of --input_data_folder",
    )

    def check(self) -> list[str]:
        problems = []
        try:
            parse_progressive(self.progressive)
        except ValueError as exc:
            problems.append(f"progressive: {exc}")
        return problems


def _stride_problems(data: CRDataConfig, model: ModelConfig) -> list[str]:
    stride = model.stride
    sizes = [("data.crop_size", data.crop_size), ("data.eval_crop_size", data.eval_crop_size)]
    try:
        sizes += [("data.progressive", s) for s, _ in parse_progressive(data.progressive)]
    except ValueError:
        pass
    out = []
    for key, size in sizes:
        if size and size % stride:
            fit = max(stride, size // stride * stride)
            out.append(
                f"{key}: {size} is not a multiple of the network stride {stride} "
                f"({model.stride_reason()}); try {fit}"
            )
    return out


# ------------------------------------------------------------------------------------ cr-train
@dataclass
class CRTrainConfig:
    """Everything cr-train needs (also the base of cr-ablate)."""

    data: CRDataConfig = field(default_factory=CRDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    model_name: Literal["CrossAttention"] = opt("CrossAttention", help="network by registry name")
    train_from_scratch: bool = opt(
        True, help="random initialisation (false: start from --pretrained_checkpoint)"
    )
    pretrained_checkpoint: Path | None = opt(
        None, help="cr-train checkpoint whose matching tensors initialise the network"
    )

    def check(self) -> list[str]:
        problems = _stride_problems(self.data, self.model)
        if not self.train_from_scratch and self.pretrained_checkpoint is None:
            problems.append("pretrained_checkpoint: required with --train_from_scratch false")
        return problems


#: cr-train's headline metrics: ``summary.json`` ``metrics`` (the best validation epoch by
#: ``val/psnr``), each also logged every validation under this name (``eolab sweep`` prunes on it)
TRAIN_METRICS: tuple[str, ...] = ("val/psnr", "val/ssim", "val/sam_deg", "val/mae", "val/psnr_gain")


# -------------------------------------------------------------------------------------- cr-eval
@dataclass
class CREvalData(DataConfig):
    """data: the split to score; empty values are taken from the training run's config.yaml."""

    data_list: Path | None = opt(
        None,
        help="data list (default: the run's, else <root>/data.csv)",
        aliases=("--data_list_filepath",),
    )
    split: Literal["train", "val", "test"] = opt("test", help="which split to score")
    load_size: int = opt(
        -1, help="centre crop of every tile (px; -1: the run's; 0: as stored)", min=-1
    )
    crop_size: int = opt(
        0,
        help="evaluation centre crop (px; 0: the largest multiple of the stride within load_size)",
        min=0,
    )
    cloud_mask: Literal["run", "difference", "s2cloudless"] = opt(
        "run", help="cloud mask that splits cloudy from clear pixels (run: the run's)"
    )
    val_fraction: float = opt(
        -1.0,
        help="lists without validation rows: held-out share of training scenes (-1: the run's)",
        min=-1,
        max=0.5,
    )
    limit: int = opt(0, help="score only the first N images (0: all)", min=0)


@dataclass
class CREvalConfig:
    """cr-eval: score a checkpoint and the identity baseline on a split."""

    data: CREvalData = field(default_factory=CREvalData)
    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: Path | None = opt(None, help="a cr-train checkpoint (best.ckpt)", required=True)
    cloud_threshold: float = opt(
        0.2, help="cloud intensity above which a pixel counts as cloudy (0-1)", min=0, max=1
    )
    panels: int = opt(3, help="best and worst images drawn as PNG panels (each)", min=0)
    lpips_weights: Path | None = opt(
        None, help="local LPIPS backbone weights (LPIPS is skipped without them)"
    )


EVAL_SPLITS: tuple[str, ...] = ("train", "val", "test")


def eval_metrics(split: str) -> tuple[str, ...]:
    """cr-eval's ``summary.json`` metric names for ``split``: the model over all pixels, the
    identity baseline's PSNR and the gain over it, PSNR and gain over cloudy and clear pixels.

    ``<split>/lpips`` is there only with ``--lpips_weights``; the cloudy / clear ones only when the
    split has such pixels.

    Example:
        >>> eval_metrics("test")[:3]
        ('test/psnr', 'test/ssim', 'test/sam_deg')
    """
    names = ["psnr", "ssim", "sam_deg", "mae", "rmse", "lpips", "identity_psnr", "psnr_gain"]
    names += [f"{region}_psnr{gain}" for region in ("cloudy", "clear") for gain in ("", "_gain")]
    return tuple(f"{split}/{name}" for name in names)


#: every name cr-eval may write (all splits)
EVAL_METRICS: tuple[str, ...] = tuple(n for split in EVAL_SPLITS for n in eval_metrics(split))


# ----------------------------------------------------------------------------------- cr-predict
@dataclass
class CRPredictConfig:
    """cr-predict: a cloud-free GeoTIFF of a scene of any size."""

    run: RunConfig = field(default_factory=RunConfig)
    checkpoint: Path | None = opt(None, help="a cr-train checkpoint (best.ckpt)", required=True)
    s2: Path | None = opt(
        None,
        help="cloudy Sentinel-2 L1C GeoTIFF, 13 bands in DN (B01..B12 with B8A, B10)",
        required=True,
    )
    s1: Path | None = opt(
        None, help="Sentinel-1 GeoTIFF, 2 bands VV, VH in dB, on the grid of --s2", required=True
    )
    output_name: str = opt(
        "", help="file name of the GeoTIFF in the run folder (default <s2 stem>_cloudfree.tif)"
    )
    tile_size: int = opt(256, help="tile side (px; a multiple of the network stride)", min=1)
    overlap: int = opt(32, help="overlap of neighbouring tiles (px), blended", min=0)
    pad: int = opt(16, help="reflected context around each tile, cropped off again (px)", min=0)
    last_tile: LastTile = opt("stretch", help=LAST_TILE_HELP)
    blend: Literal["cosine", "linear", "none"] = opt("cosine", help="blending ramp in the overlaps")
    out_dtype: Literal["uint16", "float32"] = opt(
        "uint16", help="uint16 DN (nodata 0) or float32 DN (nodata NaN)"
    )
    with_confidence: bool = opt(
        False, help="append the cloud confidence (0-1) as band 14 (float32)"
    )
    batch_size: int | Literal["auto"] = opt(
        "auto",
        help="tiles per forward pass (the output does not depend on it): a number, or auto = on a "
        "GPU as many tiles as fit in 60 % of its free memory (at most 128), on the CPU 2",
        min=1,
        identity=False,
    )
    cog: bool = opt(
        True,
        help="write a Cloud-Optimised GeoTIFF (256 px tiles, DEFLATE, overviews); false: keep the "
        "streamed GeoTIFF (16-row strips) and add overviews in place, without a second copy",
        identity=False,
    )

    def check(self) -> list[str]:
        problems = []
        if self.overlap >= self.tile_size:
            problems.append(f"overlap: must be smaller than tile_size {self.tile_size}")
        if self.pad >= self.tile_size:
            problems.append(f"pad: must be smaller than tile_size {self.tile_size}")
        if self.run.output_dir.suffix.lower() in (".tif", ".tiff"):
            problems.append(
                f"run.output_dir: cr-predict writes a run folder (GeoTIFF, config.yaml, summary.json); "
                f"give a folder, and --output_name {self.run.output_dir.name} for the file name"
            )
        if "/" in self.output_name or "\\" in self.output_name:
            problems.append(f"output_name: a file name, not a path, got {self.output_name!r}")
        return problems


# ----------------------------------------------------------------------------- cr-make-datalist
@dataclass
class CRMakeDatalistConfig:
    """cr-make-datalist: a data list from the official SEN12MS-CR download tree."""

    root: Path | None = opt(
        None,
        help="download folder holding <season>_s1/, <season>_s2/, <season>_s2_cloudy/ of one or "
        f"more seasons ({', '.join(SEASONS)})",
        aliases=("--input_data_folder", "--data_root"),
        required=True,
    )
    out: Path | None = opt(
        None, help="the list to write (default <root>/data.csv)", aliases=("--data_list_filepath",)
    )
    val_fraction: float = opt(
        0.1, help="share of the scenes in the validation split", min=0, max=0.9
    )
    test_fraction: float = opt(0.1, help="share of the scenes in the test split", min=0, max=0.9)
    seed: int = opt(0, help="seed of the scene shuffle that assigns the splits")
    overwrite: bool = opt(False, help="replace an existing list")

    def check(self) -> list[str]:
        if self.val_fraction + self.test_fraction >= 1:
            return ["val_fraction: val_fraction + test_fraction must be < 1 (train needs scenes)"]
        return []


# ----------------------------------------------------------------- python -m cloud_removal.samples
@dataclass
class SamplesConfig:
    """python -m cloud_removal.samples: build the sample dataset (real samples, simulated clouds)."""

    dest: Path | None = opt(
        None,
        help="output folder (default: <eolab data root>/cloud_removal_samples)",
        positional=True,
    )
    seed: int = opt(0, help="seeds cloud draws, scene-tile positions and SAR speckle")
    train_draws: int = opt(3, help="cloud realisations per training patch", min=1)
    scene_tiles: int = opt(16, help="13-band L1C scene tiles added to the training split", min=0)
    overwrite: bool = opt(False, help="rebuild even when a complete copy exists")


# ------------------------------------------------------------------- python -m cloud_removal.model
@dataclass
class ModelInfoConfig:
    """python -m cloud_removal.model: parameter count and switches of a configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    model_name: Literal["CrossAttention"] = opt("CrossAttention", help="network by registry name")
