"""The ``eolab demo`` entry point: train on derived-label Landsat-8 tiles, score the held-out tiles.

The data and its derived labels are described in :mod:`glacier_seg.demo_data`. Training runs on CPU
within the wall-clock budget; the held-out MCC is computed over all held-out pixels flattened
(competition definition).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eo_common.config import OptimConfig, RunConfig
from eo_common.demos import DemoResult

from glacier_seg.config import (
    CLASS_NAMES,
    EvalData,
    GlacierData,
    GlacierEvalConfig,
    GlacierTrainConfig,
    ModelConfig,
)
from glacier_seg.demo_data import build_demo_layout

__all__ = ["demo_train_config", "run_demo"]


def demo_train_config(
    root: Path, out_dir: Path, val_ids: list[str], seed: int, budget_s: float
) -> GlacierTrainConfig:
    """The demo's training config: small U-Net (resnet18, narrow decoder), 64 px crops, CPU-sized."""
    return GlacierTrainConfig(
        data=GlacierData(
            root=root,
            val_ids=",".join(val_ids),
            normalization="dataset",
            crop_size=64,
            batch_size=8,
            samples_per_epoch=96,
            p_minority=0.5,
            lake_weight=2.0,
            debris_weight=1.0,
            num_workers=0,
        ),
        model=ModelConfig(encoder_name="resnet18", decoder_channels=[64, 32, 32, 16, 16]),
        optim=OptimConfig(epochs=200, lr=2e-3, scheduler="none", early_stop_patience=0),
        run=RunConfig(
            output_dir=out_dir, name="glacier_demo", seed=seed, time_budget_s=round(budget_s),
            progress=False, overwrite=True, log=["csv"],
        ),
        export_smp=False,
    )  # fmt: skip


def run_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    """Build the tiles, train within ``budget_s`` on CPU, evaluate the held-out tiles, draw panels."""
    import torch

    from glacier_seg.evaluate import evaluate
    from glacier_seg.train import train

    started = time.perf_counter()
    out_dir = Path(out_dir)
    root = build_demo_layout(out_dir / "data", seed=seed)
    split = json.loads((root / "split.json").read_text())
    train_budget = max(20.0, 0.6 * budget_s - (time.perf_counter() - started))
    cfg = demo_train_config(root, out_dir / "runs", split["val"], seed, train_budget)
    threads = torch.get_num_threads()
    # one intra-op thread: on a small shared CPU, 2+ threads spin against other processes and a
    # training step gets 5-10x slower (measured: 0.4 s vs 2-8 s per step)
    torch.set_num_threads(1)
    try:
        summary = train(cfg)
    finally:
        torch.set_num_threads(threads)
    evaluation = evaluate(
        GlacierEvalConfig(
            checkpoints=[Path(summary["paths"]["best_checkpoint"])],
            data=EvalData(root=root, num_workers=0),
            tile_ids=",".join(split["val"]),
            max_panels=4,
            run=RunConfig(output_dir=out_dir / "eval", overwrite=True, progress=False),
        )
    )
    metrics = json.loads(Path(evaluation["paths"]["metrics_json"]).read_text(encoding="utf-8"))
    from eo_common.viz import plot_training_curves

    figures = [out_dir / "eval" / "confusion_matrix.png"]
    figures += sorted((out_dir / "eval").glob("panel_*.png"))
    curves = plot_training_curves(
        Path(summary["paths"]["metrics_csv"]),
        out_dir / "training_curves.png",
        metrics=["train/loss", "val/loss", "val/mcc"],
    )
    figures.insert(0, Path(curves))
    fractions = split["class_fractions"]
    rows = "\n".join(
        f"| {name} | {100 * fractions[name]:.2f} % | {metrics['per_class'][name]['iou']:.3f} | "
        f"{metrics['per_class'][name]['f1']:.3f} |"
        for name in CLASS_NAMES
    )
    seconds = time.perf_counter() - started
    summary_md = f"""Real Landsat-8 L1 scene (eo_common sample `landsat8_scene`, EPSG:32616, 30 m), bands B2, B3,
B4, B6 as TOA reflectance and B10 as brightness temperature, cut into {len(split["train"]) + len(split["val"])}
tiles of {split["tile"]} px in the GlacierHack layout, plus 2 GLCM channels (contrast, homogeneity of B4,
7x7 window, 32 levels, mean of 4 angles). **Labels are derived from spectral indices** (bright, cold,
high-NDSI pixels = "glacier"; cool moderately bright low-NDSI pixels = "debris"; top 1 % NDWI =
"lake"; thresholds are scene percentiles because the scene has no snow or glacier), so the numbers
measure how well the pipeline learns those rules from the five bands, not glacier mapping skill.

U-Net (resnet18 encoder, random init, narrow decoder 64-32-32-16-16 with scSE attention, 7 input
channels standardised with training-set statistics), focal + Dice + 0.5 MCC loss, class-balanced
64 px crops, {summary["epochs_run"]} epochs in {summary["seconds"]:.0f} s of CPU
training (2 shared cores). Held-out tiles: {len(split["val"])} ({metrics["n_pixels"]} pixels).

| metric (held-out tiles, all pixels flattened) | value |
|---|---|
| MCC (streaming confusion matrix) | {metrics["mcc"]:.4f} |
| MCC (sklearn `matthews_corrcoef`) | {metrics["mcc_sklearn"]:.4f} |
| Cohen's kappa | {metrics["kappa"]:.4f} |
| pixel accuracy | {metrics["accuracy"]:.4f} |
| trivial baseline (all background) MCC | 0.0000 |

| class | share of scene pixels | IoU | F1 |
|---|---|---|---|
{rows}

Total demo time {seconds:.0f} s."""
    return DemoResult(
        title="glacier_seg: 4-class glacier segmentation scored by MCC (derived labels on real Landsat-8)",
        summary_md=summary_md,
        figures=[Path(f) for f in figures],
        metrics={
            "mcc": metrics["mcc"],
            "mcc_sklearn": metrics["mcc_sklearn"],
            "kappa": metrics["kappa"],
            "accuracy": metrics["accuracy"],
            "per_class_iou": {k: v["iou"] for k, v in metrics["per_class"].items()},
            "epochs": summary["epochs_run"],
            "train_seconds": summary["seconds"],
            "val_tiles": split["val"],
            "labels": "derived from spectral indices (not real glacier outlines)",
        },
    )
