"""``eolab demo`` plug-in: the three stages end to end on real BigEarthNet v2 tiles, with tiny random models.

Data: 6 real BigEarthNet v2 S1/S2 pairs (2 train, 2 validation, 2 test) from the BENv2 sample that ships
inside the ``configilm`` wheel, exported to the official GeoTIFF layout. Models: ``terramind_v1_tiny_generate``
with random weights (1 diffusion step), ``prithvi_eo_tiny`` and ``terramind_v1_tiny`` with random frozen
weights plus LoRA and heads trained for a few steps. Random weights give meaningless images: the demo shows
the machinery (resumable stage 1, LoRA training, checkpoints, inference, the ablation table), not quality.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from eo_common.demos import DemoResult

__all__ = ["run_demo"]

TILES_PER_SPLIT = 2


def run_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    """Run stage 1, a short stage 2 and stage 3, and the ablation on real BENv2 tiles within ``budget_s``."""
    from eo_common.benv2 import export_benv2_geotiff_layout
    from eo_common.config import RunConfig
    from eo_common.training import seed_everything

    from gac_pipeline.config import (
        GACOptim,
        GeneratorModel,
        InferConfig,
        InferData,
        InferModel,
        InferOutput,
        PairedData,
        Stage1Config,
        Stage1Data,
        Stage2Config,
        Stage2Loss,
        Stage2Model,
        Stage3Config,
        Stage3Model,
    )
    from gac_pipeline.data import build_catalogue, save_catalogue
    from gac_pipeline.generator import build_generator
    from gac_pipeline.predict import infer
    from gac_pipeline.stage1 import run_stage1
    from gac_pipeline.train import train_stage2, train_stage3

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

    def run(folder: str, **kw) -> RunConfig:
        return RunConfig(output_dir=out / folder, seed=seed, progress=False, log=["csv"], **kw)

    # stage 1 (a rerun with --resume skips every finished tile) --------------------------------------
    t = time.perf_counter()
    generator = build_generator("tiny", random_init=True, timesteps=1, init_seed=seed)
    timings["stage1_build_s"] = time.perf_counter() - t
    s1cfg = Stage1Config(
        data=Stage1Data(catalogue=catalogue, batch_size=2),
        model=GeneratorModel(model_size="tiny", timesteps=1, random_init=True),
        run=run("stage1", resume=True),
    )
    lines: list[str] = []
    summary = run_stage1(s1cfg, generator=generator, log=lines.append)
    t = time.perf_counter()
    resumed = run_stage1(s1cfg, generator=generator, log=lines.append)
    timings["stage1_resume_s"] = time.perf_counter() - t
    del generator

    # stages 2 and 3 ---------------------------------------------------------------------------------
    paired = PairedData(
        root=data, stage1_dir=out / "stage1", max_tiles=TILES_PER_SPLIT, batch_size=2
    )
    optim = GACOptim(lr=1e-3, epochs=3, early_stopping=False)
    remaining = budget_s - (time.perf_counter() - t0)
    r2 = train_stage2(
        Stage2Config(
            data=paired,
            model=Stage2Model(
                backbone="prithvi_eo_tiny", random_init=True, lora_rank=4, lora_alpha=8
            ),
            loss=Stage2Loss(lpips_weight=0.0),
            optim=optim,
            run=run("stage2", overwrite=True, time_budget_s=max(5.0, 0.3 * remaining)),
        )
    )
    remaining = budget_s - (time.perf_counter() - t0)
    r3 = train_stage3(
        Stage3Config(
            data=paired,
            model=Stage3Model(
                stage2_checkpoint=Path(r2["paths"]["best_checkpoint"]),
                model_size="tiny",
                random_init=True,
                lora_rank=4,
                lora_alpha=8,
                lora_cross_attention_only=True,
            ),  # fmt: skip
            optim=optim,
            run=run("stage3", overwrite=True, time_budget_s=max(5.0, 0.4 * remaining)),
        )
    )

    # inference and ablation ---------------------------------------------------------------------------
    inf = infer(
        InferConfig(
            data=InferData(root=data, stage1_dir=out / "stage1", split="test",
                           max_tiles=TILES_PER_SPLIT, batch_size=2),
            model=InferModel(stage2_checkpoint=Path(r2["paths"]["best_checkpoint"]),
                             stage3_checkpoint=Path(r3["paths"]["best_checkpoint"])),
            output=InferOutput(save_visualizations=True, max_panels=2),
            run=run("infer", overwrite=True),
        ),
        log=lambda _m: None,
    )  # fmt: skip
    table = json.loads((out / "infer" / "metrics.json").read_text())
    figures = [Path(p) for p in inf["extra"]["panels"]]
    figures += [
        Path(r["paths"]["training_curves"]) for r in (r2, r3) if "training_curves" in r["paths"]
    ]
    total = time.perf_counter() - t0
    ckpt_kb = {
        k: Path(r["paths"]["best_checkpoint"]).stat().st_size / 1024
        for k, r in (("stage2", r2), ("stage3", r3))
    }
    s1x = summary["extra"]
    steps = {k: _steps(r) for k, r in (("stage2", r2), ("stage3", r3))}
    summary_md = f"""**Random weights: the images are meaningless; this demo shows the machinery, not quality.**
TerraMind (`terramind_v1_tiny_generate`, 1 diffusion step), Prithvi (`prithvi_eo_tiny`) and the TerraMind
encoder (`terramind_v1_tiny`) are built offline with random weights (no pretrained weights can be downloaded
here); the random generator's zero-initialised output layers get small random weights so its outputs vary.

Data: {len(chosen)} **real** BigEarthNet v2 S1/S2 pairs ({TILES_PER_SPLIT} train, {TILES_PER_SPLIT} validation,
{TILES_PER_SPLIT} test, the first by patch id of each split) of the 24 real pairs (tiles T33UUP, Austria, and
T35VNJ, Finland) in the BENv2 sample of the `configilm` wheel, exported to the official GeoTIFF layout. S1 stays
float dB; S2 20/60 m bands are resampled bilinearly to 120x120 and TerraMind sees them padded to 128.

| step | result |
|---|---|
| stage 1 | {s1x["generated"]} tiles generated, {s1x["errors"]} errors ({s1x["generated"] / max(s1x["seconds"], 1e-9):.2f} tiles/s on CPU, build {timings["stage1_build_s"]:.0f} s) |
| stage 1 rerun (`--resume`) | {resumed["extra"]["skipped"]} done tiles skipped in {timings["stage1_resume_s"]:.3f} s |
| stage 2 | {steps["stage2"]} epochs in {r2["seconds"]:.0f} s; trainable {r2["extra"]["trainable_params"]:,} of {r2["extra"]["network_params"]:,} parameters (LoRA + head); checkpoint {ckpt_kb["stage2"]:.0f} KiB |
| stage 3 | {steps["stage3"]} epochs in {r3["seconds"]:.0f} s; trainable {r3["extra"]["trainable_params"]:,} of {r3["extra"]["network_params"]:,} parameters; checkpoint {ckpt_kb["stage3"]:.0f} KiB |

Ablation on the {table["tiles"]} test tiles (data range 1 = S2 DN / 10000; SAM in degrees; SAR-edge
agreement = (1 - Pearson r of the Sobel edge maps of the Lee-filtered SAR and of the optical image) / 2,
lower is better, about 0.5 = unrelated; LPIPS n/a: no local backbone weights; seconds per tile on this
shared 2-core CPU):

{table["table"]}

Total demo time {total:.0f} s (budget {budget_s:.0f} s).
"""
    metrics = {
        "stage1": {**s1x, "resume_skip_seconds": timings["stage1_resume_s"]},
        "stage2": {"seconds": r2["seconds"], **r2["metrics"], **r2["extra"]},
        "stage3": {"seconds": r3["seconds"], **r3["metrics"], **r3["extra"]},
        "ablation": table["rows"],
        "seconds": total,
    }
    torch.set_grad_enabled(True)
    return DemoResult(
        title="gac_pipeline: SAR-to-optical in three stages (TerraMind, Prithvi, LoRA)",
        summary_md=summary_md,
        figures=figures,
        metrics=metrics,
    )


def _steps(summary: dict) -> int:
    """Epochs a training run went through (``epochs_run`` of its summary)."""
    return int(summary.get("epochs_run") or 0)
