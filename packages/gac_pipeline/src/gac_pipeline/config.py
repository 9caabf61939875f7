"""Typed configuration of the four gac commands (no torch import, so ``--help`` answers at once).

Each command is one dataclass of groups (``data``, ``model``, ``loss``, ``optim``, ``run``, ...); the
command layer (:mod:`eo_common.command`, declared in :mod:`gac_pipeline.cli`) turns every field into a
documented flag, reads ``--config run.yaml`` and prints ``--print_config``. Shared concepts come from
the shared groups (:class:`eo_common.config.RunConfig`, :class:`~eo_common.config.OptimConfig`,
:class:`~eo_common.config.DataConfig`); the researchers' own spellings (``--data-dir``,
``--grad-accum-steps``, ``--val-every`` ...) are aliases, see :data:`SEED_ALIASES`.

Weights of the foundation models come from exactly one source: a local file (``--checkpoint`` /
``--backbone_checkpoint``), the Hugging Face hub (``--pretrained``; also what happens when no source is
named) or random numbers (``--random_init``, tests and demos only).

Example:
    >>> cfg = Stage2Config()
    >>> cfg.model.backbone, cfg.optim.lr, cfg.model.weight_source
    ('prithvi_eo_v2_300', 0.0001, 'hub')
    >>> Stage1Config().model.timesteps
    10
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from eo_common.config import DataConfig, OptimConfig, RunConfig, opt

__all__ = [
    "TERRAMIND_SIZES",
    "PRITHVI_BACKBONES",
    "DEFAULT_STAGE2_LORA_TARGETS",
    "SEED_ALIASES",
    "TileData",
    "Stage1Data",
    "GeneratorModel",
    "Stage1Config",
    "PairedData",
    "Stage2Model",
    "Stage2Loss",
    "GACOptim",
    "Stage2Config",
    "Stage3Model",
    "Stage3Loss",
    "Stage3Config",
    "InferData",
    "InferModel",
    "InferOutput",
    "InferConfig",
    "STAGE1_METRICS",
    "TRAIN_METRICS",
    "INFER_SCORES",
    "infer_metrics",
    "INFER_METRICS",
]

#: gac-stage1's ``summary.json`` metrics (tile counts and generation speed)
STAGE1_METRICS: tuple[str, ...] = (
    "stage1/tiles",
    "stage1/done",
    "stage1/failed",
    "stage1/tiles_per_s",
)
#: gac-stage2 / gac-stage3 headline metrics: ``summary.json`` ``metrics`` (the best epoch), each also
#: logged every validation under this name (``val/lpips`` only with LPIPS weights)
TRAIN_METRICS: tuple[str, ...] = (
    "val/psnr",
    "val/ssim",
    "val/sam_deg",
    "val/sar_edge",
    "val/lpips",
    "val/loss",
)
#: the scores gac-infer computes for each stage's output (``lpips`` only with --lpips_weights)
INFER_SCORES: tuple[str, ...] = (
    "psnr", "ssim", "sam_deg", "sam_rad", "mae", "rmse", "lpips", "sar_edge",
)  # fmt: skip


def infer_metrics(split: str) -> tuple[str, ...]:
    """gac-infer's ``summary.json`` metric names for ``split`` (``val`` is named ``validation``):
    ``<split>/<score>`` of the last stage run, then ``<split>/<opt_vN>/<score>`` and
    ``<split>/<opt_vN>/seconds_per_tile`` of each stage (a non-finite value is left out).

    Example:
        >>> infer_metrics("val")[0], infer_metrics("test")[8]
        ('validation/psnr', 'test/opt_v1/psnr')
    """
    split = {"val": "validation"}.get(split, split)
    names = [f"{split}/{k}" for k in INFER_SCORES]
    for stage in ("opt_v1", "opt_v2", "opt_v3"):
        names += [f"{split}/{stage}/{k}" for k in (*INFER_SCORES, "seconds_per_tile")]
    return tuple(names)


#: every name gac-infer may write (all splits)
INFER_METRICS: tuple[str, ...] = tuple(
    n for split in ("train", "validation", "test") for n in infer_metrics(split)
)

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

#: The GAC scripts' flags (``scripts/train_stage2.py`` ...) whose names differ from eolab's fields.
#: Flags that only differ by ``-``/``_`` (``--batch-size``, ``--lora-rank``) need no alias.
SEED_ALIASES: dict[str, str] = {
    "--data-dir": "data.root",
    "--output-dir": "run.output_dir",
    "--grad-accum-steps": "optim.accumulate_grad_batches",
    "--val-every": "optim.val_every_n_steps",
    "--save-every": "optim.save_every_n_steps",
    "--early-stopping-patience": "optim.early_stop_patience",
}

_SOURCE_HELP = " (the default when no weight source is given)"


def _weight_problems(
    checkpoint: Path | None, pretrained: bool, random_init: bool, flag: str
) -> list[str]:
    given = [
        name
        for name, on in (
            (flag, checkpoint is not None),
            ("pretrained", pretrained),
            ("random_init", random_init),
        )
        if on
    ]
    if len(given) > 1:
        return [f"{given[0]}: choose one weight source, got --{' and --'.join(given)}"]
    return []


def _source(checkpoint: Path | None, random_init: bool) -> str:
    return "file" if checkpoint is not None else ("random" if random_init else "hub")


class _BackboneWeights:
    """``weight_source`` and the one-source check of a model group with ``backbone_checkpoint``,
    ``pretrained`` and ``random_init`` fields (stages 2 and 3)."""

    backbone_checkpoint: Path | None
    pretrained: bool
    random_init: bool

    @property
    def weight_source(self) -> str:
        """``"file"``, ``"hub"`` or ``"random"``."""
        return _source(self.backbone_checkpoint, self.random_init)

    def check(self) -> list[str]:
        return _weight_problems(
            self.backbone_checkpoint, self.pretrained, self.random_init, "backbone_checkpoint"
        )


# ------------------------------------------------------------------------------------- data
@dataclass
class TileData(DataConfig):
    """data: BigEarthNet v2 in the official GeoTIFF layout (see the package README)."""

    root: Path | None = opt(
        None,
        help="BigEarthNet v2 root: metadata.parquet, BigEarthNet-S1/, BigEarthNet-S2/",
        aliases=("--data_root", "--data_dir"),
    )
    batch_size: int = opt(4, help="tiles per batch (and per device)", min=1)
    max_tiles: int | None = opt(
        None, help="only the first N tiles of each split, by patch id (default: all)", min=1
    )


@dataclass
class Stage1Data(TileData):
    """data: the tiles to generate, how they are batched and sharded."""

    catalogue: Path | None = opt(
        None, help="a catalogue CSV of tiles (as written into a stage-1 run) instead of --data_dir"
    )
    split: Literal["all", "train", "validation", "val", "test"] = opt(
        "all", help="which split of metadata.parquet"
    )
    batch_size: int = opt(
        8,
        help="tiles per generation call; a work unit of this many tiles shares one seed, so it "
        "changes the outputs",
        min=1,
    )
    shard: int = opt(0, help="this process's shard (of --num_shards)", min=0, identity=False)
    num_shards: int = opt(
        1,
        help="number of shards (multiplied by torchrun's world size); pass --resume on every shard",
        min=1,
        identity=False,
    )

    def check(self) -> list[str]:
        problems = []
        if (self.root is None) == (self.catalogue is None):
            problems.append("root: give exactly one of --data_dir (BigEarthNet v2) or --catalogue")
        if self.shard >= self.num_shards:
            problems.append(f"shard: must be < --num_shards {self.num_shards}, got {self.shard}")
        return problems


@dataclass
class PairedData(TileData):
    """data: BigEarthNet v2 targets and S1, and the stage-1 outputs (opt_v1)."""

    stage1_dir: Path | None = opt(
        None,
        help="the gac-stage1 run folder (opt_v1/<patch_id>.tif); stage 3 defaults to the one "
        "its stage-2 run used",
    )
    train_split: Literal["train", "validation", "test"] = opt("train", help="training split")
    val_split: Literal["train", "validation", "test"] = opt(
        "validation", help="validation split (selects the best checkpoint)"
    )

    def check(self) -> list[str]:
        return [] if self.root is not None else ["root: required (give --data_dir)"]


# ------------------------------------------------------------------------------------- stage 1
@dataclass
class GeneratorModel:
    """model: the TerraMind generate model (S1GRD in, S2L2A out) of stage 1."""

    model_size: Literal["tiny", "small", "base", "large"] = opt(
        "base", help="terramind_v1_<size>_generate (all sizes share one 289M diffusion decoder)"
    )
    timesteps: int = opt(
        10,
        help="diffusion decoder steps (TerraMind's own default is 50; 10 is the researchers')",
        min=1,
    )
    checkpoint: Path | None = opt(
        None,
        help="local weights: a state dict of the whole terramind_v1_<size>_generate model "
        "(every key, checked)",
    )
    pretrained: bool = opt(False, help="weights from the Hugging Face hub" + _SOURCE_HELP)
    random_init: bool = opt(
        False,
        help="random weights (tests and demos only: outputs are meaningless and tagged "
        "GAC_RANDOM_INIT=1)",
    )
    output_dtype: Literal["uint16", "float32"] = opt(
        "uint16", help="opt_v1 GeoTIFF data type (S2 L2A DN)"
    )

    @property
    def weight_source(self) -> str:
        """``"file"``, ``"hub"`` or ``"random"``."""
        return _source(self.checkpoint, self.random_init)

    def check(self) -> list[str]:
        return _weight_problems(self.checkpoint, self.pretrained, self.random_init, "checkpoint")


@dataclass
class Stage1Config:
    """``gac-stage1``: opt_v1 = TerraMind(S1) for every tile, resumable and sharded."""

    data: Stage1Data = field(default_factory=Stage1Data)
    model: GeneratorModel = field(default_factory=GeneratorModel)
    run: RunConfig = field(default_factory=RunConfig)

    def check(self) -> list[str]:
        if self.run.precision not in ("32", "bf16-mixed", "16-mixed"):
            return [
                f"run.precision: stage 1 runs 32, bf16-mixed or 16-mixed, got {self.run.precision}"
            ]
        return []


# ------------------------------------------------------------------------------------- stages 2, 3
@dataclass
class GACOptim(OptimConfig):
    """optim: epochs, AdamW (optionally 8-bit), validation and checkpoint intervals, early stopping."""

    epochs: int = opt(10, help="training epochs", aliases=("--max_epochs",), min=1, resumable=True)
    lr: float = opt(
        1e-4, help="learning rate", aliases=("--learning_rate",), min=0, min_exclusive=True
    )
    weight_decay: float = opt(0.01, help="decoupled weight decay (AdamW)", min=0)
    optimizer: Literal["adamw", "adamw8bit", "adam", "sgd"] = opt(
        "adamw", help="optimiser; adamw8bit keeps AdamW's state in 8 bits (bitsandbytes)"
    )
    scheduler: Literal["none", "step", "plateau", "cosine", "cosine_restarts"] = opt(
        "none", help="learning-rate schedule", aliases=("--lr_scheduler",)
    )
    early_stop_patience: int = opt(
        5, help="stop after N validations without improvement (0: never)", min=0
    )
    early_stopping: bool = opt(
        True, help="stop early after --early_stop_patience validations without improvement"
    )
    save_every_n_steps: int = opt(
        0,
        help="also write checkpoints/last.ckpt every N optimiser steps (0: at validations only)",
        min=0,
        resumable=True,
    )

    def __post_init__(self) -> None:
        if not self.early_stopping:  # one place for "off": the shared patience field
            self.early_stop_patience = 0


@dataclass
class Stage2Model(_BackboneWeights):
    """model: Prithvi-EO backbone (frozen, LoRA, optional int8) and the residual head."""

    backbone: Literal[PRITHVI_BACKBONES] = opt(  # type: ignore[valid-type]
        "prithvi_eo_v2_300", help="terratorch Prithvi backbone"
    )
    backbone_checkpoint: Path | None = opt(None, help="local Prithvi weights (.pt)")
    pretrained: bool = opt(False, help="Prithvi weights from the Hugging Face hub" + _SOURCE_HELP)
    random_init: bool = opt(False, help="random frozen backbone (tests and demos only)")
    use_s1: bool = opt(False, help="also feed S1 to the head")
    use_lora: bool = opt(
        True, help="LoRA adapters on the backbone (off: head only)", aliases=("--lora",)
    )
    lora_rank: int = opt(8, help="LoRA rank", min=1)
    lora_alpha: float = opt(16.0, help="LoRA alpha (scale = alpha / rank)", min=0)
    lora_targets: str = opt(DEFAULT_STAGE2_LORA_TARGETS, help="regex on the backbone's layer names")
    lora_dropout: float = opt(0.0, help="dropout on the LoRA path", min=0, max=1)
    load_in_8bit: bool = opt(False, help="frozen linear layers in int8 (bitsandbytes LLM.int8)")
    img_size: int = opt(128, help="backbone position grid (px; tiles are padded to x16)", min=16)


@dataclass
class Stage2Loss:
    """loss: L1 + (1 - MS-SSIM) + LPIPS on opt_v2 vs the real S2."""

    l1_weight: float = opt(1.0, help="weight of L1", min=0)
    msssim_weight: float = opt(0.2, help="weight of 1 - MS-SSIM (3 scales)", min=0)
    lpips_weight: float = opt(0.1, help="weight of LPIPS (only with --lpips_weights)", min=0)
    lpips_weights: Path | None = opt(
        None,
        help="local LPIPS backbone weights (e.g. alexnet-owt-7be5be79.pth); without it LPIPS "
        "(loss and metric) is off",
    )


@dataclass
class Stage2Config:
    """``gac-stage2``: refine opt_v1 into opt_v2."""

    data: PairedData = field(default_factory=PairedData)
    model: Stage2Model = field(default_factory=Stage2Model)
    loss: Stage2Loss = field(default_factory=Stage2Loss)
    optim: GACOptim = field(default_factory=GACOptim)
    run: RunConfig = field(default_factory=RunConfig)
    export_peft: bool = opt(
        True, help="write the LoRA adapters of the best checkpoint with PEFT (peft_adapter/)"
    )
    export_merged: Path | None = opt(
        None, help="also merge LoRA into a float copy and save the whole network here (.pt)"
    )


@dataclass
class Stage3Model(_BackboneWeights):
    """model: TerraMind encoder on S1 + opt_v2 (frozen, LoRA) and the correction head."""

    stage2_checkpoint: Path | None = opt(
        None,
        required=True,
        help="the gac-stage2 model: its checkpoints/best.ckpt, its run folder, or <run>/best.pt",
    )
    model_size: Literal["tiny", "small", "base", "large"] = opt(
        "base", help="terramind_v1_<size> encoder"
    )
    backbone_checkpoint: Path | None = opt(None, help="local TerraMind encoder weights (.pt)")
    pretrained: bool = opt(False, help="TerraMind weights from the hub" + _SOURCE_HELP)
    random_init: bool = opt(False, help="random frozen encoder (tests and demos only)")
    use_lora: bool = opt(
        True, help="LoRA adapters on the encoder (off: head only)", aliases=("--lora",)
    )
    lora_rank: int = opt(8, help="LoRA rank", min=1)
    lora_alpha: float = opt(16.0, help="LoRA alpha (scale = alpha / rank)", min=0)
    lora_cross_attention_only: bool = opt(
        False, help="LoRA only on the attention projections, where S1 and S2 tokens meet"
    )
    lora_dropout: float = opt(0.0, help="dropout on the LoRA path", min=0, max=1)


@dataclass
class Stage3Loss:
    """loss: L1 to the real S2 + SAR-edge disagreement + cycle consistency."""

    l1_weight: float = opt(1.0, help="weight of L1 to the target", min=0)
    edge_weight: float = opt(0.1, help="weight of the SAR-edge disagreement", min=0)
    cycle_weight: float = opt(0.1, help="weight of the opt -> SAR cycle term", min=0)
    lpips_weights: Path | None = opt(
        None, help="local LPIPS backbone weights for the validation metric (else n/a)"
    )


@dataclass
class Stage3Config:
    """``gac-stage3``: ground opt_v2 on the SAR."""

    data: PairedData = field(default_factory=PairedData)
    model: Stage3Model = field(default_factory=Stage3Model)
    loss: Stage3Loss = field(default_factory=Stage3Loss)
    optim: GACOptim = field(default_factory=GACOptim)
    run: RunConfig = field(default_factory=RunConfig)
    export_peft: bool = opt(
        True, help="write the LoRA adapters of the best checkpoint with PEFT (peft_adapter/)"
    )


# ------------------------------------------------------------------------------------- gac-infer
@dataclass
class InferData(TileData):
    """data: the split to run on, and precomputed stage-1 outputs."""

    split: Literal["train", "validation", "val", "test"] = opt("test", help="split to run on")
    stage1_dir: Path | None = opt(
        None,
        help="a gac-stage1 run folder; without it stage 1 runs here into <run>/stage1 with the "
        "stage1.* settings",
    )

    def check(self) -> list[str]:
        return [] if self.root is not None else ["root: required (give --data_dir)"]


@dataclass
class InferModel:
    """model: the trained stages."""

    stage2_checkpoint: Path | None = opt(
        None,
        help="the gac-stage2 model: its checkpoints/best.ckpt, its run folder, or <run>/best.pt "
        "(required unless --last_stage 1)",
    )
    stage3_checkpoint: Path | None = opt(
        None, help="the gac-stage3 model (same forms); omit to stop after stage 2"
    )
    last_stage: int = opt(
        0,
        help="run and score stages 1..N: 1 = stage 1 only, 2 = stages 1+2, 3 = all three; 0 = "
        "every stage given (3 with --stage3_checkpoint, else 2). The ablation preset "
        "gac_pipeline:ablation runs 1, 2 and 3 as variants",
        min=0,
        max=3,
    )

    @property
    def stages(self) -> int:
        """How many stages the run scores (``last_stage``, or what the checkpoints allow)."""
        if self.last_stage:
            return self.last_stage
        return 3 if self.stage3_checkpoint is not None else 2

    def check(self) -> list[str]:
        problems = []
        if self.stage2_checkpoint is None and self.stages >= 2:
            problems.append(
                "stage2_checkpoint: required (give --stage2_checkpoint or set it in the config "
                "file), unless --last_stage 1"
            )
        if self.stage3_checkpoint is None and self.last_stage == 3:
            problems.append("stage3_checkpoint: required with --last_stage 3")
        return problems


@dataclass
class InferOutput:
    """output: pictures and metrics."""

    save_visualizations: bool = opt(False, help="PNG panels S1 | stages | target per tile")
    max_panels: int = opt(16, help="at most this many panels", min=0)
    lpips_weights: Path | None = opt(
        None, help="local LPIPS backbone weights for the LPIPS column (else n/a)"
    )


@dataclass
class InferConfig:
    """``gac-infer``: every stage on a split, GeoTIFFs, panels and the ablation table."""

    data: InferData = field(default_factory=InferData)
    model: InferModel = field(default_factory=InferModel)
    stage1: GeneratorModel = field(default_factory=GeneratorModel)
    output: InferOutput = field(default_factory=InferOutput)
    run: RunConfig = field(default_factory=RunConfig)
