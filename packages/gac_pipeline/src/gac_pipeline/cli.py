"""The four console scripts, each one :class:`eo_common.command.Command` (no torch import here).

``gac-stage1`` -> :func:`gac_pipeline.stage1.run_stage1`, ``gac-stage2`` / ``gac-stage3`` ->
:func:`gac_pipeline.train.train_stage2` / :func:`~gac_pipeline.train.train_stage3`, ``gac-infer`` ->
:func:`gac_pipeline.predict.infer`. The researchers' flags (:data:`gac_pipeline.config.SEED_ALIASES`)
are accepted as typed.
"""

from __future__ import annotations

from eo_common.command import Command

from gac_pipeline.config import (
    INFER_METRICS,
    SEED_ALIASES,
    STAGE1_METRICS,
    TRAIN_METRICS,
    InferConfig,
    Stage1Config,
    Stage2Config,
    Stage3Config,
)

__all__ = ["gac_stage1", "gac_stage2", "gac_stage3", "gac_infer", "COMMANDS"]

_STAGE1_ALIASES = {k: v for k, v in SEED_ALIASES.items() if v.split(".")[0] in ("data", "run")}
_EPILOG_RERUN = (
    "A folder that holds a run is never modified unless you pass --resume (continue it) or "
    "--overwrite (replace it once the inputs are checked)."
)

gac_stage1 = Command(
    "gac-stage1",
    Stage1Config,
    "gac_pipeline.stage1:run_stage1",
    description="Stage 1: generate opt_v1 (S2 L2A) from S1 with a TerraMind any-to-any model for "
    "every tile; resumable (--resume skips finished tiles) and sharded (--shard/--num_shards or "
    "one shard per torchrun rank).",
    epilog="Example: gac-stage1 --data-dir BigEarthNet --split train --batch-size 16 "
    "--run.precision bf16-mixed --output-dir runs/gac_stage1.  " + _EPILOG_RERUN,
    aliases=_STAGE1_ALIASES,
    defaults={"run.output_dir": "runs/gac_stage1"},
    metrics=STAGE1_METRICS,
)

gac_stage2 = Command(
    "gac-stage2",
    Stage2Config,
    "gac_pipeline.train:train_stage2",
    description="Stage 2: a frozen Prithvi-EO backbone with LoRA (optionally int8) and a residual "
    "head refine opt_v1 into opt_v2; the best checkpoint has the highest validation PSNR.",
    epilog="Example: gac-stage2 --config stage2.yaml, or gac-stage2 --data-dir BigEarthNet "
    "--stage1-dir runs/gac_stage1 --output-dir runs/gac_stage2 --lora-rank 8 --load-in-8bit "
    "--batch-size 1 --grad-accum-steps 8 --val-every 500 --save-every 2500.  " + _EPILOG_RERUN,
    aliases=SEED_ALIASES,
    defaults={"run.output_dir": "runs/gac_stage2"},
    metrics=TRAIN_METRICS,
)

gac_stage3 = Command(
    "gac-stage3",
    Stage3Config,
    "gac_pipeline.train:train_stage3",
    description="Stage 3: ground opt_v2 on the SAR with the TerraMind encoder (S1 + opt_v2 in, "
    "LoRA) and a correction head; the best checkpoint has the lowest validation SAR-edge "
    "disagreement.",
    epilog="Example: gac-stage3 --data-dir BigEarthNet --stage2-checkpoint runs/gac_stage2 "
    "--output-dir runs/gac_stage3 --lora-rank 8 --lora-cross-attention-only.  " + _EPILOG_RERUN,
    aliases=SEED_ALIASES,
    defaults={"run.output_dir": "runs/gac_stage3"},
    metrics=TRAIN_METRICS,
)

gac_infer = Command(
    "gac-infer",
    InferConfig,
    "gac_pipeline.predict:infer",
    description="Run stages 1-3 on a split: GeoTIFFs per stage, PNG panels and the ablation table "
    "(stage 1 only / 1+2 / 1+2+3: PSNR, SSIM, LPIPS, SAM, SAR-edge agreement, time per tile).",
    epilog="Example: gac-infer --data-dir BigEarthNet --stage1-dir runs/gac_stage1 "
    "--stage2-checkpoint runs/gac_stage2 --stage3-checkpoint runs/gac_stage3 "
    "--save-visualizations --output-dir runs/gac_infer.  " + _EPILOG_RERUN,
    aliases=_STAGE1_ALIASES,
    defaults={"run.output_dir": "runs/gac_infer"},
    metrics=INFER_METRICS,
)

COMMANDS = {c.prog: c for c in (gac_stage1, gac_stage2, gac_stage3, gac_infer)}
