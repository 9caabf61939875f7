"""The typed configuration of every glacier_seg command (no torch import: ``--help`` stays fast).

One dataclass per command, made of groups; every field is an ``opt()`` with its help text, unit and
range, so the command layer (:mod:`eo_common.command`) gives it a flag (``--group.field`` and the
short ``--field`` where unique), a key in ``--config`` files and a line in ``--help``:

================  ==========================================================================
group             what
================  ==========================================================================
``data``          GlacierHack root, split, batches, crops and sampling, normalisation, nodata
``glcm``          the GLCM texture channels appended to the five bands
``model``         the U-Net: encoder, its initial weights, decoder widths, scSE attention
``loss``          the weighted sum of focal, Dice, MCC, boundary, Lovasz and Tversky terms
``optim``         eolab's shared optimisation group (epochs, lr, schedule, warmup, restarts)
``run``           eolab's shared run group (output folder, seed, resume, devices, precision)
================  ==========================================================================

Example:
    >>> cfg = GlacierTrainConfig()
    >>> cfg.in_channels, cfg.model.decoder_attention_type
    (7, 'scse')
    >>> from eo_common.config import config_problems
    >>> bad = GlacierTrainConfig(model=ModelConfig(decoder_channels=[256, 128, 64, 32, 8]))
    >>> config_problems(bad)
    ['data.root: required (give --data_root or --demo)', 'model.decoder_channels: must be >= 16, got [256, 128, 64, 32, 8]']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from eo_common.config import DataConfig, OptimConfig, RunConfig, opt

__all__ = [
    "CLASS_NAMES",
    "GLCM_PROPERTY_NAMES",
    "GlacierData",
    "GLCMOptions",
    "ModelConfig",
    "LossConfig",
    "GlacierTrainConfig",
    "EvalData",
    "InferenceData",
    "GlacierEvalConfig",
    "GlacierPredictConfig",
    "DiagnoseOptions",
    "GlacierDiagnoseConfig",
    "split_keys",
    "TRAIN_METRICS",
    "EVAL_METRICS",
    "PREDICT_METRICS",
    "DIAGNOSE_METRICS",
]

CLASS_NAMES: tuple[str, ...] = ("background", "glacier", "debris", "lake")

#: glacier-train's headline metrics: ``summary.json`` ``metrics`` (the best epoch by ``val/mcc``),
#: each also logged every validation under this name (``eolab sweep`` prunes on it)
TRAIN_METRICS: tuple[str, ...] = (
    "val/mcc",
    "val/kappa",
    "val/accuracy",
    "val/loss",
    *(f"val/per_class/{name}/{m}" for name in CLASS_NAMES for m in ("iou", "f1")),
)
#: glacier-eval's ``summary.json`` metrics (named ``test/`` whichever tiles are scored)
EVAL_METRICS: tuple[str, ...] = (
    "test/mcc",
    "test/mcc_sklearn",
    "test/kappa",
    "test/accuracy",
    *(f"test/per_class/{name}/{m}" for name in CLASS_NAMES for m in ("iou", "f1")),
)
#: glacier-predict's ``summary.json`` metrics (counts of tiles)
PREDICT_METRICS: tuple[str, ...] = ("tiles_written", "tiles_skipped")
#: glacier-diagnose's ``summary.json`` metrics; the ablation ones only with ``--ablation_epochs``
#: (``7ch_pretrained`` only with encoder weights), the others only once the tiles pair up
DIAGNOSE_METRICS: tuple[str, ...] = (
    "diagnose/pairing_ok",
    "diagnose/trivial_baseline_mcc",
    "diagnose/overfit_mcc",
    *(
        f"diagnose/ablation/{name}/val_mcc"
        for name in ("5ch_bands", "7ch_bands_glcm", "7ch_pretrained")
    ),
)
#: the properties :mod:`glacier_seg.texture` computes (kept here so the config needs no numpy)
GLCM_PROPERTY_NAMES: tuple[str, ...] = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "energy",
    "correlation",
    "ASM",
)
BinaryMasks = Literal["refuse", "glacier", "four_class"]


def split_keys(text: str | None) -> list[str]:
    """Comma- or space-separated tile keys as a list (``"02_07, 13"`` -> ``["02_07", "13"]``).

    Example:
        >>> split_keys("02_07, 13"), split_keys("")
        (['02_07', '13'], [])
    """
    return [k for k in str(text or "").replace(",", " ").split() if k]


@dataclass
class GlacierData(DataConfig):
    """data: GlacierHack tiles, the validation split, training crops and sampling, normalisation."""

    val_ids: str = opt(
        "",
        help="tile keys held out for validation, comma-separated (e.g. 02_07,13; leading zeros "
        "do not matter); empty: a seeded val_fraction of the tiles",
    )
    val_fraction: float = opt(
        0.2, help="fraction of the tiles held out when val_ids is empty", min=0.0, max=0.9
    )
    normalization: Literal["percentile", "dataset"] = opt(
        "percentile",
        help="percentile: each tile and channel stretched between its 2 and 98 % values; dataset: "
        "standardised with the training tiles' mean and std",
    )
    include_glcm: bool = opt(True, help="append the GLCM texture channels (see the glcm group)")
    glcm_cache: Path | None = opt(
        None,
        help="folder of cached texture channels (default: <eolab data dir>/glcm_cache)",
        identity=False,
    )
    binary_masks: BinaryMasks = opt(
        "refuse",
        help="masks that hold only 0 and 255 in every tile: refuse them (default), read 255 as "
        "glacier, or read them as four-class masks (255 = lake)",
    )
    crop_size: int = opt(256, help="training crop side (px, a multiple of 32)", min=32)
    samples_per_epoch: int = opt(0, help="training crops per epoch (0: 8 per training tile)", min=0)
    lake_weight: float = opt(
        0.0,
        help="extra sampling weight of tiles with lake: a tile is drawn with weight "
        "1 + lake_weight [lake] + debris_weight [debris]",
        min=0,
    )
    debris_weight: float = opt(0.0, help="extra sampling weight of tiles with debris", min=0)
    p_minority: float = opt(
        0.0, help="probability that a crop is centred on a debris or lake pixel", min=0, max=1
    )
    augment: bool = opt(True, help="random flips and 90-degree rotations of the crops")
    mixup: bool = opt(False, help="MixUp batches (loss mixed with the same lambda)")
    mixup_alpha: float = opt(0.4, help="MixUp Beta(alpha, alpha)", min=0, min_exclusive=True)
    cutmix: bool = opt(False, help="CutMix batches (one box pasted into image and mask)")
    cutmix_alpha: float = opt(1.0, help="CutMix Beta(alpha, alpha)", min=0, min_exclusive=True)
    demo: bool = opt(
        False,
        help="train on derived-label tiles cut from the real Landsat-8 sample scene (written to "
        "data.root, or the eolab data dir when it is empty)",
    )

    def check(self) -> list[str]:
        problems = []
        if self.crop_size % 32:
            problems.append(f"crop_size: must be a multiple of 32, got {self.crop_size}")
        if self.root is None and not self.demo:
            problems.append("root: required (give --data_root or --demo)")
        return problems


@dataclass
class GLCMOptions:
    """glcm: the grey-level co-occurrence texture channels of one band (used when data.include_glcm)."""

    band: int = opt(
        3,
        help="band to texture, 1..5 = Landsat-8 B2, B3, B4, B6, B10 (3 = B4, red)",
        aliases=("--glcm_band",),
        min=1,
        max=5,
    )
    window: int = opt(7, help="odd window side (px)", aliases=("--glcm_window",), min=3)
    levels: int = opt(32, help="grey levels", aliases=("--glcm_levels",), min=2, max=256)
    distances: list[int] = opt(
        help="pixel-pair distances (px), e.g. [1,2]",
        factory=lambda: [1],
        aliases=("--glcm_distances",),
        min=1,
    )
    angles: list[float] = opt(
        help="pixel-pair angles (degrees)",
        factory=lambda: [0.0, 45.0, 90.0, 135.0],
        aliases=("--glcm_angles",),
    )
    properties: list[str] = opt(
        help="texture properties, one channel each: any of " + ", ".join(GLCM_PROPERTY_NAMES),
        factory=lambda: ["contrast", "homogeneity"],
        aliases=("--glcm_properties",),
    )
    per_angle: bool = opt(
        False,
        help="one channel per (property, distance, angle) instead of the mean over them",
        aliases=("--glcm_per_angle",),
    )

    @property
    def num_channels(self) -> int:
        """Texture channels this configuration adds."""
        per = len(self.distances) * len(self.angles) if self.per_angle else 1
        return len(self.properties) * per

    def check(self) -> list[str]:
        problems = []
        if self.window % 2 == 0:
            problems.append(f"window: must be odd, got {self.window}")
        bad = [p for p in self.properties if p not in GLCM_PROPERTY_NAMES]
        if bad or not self.properties:
            problems.append(
                f"properties: choose from {list(GLCM_PROPERTY_NAMES)}, got {bad or '[]'}"
            )
        if not self.angles:
            problems.append("angles: give at least one angle")
        if not self.distances:
            problems.append("distances: give at least one distance")
        elif max(self.distances) >= self.window:
            problems.append(
                f"distances: {max(self.distances)} px does not fit in the {self.window} px window"
            )
        return problems

    def texture(self) -> Any:
        """The :class:`glacier_seg.texture.GLCMConfig` these options describe."""
        from glacier_seg.texture import GLCMConfig

        return GLCMConfig(
            band=self.band,
            window=self.window,
            levels=self.levels,
            distances=tuple(int(d) for d in self.distances),
            angles_deg=tuple(float(a) for a in self.angles),
            properties=tuple(self.properties),
            average_angles=not self.per_angle,
        )


@dataclass
class ModelConfig:
    """model: the U-Net (smp) with scSE decoder attention."""

    encoder_name: str = opt(
        "resnet34", help="any segmentation_models_pytorch encoder (resnet34, efficientnet-b0, ...)"
    )
    encoder_weights: str = opt(
        "none",
        help="initial encoder weights: none, imagenet (smp download, needs the network) or a local "
        "file with a 3-channel encoder state dict",
        aliases=("--pretrained",),
    )
    extra_channel_init: Literal["rgb_matched", "smp", "zero"] = opt(
        "rgb_matched",
        help="how pretrained RGB filters initialise 5 or 7 input channels (see the README)",
    )
    decoder_channels: list[int] = opt(
        help="U-Net decoder widths, one per encoder stage (>= 16: scSE squeezes by 16)",
        factory=lambda: [256, 128, 64, 32, 16],
        min=16,
    )
    decoder_attention_type: Literal["scse", "none"] = opt("scse", help="decoder attention")

    def check(self) -> list[str]:
        problems = []
        if len(self.decoder_channels) != 5:
            problems.append(
                f"decoder_channels: needs 5 widths (one per encoder stage), got {self.decoder_channels}"
            )
        weights = (self.encoder_weights or "none").strip()
        if weights.lower() not in ("none", "null", "", "imagenet") and not Path(weights).is_file():
            problems.append(
                f"encoder_weights: no such file {weights!r} (give none, imagenet or a local file)"
            )
        return problems


@dataclass
class LossConfig:
    """loss: weighted sum of terms; a weight of 0 switches a term off."""

    focal_weight: float = opt(1.0, help="weight of the focal term", min=0)
    dice_weight: float = opt(1.0, help="weight of the soft Dice term", min=0)
    mcc_weight: float = opt(0.5, help="weight of the 1 - soft MCC term", min=0)
    boundary_weight: float = opt(0.0, help="weight of the Kervadec boundary term", min=0)
    lovasz_weight: float = opt(0.0, help="weight of the Lovasz-softmax term", min=0)
    tversky_weight: float = opt(0.0, help="weight of the Tversky term", min=0)
    focal_gamma: list[float] = opt(
        help="focal gamma: one value, or one per class (background, glacier, debris, lake)",
        factory=lambda: [2.0],
        min=0,
    )
    class_weights: list[float] | None = opt(
        None, help="focal alpha per class, e.g. [0.5,1,2,4] (none: equal)", min=0
    )
    tversky_alpha: float = opt(0.3, help="Tversky false-positive weight", min=0)
    tversky_beta: float = opt(0.7, help="Tversky false-negative weight", min=0)

    def check(self) -> list[str]:
        problems = []
        weights = (
            self.focal_weight,
            self.dice_weight,
            self.mcc_weight,
            self.boundary_weight,
            self.lovasz_weight,
            self.tversky_weight,
        )
        if all(w == 0 for w in weights):
            problems.append("focal_weight: every loss weight is 0; enable at least one term")
        if len(self.focal_gamma) not in (1, len(CLASS_NAMES)):
            problems.append(f"focal_gamma: give 1 or 4 values, got {len(self.focal_gamma)}")
        if self.class_weights is not None and len(self.class_weights) != len(CLASS_NAMES):
            problems.append(f"class_weights: give 4 values, got {len(self.class_weights)}")
        return problems


@dataclass
class GlacierTrainConfig:
    """Everything ``glacier-train`` needs."""

    data: GlacierData = field(default_factory=GlacierData)
    glcm: GLCMOptions = field(default_factory=GLCMOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    export_smp: bool = opt(
        True,
        help="also write the best network with smp's save_pretrained to <run>/smp_model "
        "(segmentation_models_pytorch.from_pretrained loads it)",
        identity=False,
    )

    @property
    def in_channels(self) -> int:
        """Network input channels: 5 bands, plus the texture channels when ``data.include_glcm``."""
        return 5 + (self.glcm.num_channels if self.data.include_glcm else 0)


@dataclass
class InferenceData(DataConfig):
    """data: the tiles to read (Band1..Band5 folders) and how many go through the network at once."""

    glcm_cache: Path | None = opt(
        None,
        help="folder of cached texture channels (default: <eolab data dir>/glcm_cache)",
        identity=False,
    )
    batch_size: int | Literal["auto"] = opt(
        "auto",
        help="tiles (with --window: windows) per forward pass, a number, or auto = on a GPU as many "
        "as fit in 60 % of its free memory (at most 128), on the CPU 2; the predictions do not "
        "depend on it beyond float32 rounding",
        min=1,
        identity=False,
    )


#: ``--window`` of glacier-eval and glacier-predict
WINDOW_HELP = (
    "sliding-window side (px): predict each tile in windows of this size blended over "
    "--window_overlap, the last window of each row and column stretched to the tile's border "
    "(memory bounded by data.batch_size windows, any tile size); 0: each tile whole in one "
    "forward pass"
)


def _window_problems(window: int, overlap: int) -> list[str]:
    if window and overlap >= window:
        return [f"window_overlap: must be smaller than window {window}, got {overlap}"]
    return []


@dataclass
class EvalData(InferenceData):
    """data: the labelled tiles to score and how many go through the network at once."""

    binary_masks: BinaryMasks = opt(
        "refuse",
        help="masks that hold only 0 and 255 in every tile: refuse them (default), read 255 as "
        "glacier, or read them as four-class masks (255 = lake)",
    )


def _checkpoint_list(value: Any) -> list[Path]:
    if value is None or value == "":
        return []
    if isinstance(value, str | Path):
        return [Path(value)]
    return [Path(v) for v in value]


@dataclass
class GlacierEvalConfig:
    """Everything ``glacier-eval`` needs."""

    checkpoints: list[Path] | Path | None = opt(
        None,
        help="glacier-train checkpoint, or a list [a.ckpt,b.ckpt] scored as an ensemble (mean "
        "probabilities)",
        aliases=("--checkpoint",),
        required=True,
    )
    data: EvalData = field(default_factory=EvalData)
    split: Literal["val", "all"] = opt(
        "val", help="val: the validation tiles of the checkpoint's run; all: every tile"
    )
    tile_ids: str = opt("", help="tile keys to score, comma-separated (overrides split)")
    tta: bool = opt(False, help="average the probabilities over horizontal and vertical flips")
    scales: list[float] = opt(
        help="inference scales, e.g. [1.0,0.75] (bilinear resize in, probabilities back)",
        factory=lambda: [1.0],
        min=0,
        min_exclusive=True,
    )
    max_panels: int = opt(
        8, help="prediction panels to draw, tiles with the most non-background pixels first", min=0
    )
    window: int = opt(
        0,
        help=WINDOW_HELP,
        min=0,
    )
    window_overlap: int = opt(64, help="overlap of neighbouring windows (px)", min=0)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        self.checkpoints = _checkpoint_list(self.checkpoints)

    def check(self) -> list[str]:
        problems = _window_problems(self.window, self.window_overlap)
        if self.data.root is None:
            problems.append("data.root: required (give --data_root)")
        return problems


@dataclass
class GlacierPredictConfig:
    """Everything ``glacier-predict`` needs."""

    checkpoints: list[Path] | Path | None = opt(
        None,
        help="glacier-train checkpoint, or a list [a.ckpt,b.ckpt] (ensemble: mean probabilities)",
        aliases=("--checkpoint",),
        required=True,
    )
    data: InferenceData = field(default_factory=InferenceData)
    name_template: str = opt(
        "{band1}",
        help="name of each competition mask in <run>/masks: {band1} = the tile's Band1 file name "
        "(what the GlacierHack platform expects), {key} = its tile key, e.g. "
        "Y_output_resized_{key}.tif",
    )
    class_maps: bool = opt(
        True,
        help="also write a GIS class map per tile to <run>/class_maps (COG, values 0-3, colour "
        "table, category names, QGIS style; nodata 255)",
    )
    tta: bool = opt(False, help="average the probabilities over horizontal and vertical flips")
    scales: list[float] = opt(
        help="inference scales, e.g. [1.0,0.75]", factory=lambda: [1.0], min=0, min_exclusive=True
    )
    window: int = opt(
        0,
        help=WINDOW_HELP,
        min=0,
    )
    window_overlap: int = opt(64, help="overlap of neighbouring windows (px)", min=0)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        self.checkpoints = _checkpoint_list(self.checkpoints)

    def check(self) -> list[str]:
        problems = _window_problems(self.window, self.window_overlap)
        if self.data.root is None:
            problems.append("data.root: required (give --data_root or --input)")
        if "{band1}" not in self.name_template and "{key}" not in self.name_template:
            problems.append(
                "name_template: must contain {band1} or {key}, or every tile would get one name"
            )
        return problems


@dataclass
class DiagnoseOptions:
    """diagnose: the overfit-one-batch sanity run and the short 5- vs 7-channel ablation."""

    overfit_steps: int = opt(200, help="most optimiser steps of the overfit-one-batch run", min=1)
    overfit_crop: int = opt(64, help="crop side of the overfit batch (px)", min=16)
    target_mcc: float = opt(0.9, help="MCC the overfit run must reach on its batch", min=0, max=1)
    ablation_epochs: int = opt(0, help="epochs per ablation variant (0: no ablation)", min=0)


@dataclass
class GlacierDiagnoseConfig:
    """Everything ``glacier-diagnose`` needs: the training groups plus the checks' own options."""

    data: GlacierData = field(default_factory=GlacierData)
    glcm: GLCMOptions = field(default_factory=GLCMOptions)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    diagnose: DiagnoseOptions = field(default_factory=DiagnoseOptions)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def in_channels(self) -> int:
        return 5 + (self.glcm.num_channels if self.data.include_glcm else 0)
