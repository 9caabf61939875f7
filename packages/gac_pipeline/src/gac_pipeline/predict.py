"""``gac-infer``: run the whole pipeline on a split, write every stage's GeoTIFFs, panels and the ablation.

Stage 1 outputs come from ``--stage1-dir`` (precomputed by ``gac-stage1``); without it they are generated
here into ``<output-dir>/stage1`` with the stage-1 flags (resumable like ``gac-stage1``). Then opt_v2 =
stage 2 (``--stage2-checkpoint``) and opt_v3 = stage 3 (``--stage3-checkpoint``, optional).

Outputs under ``--output-dir``::

    opt_v2/<patch_id>.tif, opt_v3/<patch_id>.tif   12-band GeoTIFFs (S2 L2A DN), tile georeference kept
    panels/<patch_id>.png                          S1 | opt_v1 | opt_v2 | opt_v3 | target (--save-visualizations)
    metrics.json, metrics.md                       the ablation table: stage 1 only / stages 1+2 / all three,
                                                   PSNR, SSIM, LPIPS (RGB, with --lpips-weights), SAM (deg),
                                                   SAR-edge agreement (lower is better), runtime per tile
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from eo_common.io import atomic_save_json, atomic_write
from eo_common.normalize import denormalize_s2
from eo_common.viz import save_panels
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gac_pipeline.data import RGB_INDICES, PairedTileDataset, build_catalogue, read_tile
from gac_pipeline.evaluate import StageMetrics, markdown_table
from gac_pipeline.stage1 import Stage1Config, run_stage1, write_opt_v1

__all__ = ["InferConfig", "run_inference", "build_parser", "main", "ABLATION_COLUMNS"]

ABLATION_COLUMNS = ("psnr", "ssim", "lpips", "sam_deg", "sar_edge", "seconds_per_tile")
ABLATION_ROWS = {"opt_v1": "stage 1 only", "opt_v2": "stages 1+2", "opt_v3": "stages 1+2+3"}


@dataclass
class InferConfig:
    """Flags of ``gac-infer`` (one field per flag)."""

    data_dir: Path | None = None
    stage2_checkpoint: Path | None = None
    stage3_checkpoint: Path | None = None
    output_dir: Path = Path("runs/gac_infer")
    stage1_dir: Path | None = None
    split: str = "test"
    max_tiles: int | None = None
    batch_size: int = 4
    save_visualizations: bool = False
    max_panels: int = 16
    lpips_weights: Path | None = None
    device: str = "auto"
    # stage 1 on the fly (only without --stage1-dir)
    model_size: str = "base"
    timesteps: int = 10
    checkpoint: Path | None = None
    pretrained: bool = False
    random_init: bool = False
    seed: int = 0
    progress: bool = True


def _stage1_seconds_per_tile(stage1_dir: Path) -> float | None:
    """Generation time per tile from the stage-1 summaries, when they recorded any generation."""
    seconds = tiles = 0.0
    for p in Path(stage1_dir).glob("summary.*.json"):
        s = json.loads(p.read_text())
        if s.get("total_generated"):
            seconds += float(s["total_generation_seconds"])
            tiles += float(s["total_generated"])
    return seconds / tiles if tiles else None


def _display(x: torch.Tensor, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """(12, H, W) -> (H, W, 3) RGB (B04, B03, B02) with a fixed stretch shared by all panels of a tile."""
    rgb = x[list(RGB_INDICES)].numpy()
    return np.clip((rgb - low[:, None, None]) / (high - low)[:, None, None], 0, 1).transpose(
        1, 2, 0
    )


def _panel(
    s1: torch.Tensor, stages: dict[str, torch.Tensor], target: torch.Tensor, out: Path
) -> Path:
    """S1 | stages | target; every optical panel uses the target's 2-98 % stretch, so they compare."""
    ref = target[list(RGB_INDICES)].numpy().reshape(3, -1)
    low, high = np.percentile(ref, 2, axis=1), np.percentile(ref, 98, axis=1)
    high = np.maximum(high, low + 1e-6)
    panels = [("S1 VV (scaled dB)", s1[0].numpy(), {"cmap": "gray", "vmin": 0, "vmax": 1})]
    for name, x in stages.items():
        panels.append((name, _display(x, low, high)))
    panels.append(("target S2", _display(target, low, high)))
    return save_panels(panels, out)


def run_inference(config: InferConfig, log=print) -> dict:
    """Run stages 1-3 on a split and evaluate each; returns ``{"rows": {...}, "table": str, ...}``."""
    from gac_pipeline.train import load_stage_model

    if config.data_dir is None:
        raise ValueError("give --data-dir (BigEarthNet v2 root)")
    if config.stage2_checkpoint is None:
        raise ValueError("give --stage2-checkpoint (best.ckpt of gac-stage2)")
    out = Path(config.output_dir)
    device = torch.device(
        "cuda" if config.device == "auto" and torch.cuda.is_available() else
        ("cpu" if config.device == "auto" else config.device)
    )  # fmt: skip
    records = build_catalogue(config.data_dir, config.split, config.max_tiles)
    stage1_dir = config.stage1_dir
    stage1_seconds = None
    if stage1_dir is None:
        stage1_dir = out / "stage1"
        s1cfg = Stage1Config(
            data_dir=config.data_dir, output_dir=stage1_dir, split=config.split, max_tiles=config.max_tiles,
            model_size=config.model_size, timesteps=config.timesteps, batch_size=config.batch_size,
            seed=config.seed, checkpoint=config.checkpoint, pretrained=config.pretrained,
            random_init=config.random_init, device=config.device, progress=config.progress,
        )  # fmt: skip
        run_stage1(s1cfg, log=log)
    stage1_seconds = _stage1_seconds_per_tile(stage1_dir)
    dataset = PairedTileDataset(records, stage1_dir, cache=False)
    for tid, reason in dataset.skipped:
        log(f"tile {tid} skipped: {reason}")
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=False)
    by_id = {r.patch_id: r for r in dataset.records}
    refiner = load_stage_model(config.stage2_checkpoint).to(device)
    grounder = (
        load_stage_model(config.stage3_checkpoint).to(device) if config.stage3_checkpoint else None
    )
    names = ["opt_v1", "opt_v2"] + (["opt_v3"] if grounder is not None else [])
    metrics = {
        n: StageMetrics(None if config.lpips_weights is None else str(config.lpips_weights))
        for n in names
    }
    seconds = {"opt_v2": 0.0, "opt_v3": 0.0}
    panels_written: list[Path] = []
    n_tiles = 0
    for batch in tqdm(loader, desc="gac-infer", unit="batch", disable=not config.progress):
        s1, s1_db = batch["s1"].to(device), batch["s1_db"].to(device)
        outputs = {"opt_v1": batch["opt_v1"].to(device)}
        with torch.no_grad():
            t = time.perf_counter()
            outputs["opt_v2"] = refiner(outputs["opt_v1"], s1 if refiner.config.use_s1 else None)
            seconds["opt_v2"] += time.perf_counter() - t
            if grounder is not None:
                t = time.perf_counter()
                outputs["opt_v3"] = grounder(outputs["opt_v2"], s1_db, s1)
                seconds["opt_v3"] += time.perf_counter() - t
        target = batch["target"].to(device)
        for name in names:
            metrics[name].update(outputs[name], target, s1)
        for i, tid in enumerate(batch["patch_id"]):
            tile = read_tile(by_id[tid])
            for name in names[1:]:
                dn = denormalize_s2(outputs[name][i].float().cpu().numpy(), "glf-cr")
                write_opt_v1(
                    out / name / f"{tid}.tif", dn, crs=tile.crs, transform=tile.transform,
                    tags={"GAC_STAGE": name, "GAC_SOURCE_TILE": tid},
                )  # fmt: skip
            if config.save_visualizations and len(panels_written) < config.max_panels:
                stages = {n: outputs[n][i].float().cpu() for n in names}
                panels_written.append(
                    _panel(
                        batch["s1"][i], stages, batch["target"][i], out / "panels" / f"{tid}.png"
                    )
                )
        n_tiles += len(batch["patch_id"])
    rows = {}
    for name in names:
        row = metrics[name].compute()
        if name == "opt_v1":
            row["seconds_per_tile"] = stage1_seconds if stage1_seconds is not None else float("nan")
        else:
            row["seconds_per_tile"] = seconds[name] / max(n_tiles, 1)
        rows[ABLATION_ROWS[name]] = row
    table = markdown_table(rows, ABLATION_COLUMNS)
    note = (
        "seconds_per_tile: stage 1 = TerraMind generation time per tile (from the stage-1 summaries); stages 2 "
        "and 3 = time of that stage's network alone. LPIPS: n/a without --lpips-weights. SAR-edge agreement: "
        "(1 - Pearson r of Sobel edge maps of Lee-filtered SAR and of the optical B02/B03/B04/B08 mean) / 2, "
        "lower is better."
    )
    with atomic_write(out / "metrics.md", "w") as f:
        f.write(f"# gac-infer: {n_tiles} tiles of split {config.split}\n\n{table}\n\n{note}\n")
    result = {"tiles": n_tiles, "rows": rows, "table": table, "panels": [str(p) for p in panels_written],
              "config": asdict(config)}  # fmt: skip
    atomic_save_json(result, out / "metrics.json")
    log(table)
    return {**result, "panels": panels_written}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gac-infer",
        description="Run stages 1-3 on a split: GeoTIFFs per stage, PNG panels, and the ablation metrics table.",
    )
    p.add_argument("--data-dir", type=Path, required=True, help="BigEarthNet v2 root")
    p.add_argument("--stage2-checkpoint", type=Path, required=True)
    p.add_argument(
        "--stage3-checkpoint", type=Path, default=None, help="omit to stop after stage 2"
    )
    p.add_argument("--output-dir", type=Path, default=Path("runs/gac_infer"))
    p.add_argument(
        "--stage1-dir", type=Path, default=None, help="precomputed opt_v1 (gac-stage1 output)"
    )
    p.add_argument("--split", default="test")
    p.add_argument("--max-tiles", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--save-visualizations", action="store_true", help="PNG panels per tile")
    p.add_argument("--max-panels", type=int, default=16)
    p.add_argument(
        "--lpips-weights",
        type=Path,
        default=None,
        help="local LPIPS backbone weights (else LPIPS n/a)",
    )
    p.add_argument("--device", default="auto")
    g = p.add_argument_group("stage 1 on the fly (without --stage1-dir)")
    g.add_argument("--model-size", default="base", choices=["tiny", "small", "base", "large"])
    g.add_argument("--timesteps", type=int, default=10)
    g.add_argument("--checkpoint", type=Path, default=None, help="local TerraMind generate weights")
    g.add_argument("--pretrained", action="store_true")
    g.add_argument("--random-init", action="store_true")
    g.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    config = InferConfig(
        data_dir=ns.data_dir, stage2_checkpoint=ns.stage2_checkpoint, stage3_checkpoint=ns.stage3_checkpoint,
        output_dir=ns.output_dir, stage1_dir=ns.stage1_dir, split=ns.split, max_tiles=ns.max_tiles,
        batch_size=ns.batch_size, save_visualizations=ns.save_visualizations, max_panels=ns.max_panels,
        lpips_weights=ns.lpips_weights, device=ns.device, model_size=ns.model_size, timesteps=ns.timesteps,
        checkpoint=ns.checkpoint, pretrained=ns.pretrained, random_init=ns.random_init, seed=ns.seed,
        progress=not ns.no_progress,
    )  # fmt: skip
    try:
        run_inference(config)
    except (ValueError, FileNotFoundError) as exc:
        print(f"gac-infer: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
