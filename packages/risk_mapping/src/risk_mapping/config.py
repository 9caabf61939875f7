"""The typed configuration of every risk_mapping command (no torch import: ``--help`` stays fast).

A risk config is the YAML file the researchers already write (``packages/risk_mapping/config.yaml``):
the sections ``dataset``, ``model``, ``training`` (with ``augmentation``), ``inference`` (with
``crf``) and ``evaluation`` (with ``targets``), and at the top level the run settings (``output_dir``,
``seed``, ...). Each section is a dataclass of :func:`eo_common.config.opt` fields; the shared command
layer (:mod:`eo_common.command`) turns them into flags (``--training.lr 1e-4``, ``--seed 42``),
``--config file.yaml`` (relative paths are relative to the file), ``--print_config`` and validation
that names every bad key, type and range at once. :meth:`RiskConfig.check` adds the rules across
fields and that the input files exist; what needs the files opened (grids, CRS, nodata, bands, label
values) is checked by :func:`risk_mapping.sources.check_inputs` before any work starts.

How the shared concepts map onto the risk keys (the one place where this is decided)
    The top level of a risk config *is* the shared ``run`` group: :class:`RiskConfig` extends
    :class:`eo_common.config.RunConfig`, so ``output_dir``, ``seed``, ``resume``, ``overwrite``,
    ``time_budget_s``, ``accelerator``, ``devices``, ``precision``, ``threads``, ``log`` and
    ``progress`` are the shared fields under their shared names (``--run.seed`` is accepted as well).
    The researchers' training keys stay in ``training`` (``training.epochs``,
    ``training.use_focal_loss``, ...); :attr:`RiskConfig.optim` builds the shared
    :class:`eo_common.config.OptimConfig` from them, so there is no second ``optim`` group:

    ===========================  ==============================================================
    risk key                     shared concept
    ===========================  ==============================================================
    ``output_dir``, ``seed``,    ``run.*`` (the same fields: RiskConfig is a RunConfig)
    ``resume`` ... (top level)
    ``training.epochs``          ``optim.epochs``
    ``training.lr``              ``optim.lr``
    ``training.weight_decay``    ``optim.weight_decay``
    ``training.lr_scheduler``    ``optim.scheduler``
    ``training.patience``        ``optim.early_stop_patience`` (on ``val/kappa``)
    ``training.grad_clip``       ``optim.grad_clip``
    ``training.limit_train_batches``  ``optim.limit_train_batches``
    ``training.batch_size``      ``data.batch_size``
    ``training.num_workers``     ``data.num_workers``
    ``training.accelerator``     old spelling of the top-level ``accelerator`` (null: not set)
    ``dataset.root``             ``data.root`` (the Landslide4Sense folder)
    ===========================  ==============================================================

Example:
    >>> cfg = RiskConfig(dataset=DatasetConfig(stack=Path("s.tif"), labels=Path("l.tif")))
    >>> cfg.optim.early_stop_patience == cfg.training.patience, cfg.run.seed
    (True, 0)
    >>> [p for p in RiskConfig(file_check=False).check() if p.startswith("dataset")]
    ['dataset.stack: required for layout rasters (a multi-band GeoTIFF or a list of rasters)', 'dataset.labels: required for layout rasters']
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from eo_common.config import LAST_TILE_HELP, LastTile, OptimConfig, RunConfig, opt

from risk_mapping.config_rules import (
    CATEGORICAL_RESAMPLING,
    CLASS_NAMES,
    CONTINUOUS_RESAMPLING,
    IGNORE_INDEX,
    NUM_CLASSES,
    STAGES,
    dataset_problems,
    inference_problems,
    missing_files,
    model_problems,
    stack_files,
)

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "STAGES",
    "CONTINUOUS_RESAMPLING",
    "CATEGORICAL_RESAMPLING",
    "DatasetConfig",
    "ModelConfig",
    "AugmentationConfig",
    "TrainingConfig",
    "CRFConfig",
    "InferenceConfig",
    "TargetsConfig",
    "EvaluationConfig",
    "RiskConfig",
    "ValidateConfig",
    "EvaluateConfig",
    "run_fields",
    "stack_files",
    "HEADLINE_SCORES",
    "EVALUATION_SPLITS",
    "evaluation_metrics",
    "EVALUATION_METRICS",
]

#: the headline scores of an evaluated class map (risk-pipeline's evaluate stage, risk-evaluate)
HEADLINE_SCORES: tuple[str, ...] = ("kappa", "class1_precision", "class2_recall", "spearman_rho")
#: the prefixes of those scores: the scored blocks (``all``: every labelled pixel)
EVALUATION_SPLITS: tuple[str, ...] = ("train", "val", "test", "all")


def evaluation_metrics(split: str) -> tuple[str, ...]:
    """``summary.json`` metric names of an evaluation of ``split``: each headline score of the
    network's map, then of the map after the dense CRF (``_crf``, only when the CRF is on).

    Example:
        >>> evaluation_metrics("test")[:2], evaluation_metrics("test")[4]
        (('test/kappa', 'test/class1_precision'), 'test/kappa_crf')
    """
    return tuple(f"{split}/{n}{sfx}" for sfx in ("", "_crf") for n in HEADLINE_SCORES)


#: every name risk-pipeline and risk-evaluate may write (all splits)
EVALUATION_METRICS: tuple[str, ...] = tuple(
    n for split in EVALUATION_SPLITS for n in evaluation_metrics(split)
)


@dataclass
class DatasetConfig:
    """dataset: input rasters (or a Landslide4Sense folder), the spatial split, tiling and oversampling."""

    layout: Literal["rasters", "landslide4sense"] = opt(
        "rasters",
        help="rasters: a stack (one file or a list) + a label raster; landslide4sense: "
        "images/<split>/image_N.h5 + annotations/<split>/mask_N.h5 under dataset.root",
    )
    stack: Path | list[Path] | None = opt(
        None, help="multi-band GeoTIFF, or a list of rasters stacked in this order"
    )
    labels: Path | None = opt(
        None, help="label raster: 0 low, 1 medium, 2 high, 255 ignore (or see label_map)"
    )
    root: Path | None = opt(
        None, help="data set folder (layout landslide4sense)", aliases=("--data_root",)
    )
    band_names: list[str] | None = opt(None, help="names of the stack bands (default: file names)")
    kinds: list[Literal["continuous", "categorical"]] = opt(
        help="one per stack file: continuous (DEM, slope, reflectance) or categorical (land cover "
        "codes: resampled with nearest/mode only, never interpolated); empty: all continuous",
        factory=list,
    )
    resampling: str | list[str] = opt(
        "bilinear",
        help="resampling onto the reference grid: one name for every continuous raster "
        f"({', '.join(CONTINUOUS_RESAMPLING)}) or one per stack file",
    )
    categorical_resampling: Literal["nearest", "mode"] = opt(
        "mode", help="resampling of categorical rasters when dataset.resampling is one name"
    )
    labels_resampling: Literal["nearest", "mode"] = opt(
        "mode", help="resampling of the labels when they are on another grid"
    )
    nodata: list[float | None] = opt(
        help="one per stack file: its nodata value (null: the value in the file); empty: all "
        "from the files",
        factory=list,
    )
    label_map: list[int] = opt(
        help="risk class of each source label value (position = value), e.g. [0, 2] for binary "
        "landslide masks; 255 = ignore; empty: values are already 0/1/2/255",
        factory=list,
    )
    align_rasters: bool = opt(
        False, help="resample rasters (and labels) on another grid onto the reference grid"
    )
    reproject: bool = opt(
        False, help="with align_rasters: also reproject rasters in another CRS (never silent)"
    )
    reference_grid: Literal["stack", "labels"] = opt(
        "stack", help="grid everything is aligned to: the first stack raster's or the labels'"
    )
    optical_bands: list[int] = opt(
        help="0-based stack bands that get brightness/contrast/saturation jitter",
        factory=list,
        min=0,
    )
    tile_size: int = opt(64, help="training tile side (px, multiple of 32)", min=32, max=4096)
    overlap: int = opt(16, help="overlap of neighbouring training tiles (px)", min=0, max=2048)
    min_valid_fraction: float = opt(
        0.5, help="drop tiles with fewer labelled pixels (fraction)", min=0.0, max=1.0
    )
    block_size: int = opt(
        256, help="side of the square blocks assigned whole to train/val/test (px)", min=32
    )
    val_fraction: float = opt(0.15, help="fraction of blocks for validation", min=0.0, max=0.9)
    test_fraction: float = opt(0.15, help="fraction of blocks for testing", min=0.0, max=0.9)
    oversample_class: int = opt(1, help="class to oversample (1 = medium)", min=0, max=2)
    oversample_target_fraction: float = opt(
        0.3,
        help="duplicate rich tiles until this fraction of labelled pixels is oversample_class "
        "(0: no duplication)",
        min=0.0,
        max=0.95,
    )
    medium_rich_threshold: float = opt(
        0.3, help="a tile with at least this fraction of oversample_class pixels is 'rich'", min=0.0
    )
    use_smote: bool = opt(True, help="add SMOTE tiles interpolated between rich tiles")
    smote_k_neighbors: int = opt(5, help="SMOTE neighbours", min=1, max=100)
    smote_ratio: float = opt(0.5, help="synthetic tiles per rich tile", min=0.0, max=10.0)
    smote_too_few: Literal["lower_k", "skip", "error"] = opt(
        "lower_k", help="fewer rich tiles than smote_k_neighbors + 1: lower k, skip, or error"
    )

    def __post_init__(self) -> None:
        if isinstance(self.stack, list | tuple):
            self.stack = [Path(p) for p in self.stack]
        elif self.stack is not None:
            self.stack = Path(self.stack)
        for key in ("labels", "root"):
            if getattr(self, key) is not None:
                setattr(self, key, Path(getattr(self, key)))


@dataclass
class ModelConfig:
    """model: smp U-Net with a switchable attention block and a softmax + CORAL head."""

    encoder: str = opt(
        "resnet34", help="encoder name smp knows (efficientnet-b4, resnet50, tu-<timm name>, ...)"
    )
    encoder_weights: str | None = opt(
        None, help="'imagenet' (needs the weights in the local cache) or null"
    )
    attention: bool = opt(True, help="CBAM attention on the deepest encoder features")
    attention_reduction: int = opt(16, help="channel reduction of the attention MLP", min=1)
    dropout_prob: float = opt(0.2, help="Dropout2d before the heads", min=0.0, max=0.9)
    decoder_channels: list[int] = opt(
        help="U-Net decoder widths (5 values)", factory=lambda: [256, 128, 64, 32, 16], min=1
    )
    coral_ordered_biases: bool = opt(True, help="keep the CORAL biases ordered (rank-consistent)")


@dataclass
class AugmentationConfig:
    """training.augmentation: flips and 90-degree turns on all bands, jitter on optical bands."""

    flips: bool = opt(True, help="random horizontal and vertical flips")
    rotations: bool = opt(True, help="random multiples of 90 degrees")
    brightness: float = opt(0.1, help="additive offset range (standard units)", min=0.0, max=2.0)
    contrast: float = opt(0.1, help="scale range around the tile mean", min=0.0, max=1.0)
    saturation: float = opt(0.1, help="scale range around the optical mean", min=0.0, max=1.0)


@dataclass
class TrainingConfig:
    """training: loss, optimisation and stopping (see the module docstring for the shared names)."""

    epochs: int = opt(50, help="training epochs (optim.epochs)", min=1, max=10000)
    patience: int = opt(
        10, help="early stopping: epochs without a better val/kappa (0: never)", min=0
    )
    batch_size: int = opt(16, help="tiles per batch (data.batch_size)", min=1)
    lr: float = opt(1e-3, help="peak learning rate", min=0.0, min_exclusive=True, max=1.0)
    weight_decay: float = opt(1e-4, help="AdamW weight decay", min=0.0, max=1.0)
    lr_scheduler: Literal["cosine", "step", "plateau", "cosine_restarts", "none"] = opt(
        "cosine", help="learning-rate schedule (optim.scheduler)"
    )
    grad_clip: float = opt(0.0, help="clip the gradient L2 norm (0: off)", min=0.0)
    limit_train_batches: float = opt(
        1.0, help="batches per epoch: a fraction (<= 1) or a count (> 1)", min=0.0
    )
    use_focal_loss: bool = opt(True, help="focal loss (false: weighted cross-entropy)")
    focal_gamma: float = opt(2.0, help="focal exponent", min=0.0, max=10.0)
    class_weights: list[float] | None = opt(
        None, help="per-class loss weights (low, medium, high)", min=0.0
    )
    use_ordinal_loss: bool = opt(True, help="add coral_weight x the CORAL ordinal loss")
    coral_weight: float = opt(0.5, help="weight of the CORAL loss", min=0.0, max=100.0)
    label_smoothing: float = opt(0.0, help="label smoothing epsilon", min=0.0, max=0.5)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    num_workers: int = opt(
        0,
        help="loader processes (data.num_workers; -1: one per core beyond the first, at most 8)",
        min=-1,
        max=64,
        identity=False,
    )
    accelerator: str | None = opt(
        None,
        help="old spelling of the top-level --accelerator (null: use that one)",
        choices=("auto", "cpu", "gpu", "cuda", "mps"),
        identity=False,
    )


@dataclass
class CRFConfig:
    """inference.crf: dense CRF (pydensecrf) on overlapping tiles.

    ``spatial_weight`` is the standard deviation (px) of the smoothness kernel and ``compat_spatial``
    its weight; the appearance kernel has ``bilateral_sxy`` px, ``bilateral_srgb`` grey levels and
    weight ``compat_bilateral``; ``compatibility``: ``potts`` (every change costs the weight) or
    ``ordinal`` (a change i->j costs weight x |i - j|).
    """

    enabled: bool = opt(True, help="refine the class map with a dense CRF")
    iterations: int = opt(5, help="mean-field iterations", min=1, max=100)
    spatial_weight: float = opt(3.0, help="smoothness kernel sxy (px)", min=0.1, max=500.0)
    compat_spatial: float = opt(3.0, help="smoothness kernel weight", min=0.0, max=100.0)
    bilateral_sxy: float = opt(30.0, help="appearance kernel sxy (px)", min=0.1, max=500.0)
    bilateral_srgb: float = opt(13.0, help="appearance kernel srgb (0-255)", min=0.1, max=255.0)
    compat_bilateral: float = opt(10.0, help="appearance kernel weight", min=0.0, max=100.0)
    compatibility: Literal["ordinal", "potts"] = opt("potts", help="label compatibility")
    image_bands: list[int] = opt(
        help="3 stack bands (0-based) that guide the appearance kernel",
        factory=lambda: [0, 1, 2],
        min=0,
    )
    tile_size: int = opt(1024, help="CRF tile side (px)", min=32, max=16384)
    overlap: int = opt(128, help="CRF tile overlap (px)", min=0, max=4096)
    workers: int = opt(1, help="CRF worker processes", min=1, max=64, identity=False)


@dataclass
class InferenceConfig:
    """inference: sliding-window prediction of the whole raster, ensembles, TTA, CRF."""

    tile_size: int = opt(256, help="prediction tile side (px, multiple of 32)", min=32, max=8192)
    overlap: int = opt(64, help="prediction tile overlap (px)", min=0, max=4096)
    last_tile: LastTile = opt("stretch", help=LAST_TILE_HELP)
    blend: Literal["cosine", "linear", "none"] = opt("cosine", help="blending of overlaps")
    batch_size: int = opt(8, help="tiles per forward pass", min=1, identity=False)
    tta: bool = opt(False, help="average over the four flips")
    mc_dropout_samples: int = opt(
        0, help="MC-dropout passes (0: off; dropout on, N passes)", min=0, max=256
    )
    ensemble_seeds: list[int] = opt(
        help="train one model per seed and average their probabilities (empty: the top-level seed)",
        factory=list,
        min=0,
    )
    head: Literal["softmax", "coral", "average"] = opt(
        "softmax", help="head whose probabilities make the maps"
    )
    uncertainty: Literal["entropy", "mc_variance"] = opt(
        "entropy", help="entropy of the mean probabilities, or variance of the rank over passes"
    )
    cog: bool = opt(
        True,
        help="write the probability, susceptibility and uncertainty maps as Cloud-Optimised "
        "GeoTIFFs (256 px tiles, DEFLATE, overviews); false: strips with overviews added in place",
        identity=False,
    )
    crf: CRFConfig = field(default_factory=CRFConfig)


@dataclass
class TargetsConfig:
    """evaluation.targets: success criteria (each >=); null removes a row."""

    kappa: float | None = opt(0.48, help="Cohen's kappa", min=-1.0, max=1.0)
    class1_precision: float | None = opt(0.22, help="medium precision", min=0.0, max=1.0)
    class2_recall: float | None = opt(0.93, help="high recall", min=0.0, max=1.0)
    spearman_rho: float | None = opt(0.58, help="Spearman rho", min=-1.0, max=1.0)


@dataclass
class EvaluationConfig:
    """evaluation: which split is scored, the success criteria and a baseline to compare with."""

    split: Literal["test", "val", "train", "all"] = opt("test", help="blocks that are scored")
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    baseline_metrics: Path | None = opt(
        None, help="metrics.json of a baseline run (or a flat JSON of metrics)"
    )


def run_fields() -> list[str]:
    """Names of the shared run fields (the top level of a risk config)."""
    return [f.name for f in fields(RunConfig)]


@dataclass
class RiskConfig(RunConfig):
    """The risk-pipeline config: the run settings at the top level, then the sections."""

    stages: str = opt(
        ",".join(STAGES),
        help="comma-separated stages to run: prepare,train,infer,evaluate",
        identity=False,
        resumable=True,
    )
    force_recreate: bool = opt(
        False,
        help="redo the requested stages even when finished (outputs replaced only on success)",
        identity=False,
        resumable=True,
    )
    file_check: bool = opt(
        True, help="check that the input files exist while validating", identity=False
    )
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    # --------------------------------------------------------------- the shared groups
    @property
    def run(self) -> RunConfig:
        """The shared ``run`` group (``training.accelerator``, when set, is the accelerator)."""
        values = {name: getattr(self, name) for name in run_fields()}
        if self.training.accelerator is not None:
            values["accelerator"] = self.training.accelerator
        return RunConfig(**values)

    @property
    def optim(self) -> OptimConfig:
        """The shared ``optim`` group built from ``training`` (table in the module docstring)."""
        t = self.training
        return OptimConfig(
            epochs=t.epochs,
            lr=t.lr,
            weight_decay=t.weight_decay,
            scheduler=t.lr_scheduler,
            early_stop_patience=t.patience,
            grad_clip=t.grad_clip,
            limit_train_batches=t.limit_train_batches,
        )

    @property
    def stage_list(self) -> list[str]:
        """``stages`` as a list in pipeline order."""
        wanted = {s.strip() for s in self.stages.split(",") if s.strip()}
        return [s for s in STAGES if s in wanted]

    def with_run(self, **changes: object) -> RiskConfig:
        """A copy with top-level (run) fields changed, e.g. ``with_run(seed=1, output_dir=p)``."""
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- rules across fields
    def check(self) -> list[str]:
        problems = RunConfig.check(self)
        unknown = [
            s.strip() for s in self.stages.split(",") if s.strip() and s.strip() not in STAGES
        ]
        if unknown or not self.stage_list:
            problems.append(
                f"stages: unknown stage(s) {unknown or [self.stages]}; choose from {','.join(STAGES)}"
            )
        problems += dataset_problems(self.dataset, self.evaluation.split)
        problems += model_problems(self.model, self.training)
        problems += inference_problems(self.inference)
        t = self.training
        if t.accelerator is not None and self.accelerator not in ("auto", t.accelerator):
            problems.append(
                f"training.accelerator: {t.accelerator!r} contradicts the top-level accelerator "
                f"{self.accelerator!r}; set only one"
            )
        if self.file_check:
            problems += missing_files(self)
        return problems


@dataclass
class ValidateConfig(RiskConfig):
    """risk-validate-config: the risk-pipeline config plus what this command checks."""

    open_rasters: bool = opt(
        True,
        help="open every input raster and report grid, CRS, nodata, band and label problems",
        identity=False,
    )


@dataclass
class EvaluateConfig(RunConfig):
    """risk-evaluate: trained model(s) + a stack with labels -> maps, metrics, report."""

    model_path: Path | None = opt(
        None,
        help="a checkpoint (.ckpt/.pth) or a train folder (every seed*/ member = an ensemble)",
        required=True,
    )
    test_data_path: Path | None = opt(
        None,
        help="folder with stack.tif + labels.tif, or a stack GeoTIFF (then give --labels)",
        required=True,
    )
    labels: Path | None = opt(None, help="label raster when --test_data_path is a file")
    pipeline_config: Path | None = opt(
        None,
        help="a risk-pipeline config.yaml whose inference and evaluation sections to use "
        "(default: the settings stored in the checkpoint)",
    )
    split_mask: Path | None = opt(
        None, help="split_mask.tif of the prepare stage (default: every labelled pixel)"
    )
    split: Literal["train", "val", "test", "all"] = opt(
        "test", help="split scored when --split_mask is given"
    )
    compare_baseline: Path | None = opt(
        None, help="a baseline metrics.json to report deltas against"
    )
    crf: bool = opt(True, help="also evaluate the dense-CRF map (--no_crf: skip it)")

    @property
    def run(self) -> RunConfig:
        """The shared ``run`` group (the top level of this config)."""
        return RunConfig(**{name: getattr(self, name) for name in run_fields()})

    def check(self) -> list[str]:
        problems = RunConfig.check(self)
        for key in ("model_path", "test_data_path", "labels", "pipeline_config", "split_mask"):
            value = getattr(self, key)
            if value is not None and not Path(value).exists():
                problems.append(f"{key}: {value} does not exist")
        if self.compare_baseline is not None and not self.compare_baseline.is_file():
            problems.append(f"compare_baseline: file not found: {self.compare_baseline}")
        return problems
