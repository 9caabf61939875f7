"""``gac-infer``: run the whole pipeline on a split, write every stage's GeoTIFFs, panels and the ablation.

Stage 1 outputs come from ``--stage1_dir`` (a gac-stage1 run); without it they are generated here into
``<run>/stage1`` with the ``stage1.*`` settings (a nested gac-stage1 run, resumed by ``--resume``).
Then opt_v2 = stage 2 (``--stage2_checkpoint``) and opt_v3 = stage 3 (``--stage3_checkpoint``, optional).
``--last_stage 1`` or ``2`` stops after that stage (the ablation preset ``gac_pipeline:ablation`` runs
the three as variants paired by seed: the same stage-1 tiles for every variant of one seed).

The run folder (``--output_dir``) holds::

    config.yaml, summary.json                      settings; headline metrics test/psnr ... of the last stage
    opt_v2/<patch_id>.tif, opt_v3/<patch_id>.tif   12-band GeoTIFFs (S2 L2A DN), tile georeference kept
    panels/<patch_id>.png                          S1 | opt_v1 | opt_v2 | opt_v3 | target (--save_visualizations)
    metrics.json, metrics.md                       the ablation table: stage 1 only / stages 1+2 / all three,
                                                   PSNR, SSIM, LPIPS (RGB, with --lpips_weights), SAM (deg),
                                                   SAR-edge agreement (lower is better), runtime per tile

Reruns follow the rule of every eolab command: a folder that holds a run is not touched without
``--resume`` (recompute into the same folder with the same settings: stage 1 on the fly skips finished
tiles, the rest is rewritten file by file with identical results) or ``--overwrite`` (replace the whole
folder once both checkpoints and the data are checked), so two runs' outputs never mix.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from eo_common.config import RunConfig
from eo_common.errors import InputError
from eo_common.io import atomic_save_json, atomic_write
from eo_common.normalize import denormalize_s2
from eo_common.runs import RunFolder
from eo_common.viz import save_panels
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from gac_pipeline.config import InferConfig, Stage1Config, Stage1Data
from gac_pipeline.data import RGB_INDICES, PairedTileDataset, split_records, tile_georef
from gac_pipeline.evaluate import StageMetrics, markdown_table
from gac_pipeline.stage1 import build_stage1_generator, run_stage1, write_opt_v1
from gac_pipeline.task import load_stage_model

__all__ = ["infer", "ABLATION_COLUMNS", "ABLATION_ROWS"]

ABLATION_COLUMNS = ("psnr", "ssim", "lpips", "sam_deg", "sar_edge", "seconds_per_tile")
ABLATION_ROWS = {"opt_v1": "stage 1 only", "opt_v2": "stages 1+2", "opt_v3": "stages 1+2+3"}
_NOTE = (
    "seconds_per_tile: stage 1 = TerraMind generation time per tile (from the stage-1 summaries); "
    "stages 2 and 3 = time of that stage's network alone. LPIPS: n/a without --lpips_weights. "
    "SAR-edge agreement: (1 - Pearson r of Sobel edge maps of Lee-filtered SAR and of the optical "
    "B02/B03/B04/B08 mean) / 2, lower is better."
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


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


def _stage1_config(cfg: InferConfig, run_dir: Path) -> Stage1Config:
    """The nested gac-stage1 run of ``gac-infer`` without ``--stage1_dir``."""
    data = Stage1Data(
        root=cfg.data.root, split=cfg.data.split, max_tiles=cfg.data.max_tiles,
        batch_size=cfg.data.batch_size,
    )  # fmt: skip
    run = dataclasses.replace(
        cfg.run, output_dir=run_dir / "stage1", name="", resume=True, overwrite=False
    )
    return Stage1Config(data=data, model=cfg.stage1, run=run)


def _device(run: RunConfig) -> torch.device:
    if run.accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def infer(cfg: InferConfig, log=_stderr) -> dict:
    """Run stages 1-3 on a split and evaluate each; returns the run's ``summary.json`` record.

    Inputs (catalogue, both checkpoints, the stage-1 folder or the stage-1 weights) are checked before
    the run folder is touched. ``summary.json`` ``metrics``: ``<split>/<metric>`` of the last stage
    (``test/psnr``, ``test/ssim``, ``test/sam_deg``, ``test/sar_edge``, ``test/lpips``) and
    ``<split>/<opt_vN>/<metric>`` of every stage (:func:`gac_pipeline.config.infer_metrics`).
    ``--last_stage 1`` / ``2`` stops after stage 1 / 2 (no stage-2 / stage-3 model is loaded).
    """
    folder = RunFolder.plan(cfg, "gac-infer")
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    split = {"val": "validation"}.get(cfg.data.split, cfg.data.split)
    records = split_records(cfg.data.root, split, cfg.data.max_tiles)
    refiner = grounder = None
    if cfg.model.stages >= 2:
        refiner = load_stage_model(cfg.model.stage2_checkpoint, expect_kind="stage2")
    if cfg.model.stages == 3:
        grounder = load_stage_model(cfg.model.stage3_checkpoint, expect_kind="stage3")
    stage1_dir = cfg.data.stage1_dir
    generator = None
    if stage1_dir is None:
        stage1_cfg = _stage1_config(cfg, folder.path)
        generator = build_stage1_generator(stage1_cfg)
    elif not (Path(stage1_dir) / "opt_v1").is_dir():
        raise InputError("no opt_v1/ folder here: give a gac-stage1 run folder", path=stage1_dir)
    out = folder.open()
    if stage1_dir is None:
        stage1_cfg = _stage1_config(cfg, out)
        run_stage1(stage1_cfg, generator=generator, log=log)
        stage1_dir = stage1_cfg.run.output_dir
        del generator
    result = _run_stages(cfg, out, records, Path(stage1_dir), refiner, grounder, log)
    rows = result["rows"]
    last = list(rows)[-1]
    metrics = {f"{split}/{k}": v for k, v in rows[last].items() if k != "seconds_per_tile"}
    for stage, row in zip(result["stages"], rows.values(), strict=True):
        metrics.update({f"{split}/{stage}/{k}": v for k, v in row.items()})
    finite = {k: v for k, v in metrics.items() if v is not None and np.isfinite(v)}
    return folder.finish(
        metrics=finite,
        paths={"metrics_json": out / "metrics.json", "metrics_md": out / "metrics.md"},
        device=str(_device(cfg.run)),
        extra={"tiles": result["tiles"], "skipped": result["skipped"], "panels": result["panels"]},
    )


def _run_stages(cfg, out, records, stage1_dir, refiner, grounder, log) -> dict:
    device = _device(cfg.run)
    dataset = PairedTileDataset(records, stage1_dir)
    for tid, reason in dataset.skipped:
        log(f"tile {tid} skipped: {reason}")
    loader = DataLoader(dataset, batch_size=cfg.data.batch_size, shuffle=False)
    by_id = {r.patch_id: r for r in dataset.records}
    refiner = None if refiner is None else refiner.to(device)
    grounder = None if grounder is None or refiner is None else grounder.to(device)
    names = ["opt_v1"] + (["opt_v2"] if refiner is not None else [])
    names += ["opt_v3"] if grounder is not None else []
    lpips = None if cfg.output.lpips_weights is None else str(cfg.output.lpips_weights)
    metrics = {n: StageMetrics(lpips) for n in names}
    seconds = {"opt_v2": 0.0, "opt_v3": 0.0}
    panels: list[str] = []
    n_tiles = 0
    for batch in tqdm(loader, desc="gac-infer", unit="batch", disable=not cfg.run.progress):
        s1, s1_db = batch["s1"].to(device), batch["s1_db"].to(device)
        outputs = {"opt_v1": batch["opt_v1"].to(device)}
        with torch.no_grad():
            if refiner is not None:
                t = time.perf_counter()
                outputs["opt_v2"] = refiner(
                    outputs["opt_v1"], s1 if refiner.config.use_s1 else None
                )
                seconds["opt_v2"] += time.perf_counter() - t
            if grounder is not None:
                t = time.perf_counter()
                outputs["opt_v3"] = grounder(outputs["opt_v2"], s1_db, s1)
                seconds["opt_v3"] += time.perf_counter() - t
        target = batch["target"].to(device)
        for name in names:
            metrics[name].update(outputs[name], target, s1)
        for i, tid in enumerate(batch["patch_id"]):
            crs, transform = tile_georef(by_id[tid])
            for name in names[1:]:
                dn = denormalize_s2(outputs[name][i].float().cpu().numpy(), "glf-cr")
                write_opt_v1(
                    out / name / f"{tid}.tif", dn, crs=crs, transform=transform,
                    tags={"GAC_STAGE": name, "GAC_SOURCE_TILE": tid},
                )  # fmt: skip
            if cfg.output.save_visualizations and len(panels) < cfg.output.max_panels:
                stages = {n: outputs[n][i].float().cpu() for n in names}
                path = _panel(
                    batch["s1"][i], stages, batch["target"][i], out / "panels" / f"{tid}.png"
                )
                panels.append(str(path))
        n_tiles += len(batch["patch_id"])
    stage1_seconds = _stage1_seconds_per_tile(stage1_dir)
    rows = {}
    for name in names:
        row = metrics[name].compute()
        if name == "opt_v1":
            row["seconds_per_tile"] = float("nan") if stage1_seconds is None else stage1_seconds
        else:
            row["seconds_per_tile"] = seconds[name] / max(n_tiles, 1)
        rows[ABLATION_ROWS[name]] = row
    table = markdown_table(rows, ABLATION_COLUMNS)
    with atomic_write(out / "metrics.md", "w") as f:
        f.write(f"# gac-infer: {n_tiles} tiles of split {cfg.data.split}\n\n{table}\n\n{_NOTE}\n")
    result = {"tiles": n_tiles, "skipped": len(dataset.skipped), "stages": names, "rows": rows,
              "table": table, "panels": panels}  # fmt: skip
    atomic_save_json(result, out / "metrics.json")
    log(table)
    return result
