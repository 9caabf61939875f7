"""``gac-stage2``: refine opt_v1 into opt_v2 with a LoRA-tuned Prithvi-EO backbone (optionally int8).

The backbone is chosen by terratorch registry name (``--backbone``, default ``prithvi_eo_v2_300``) and kept
frozen; LoRA adapters (peft) go on its attention projections (``--lora-targets`` regex, default
``.*blocks\\.\\d+\\.attn\\.(qkv|proj)``: a bare ``proj`` would also match the Conv3d patch embedding);
``--load-in-8bit`` turns the frozen transformer linear layers into bitsandbytes int8 layers and
``--optim adamw8bit`` keeps the optimiser state in 8 bits. Prithvi sees opt_v1's B02, B03, B04, B8A, B11,
B12 as its HLS BLUE, GREEN, RED, NIR_NARROW, SWIR_1, SWIR_2; the head sees all 12 bands (and S1 with
``--use-s1``) and predicts a residual for all 12 bands.

Example::

    gac-stage2 --data-dir BigEarthNet --stage1-dir runs/gac_stage1 --output-dir runs/gac_stage2 \\
        --pretrained --lora-rank 8 --load-in-8bit --optim adamw8bit --batch-size 8 --grad-accum-steps 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from gac_pipeline.model import DEFAULT_STAGE2_LORA_TARGETS, PRITHVI_BACKBONES, Stage2Config
from gac_pipeline.train import (
    GACModule,
    add_fit_args,
    add_weight_args,
    export_merged,
    fit,
    fit_config_from_args,
    run_main,
    seed_everything,
    weight_source,
)

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gac-stage2",
        description="Stage 2: LoRA fine-tuning of a Prithvi-EO backbone + head that refines opt_v1 into opt_v2.",
    )
    add_fit_args(p, "runs/gac_stage2")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default="prithvi_eo_v2_300", choices=PRITHVI_BACKBONES)
    add_weight_args(p, "Prithvi")
    m.add_argument("--use-s1", action="store_true", help="also feed S1 to the head")
    m.add_argument("--lora-rank", type=int, default=8)
    m.add_argument("--lora-alpha", type=float, default=16.0)
    m.add_argument(
        "--lora-targets", default=DEFAULT_STAGE2_LORA_TARGETS, help="regex on module names"
    )
    m.add_argument("--no-lora", action="store_true", help="train the head only (ablation)")
    m.add_argument(
        "--load-in-8bit", action="store_true", help="bitsandbytes int8 frozen linear layers"
    )
    m.add_argument(
        "--img-size", type=int, default=128, help="backbone position grid (tiles are padded to x16)"
    )
    lw = p.add_argument_group("loss weights")
    lw.add_argument("--l1-weight", type=float, default=1.0)
    lw.add_argument("--msssim-weight", type=float, default=0.2)
    lw.add_argument(
        "--lpips-weight", type=float, default=0.1, help="used only with --lpips-weights FILE"
    )
    p.add_argument(
        "--export-merged", type=Path, default=None, help="after training, merge LoRA and save here"
    )
    return p


def run(argv: Sequence[str] | None = None) -> dict:
    ns = build_parser().parse_args(argv)
    config = fit_config_from_args(ns)
    model_config = Stage2Config(
        backbone=ns.backbone, use_s1=ns.use_s1, lora_rank=ns.lora_rank, lora_alpha=ns.lora_alpha,
        lora_targets=ns.lora_targets, load_in_8bit=ns.load_in_8bit, use_lora=not ns.no_lora,
        init_seed=ns.seed, img_size=ns.img_size, **weight_source(ns),
    )  # fmt: skip
    module = GACModule(
        "stage2", asdict(model_config),
        loss_weights={"l1": ns.l1_weight, "msssim": ns.msssim_weight, "lpips": ns.lpips_weight},
        lr=ns.lr, weight_decay=ns.weight_decay, optim=ns.optim,
        lpips_weights=None if ns.lpips_weights is None else str(ns.lpips_weights),
    )  # fmt: skip
    seed_everything(ns.seed)
    result = fit(module, config)
    print(
        f"stage 2 done: best {result['monitor']} = {result['best_score']}, checkpoint {result['best_checkpoint']}, "
        f"trainable {result['trainable_params']:,} of {result['total_params']:,} parameters"
    )
    if ns.export_merged is not None and result["best_checkpoint"] is not None:
        print(
            f"merged model written to {export_merged(result['best_checkpoint'], ns.export_merged)}"
        )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv, "gac-stage2")


if __name__ == "__main__":
    sys.exit(main())
