"""``eolab demo`` plug-in: the three stages end to end on real BigEarthNet v2 tiles, with tiny random models.

Data: 6 real BigEarthNet v2 S1/S2 pairs (2 train, 2 validation, 2 test) from the BENv2 sample that ships
inside the ``configilm`` wheel, exported to the official GeoTIFF layout. Models: ``terramind_v1_tiny_generate``
with random weights (1 diffusion step), ``prithvi_eo_tiny`` and ``terramind_v1_tiny`` with random frozen
weights plus LoRA and heads trained for a few steps. Random weights give meaningless images: the demo shows
the machinery (resumable stage 1, LoRA training, checkpoints, inference, the ablation table), not quality.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from eo_common.demos import DemoResult

__all__ = ["run_demo"]

TILES_PER_SPLIT = 2


def run_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    """Run stage 1, a short stage 2 and stage 3, and the ablation on real BENv2 tiles within ``budget_s``."""
    from eo_common.benv2 import export_benv2_geotiff_layout
    from eo_common.training import seed_everything

    from gac_pipeline.data import build_catalogue, save_catalogue
    from gac_pipeline.model import Stage2Config, Stage3Config, build_generator
    from gac_pipeline.predict import InferConfig, run_inference
    from gac_pipeline.stage1 import Stage1Config, run_stage1
    from gac_pipeline.train import FitConfig, GACModule, fit, make_loaders

    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    data = out / "benv2"
    if not (data / "metadata.parquet").exists():
        export_benv2_geotiff_layout(data)
    records = build_catalogue(data)
    chosen = []
    for split in ("train", "validation", "test"):
        chosen += [r for r in records if r.split == split][:TILES_PER_SPLIT]
    catalogue = save_catalogue(chosen, out / "demo_catalogue.csv")
    timings: dict[str, float] = {}

    # stage 1 -------------------------------------------------------------------------------------
    t = time.perf_counter()
    generator = build_generator("tiny", random_init=True, timesteps=1, init_seed=seed)
    timings["stage1_build_s"] = time.perf_counter() - t
    s1cfg = Stage1Config(
        catalogue=catalogue, output_dir=out / "stage1", model_size="tiny", timesteps=1, batch_size=2,
        seed=seed, random_init=True, progress=False,
    )  # fmt: skip
    lines: list[str] = []
    summary = run_stage1(s1cfg, generator=generator, log=lines.append)
    t = time.perf_counter()
    resumed = run_stage1(s1cfg, generator=generator, log=lines.append)  # a rerun skips every tile
    timings["stage1_resume_s"] = time.perf_counter() - t
    timings["stage1_generate_s"] = summary.seconds
    del generator

    # stages 2 and 3 ------------------------------------------------------------------------------
    remaining = budget_s - (time.perf_counter() - t0)
    train_time = max(5.0, 0.3 * remaining)
    fit_cfg = FitConfig(
        data_dir=data, stage1_dir=out / "stage1", output_dir=out / "stage2", max_tiles=TILES_PER_SPLIT,
        batch_size=2, lr=1e-3, epochs=3, early_stopping=False, seed=seed, max_time_s=train_time, progress=False,
    )  # fmt: skip
    train, val, _, _ = make_loaders(fit_cfg)
    s2 = GACModule(
        "stage2",
        asdict(Stage2Config(backbone="prithvi_eo_tiny", lora_rank=4, lora_alpha=8, init_seed=seed)),
        loss_weights={"l1": 1.0, "msssim": 0.2, "lpips": 0.0}, lr=1e-3,
    )  # fmt: skip
    r2 = fit(s2, fit_cfg, (train, val))
    remaining = budget_s - (time.perf_counter() - t0)
    fit_cfg3 = FitConfig(
        **{
            **asdict(fit_cfg),
            "output_dir": out / "stage3",
            "max_time_s": max(5.0, 0.4 * remaining),
        }
    )
    s3 = GACModule(
        "stage3",
        asdict(Stage3Config(model_size="tiny", lora_rank=4, lora_alpha=8, lora_cross_attention_only=True, init_seed=seed)),
        loss_weights={"l1": 1.0, "edge": 0.1, "cycle": 0.1}, lr=1e-3, stage2_checkpoint=str(r2["best_checkpoint"]),
    )  # fmt: skip
    r3 = fit(s3, fit_cfg3, (train, val))

    # inference and ablation ----------------------------------------------------------------------
    inf = run_inference(
        InferConfig(
            data_dir=data, stage1_dir=out / "stage1", stage2_checkpoint=r2["best_checkpoint"],
            stage3_checkpoint=r3["best_checkpoint"], output_dir=out / "infer", split="test",
            max_tiles=TILES_PER_SPLIT, batch_size=2, save_visualizations=True, max_panels=2, progress=False,
        ),
        log=lambda _m: None,
    )  # fmt: skip
    figures = list(inf["panels"])
    from eo_common.viz import plot_training_curves

    for name, r in (("stage2", r2), ("stage3", r3)):
        csv = Path(r["run_dir"]) / "metrics.csv"
        if csv.exists():
            try:
                figures.append(plot_training_curves(csv, out / f"{name}_curves.png"))
            except (ValueError, KeyError):  # too few logged points for a curve
                pass
    total = time.perf_counter() - t0
    ckpt_kb = {
        k: Path(r["best_checkpoint"]).stat().st_size / 1024
        for k, r in (("stage2", r2), ("stage3", r3))
    }
    summary_md = f"""**Random weights: the images are meaningless; this demo shows the machinery, not quality.**
TerraMind (`terramind_v1_tiny_generate`, 1 diffusion step), Prithvi (`prithvi_eo_tiny`) and the TerraMind
encoder (`terramind_v1_tiny`) are built offline with random weights (no pretrained weights can be downloaded
here); the random generator's zero-initialised output layers get small random weights so its outputs vary.

Data: {len(chosen)} **real** BigEarthNet v2 S1/S2 pairs ({TILES_PER_SPLIT} train, {TILES_PER_SPLIT} validation,
{TILES_PER_SPLIT} test, the first by patch id of each split) of the 24 real pairs (tiles T33UUP, Austria, and
T35VNJ, Finland) in the BENv2 sample of the `configilm` wheel, exported to the official GeoTIFF layout. S1 stays float dB; S2 20/60 m bands are resampled bilinearly to 120x120 and
TerraMind sees them padded to 128.

| step | result |
|---|---|
| stage 1 | {summary.line()} ({summary.generated / max(summary.seconds, 1e-9):.2f} tiles/s on CPU, build {timings["stage1_build_s"]:.0f} s) |
| stage 1 rerun | {resumed.skipped} done tiles skipped in {timings["stage1_resume_s"]:.3f} s |
| stage 2 | {r2["steps"]} steps in {r2["seconds"]:.0f} s; trainable {r2["trainable_params"]:,} of {r2["total_params"]:,} parameters (LoRA + head); checkpoint {ckpt_kb["stage2"]:.0f} KiB |
| stage 3 | {r3["steps"]} steps in {r3["seconds"]:.0f} s; trainable {r3["trainable_params"]:,} of {r3["total_params"]:,} parameters; checkpoint {ckpt_kb["stage3"]:.0f} KiB |

Ablation on the {inf["tiles"]} test tiles (data range 1 = S2 DN / 10000; SAM in degrees; SAR-edge
agreement = (1 - Pearson r of the Sobel edge maps of the Lee-filtered SAR and of the optical image) / 2,
lower is better, about 0.5 = unrelated; LPIPS n/a: no local backbone weights; seconds per tile on this
shared 2-core CPU):

{inf["table"]}

Total demo time {total:.0f} s (budget {budget_s:.0f} s).
"""
    metrics = {
        "stage1": {"processed": summary.processed, "errors": summary.errors, "seconds": summary.seconds,
                   "resume_skip_seconds": timings["stage1_resume_s"]},
        "stage2": {k: r2[k] for k in ("steps", "seconds", "trainable_params", "total_params", "best_score")},
        "stage3": {k: r3[k] for k in ("steps", "seconds", "trainable_params", "total_params", "best_score")},
        "ablation": inf["rows"],
        "seconds": total,
    }  # fmt: skip
    torch.set_grad_enabled(True)
    return DemoResult(
        title="gac_pipeline: SAR-to-optical in three stages (TerraMind, Prithvi, LoRA)",
        summary_md=summary_md,
        figures=[Path(f) for f in figures],
        metrics=metrics,
    )
