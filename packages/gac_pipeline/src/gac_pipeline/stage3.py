"""``gac-stage3``: ground opt_v2 on the SAR with the differentiable TerraMind encoder and LoRA.

TerraMind's generate model samples discrete tokens, so no gradient reaches its weights (LoRA training of
``*_generate`` fails with "element 0 of tensors does not require grad"). Stage 3 therefore uses the
encoder backbone ``terramind_v1_{size}`` with two input modalities, S1GRD (the radar) and S2L2A (opt_v2),
whose tokens attend to each other in every encoder block; LoRA adapts those blocks and a head predicts a
correction to opt_v2. ``--lora-cross-attention-only`` puts LoRA on the attention projections only (the only
layers where S1 and S2 tokens exchange information; the MLPs act per token). Loss: L1 to the real S2 +
SAR-edge disagreement + cycle consistency through a light opt->SAR predictor. The best checkpoint is the one
with the lowest SAR-edge disagreement on the validation split.

Example::

    gac-stage3 --data-dir BigEarthNet --stage1-dir runs/gac_stage1 --stage2-checkpoint \\
        runs/gac_stage2/checkpoints/best.ckpt --output-dir runs/gac_stage3 --pretrained --lora-rank 8
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from gac_pipeline.model import TERRAMIND_SIZES, Stage3Config
from gac_pipeline.train import (
    GACModule,
    add_fit_args,
    add_weight_args,
    fit,
    fit_config_from_args,
    run_main,
    seed_everything,
    weight_source,
)

__all__ = ["build_parser", "run", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gac-stage3",
        description="Stage 3: SAR grounding of opt_v2 with a LoRA-tuned TerraMind encoder (S1 + opt_v2 in).",
    )
    add_fit_args(p, "runs/gac_stage3")
    m = p.add_argument_group("model")
    m.add_argument("--stage2-checkpoint", type=Path, required=True, help="best.ckpt of gac-stage2")
    m.add_argument("--model-size", default="base", choices=TERRAMIND_SIZES)
    add_weight_args(p, "TerraMind encoder")
    m.add_argument("--lora-rank", type=int, default=8)
    m.add_argument("--lora-alpha", type=float, default=16.0)
    m.add_argument("--lora-cross-attention-only", action="store_true",
                   help="LoRA only on the attention projections (where S1 and S2 tokens meet)")  # fmt: skip
    m.add_argument("--no-lora", action="store_true", help="train the head only (ablation)")
    lw = p.add_argument_group("loss weights")
    lw.add_argument("--l1-weight", type=float, default=1.0)
    lw.add_argument("--edge-weight", type=float, default=0.1)
    lw.add_argument("--cycle-weight", type=float, default=0.1)
    p.set_defaults(lr=1e-4)
    return p


def run(argv: Sequence[str] | None = None) -> dict:
    ns = build_parser().parse_args(argv)
    config = fit_config_from_args(ns)
    if not ns.stage2_checkpoint.is_file():
        raise FileNotFoundError(f"{ns.stage2_checkpoint}: --stage2-checkpoint not found")
    model_config = Stage3Config(
        model_size=ns.model_size, lora_rank=ns.lora_rank, lora_alpha=ns.lora_alpha,
        lora_cross_attention_only=ns.lora_cross_attention_only, use_lora=not ns.no_lora, init_seed=ns.seed,
        **weight_source(ns),
    )  # fmt: skip
    module = GACModule(
        "stage3", asdict(model_config),
        loss_weights={"l1": ns.l1_weight, "edge": ns.edge_weight, "cycle": ns.cycle_weight},
        lr=ns.lr, weight_decay=ns.weight_decay, optim=ns.optim, stage2_checkpoint=str(ns.stage2_checkpoint),
        lpips_weights=None if ns.lpips_weights is None else str(ns.lpips_weights),
    )  # fmt: skip
    seed_everything(ns.seed)
    result = fit(module, config)
    print(
        f"stage 3 done: best {result['monitor']} = {result['best_score']}, checkpoint {result['best_checkpoint']}, "
        f"trainable {result['trainable_params']:,} of {result['total_params']:,} parameters"
    )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(run, argv, "gac-stage3")


if __name__ == "__main__":
    sys.exit(main())
