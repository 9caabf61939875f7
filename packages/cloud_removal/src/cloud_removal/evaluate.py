"""``cr-eval``: honest evaluation of a checkpoint, with the identity baseline beside every figure.

For the chosen split it reports MAE, RMSE, PSNR (dB), SSIM, SAM (degrees) and optionally LPIPS:

* over all pixels, over cloudy pixels (cloud intensity > ``--cloud_threshold``) and over clear pixels;
* for the model's prediction and for the cloudy input itself (identity baseline), and their
  difference (``delta`` = model - identity; positive is better for PSNR/SSIM, negative for
  MAE/RMSE/SAM).

Conventions (fixed, stated in the summary): images in the normalised optical space of the run
(GLF-CR: reflectance in [0, 1]), predictions clamped to [0, data_range], ``data_range`` = 1 for GLF-CR;
split-level PSNR = ``10 log10(R^2 / MSE over every pixel and band of the split)`` (not the mean of
per-image PSNRs); SSIM with an 11 x 11 Gaussian window (sigma 1.5), border cropped (scikit-image);
SAM in degrees. Outputs under ``--out``: ``per_image.csv``, ``summary.json`` and PNG panels
(cloudy RGB | SAR VV | prediction | target | error | confidence) of the best and worst images by PSNR
gain over the identity.

Example::

    cr-eval --checkpoint runs/cloud_removal/checkpoints/best.ckpt --split test --out runs/eval
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eo_common.io import atomic_save_json, atomic_write
from eo_common.metrics import ImageQualityMetrics
from tqdm import tqdm

from .data import CloudRemovalDataError, SEN12MSCRDataset
from .task import CloudRemovalTask

__all__ = ["EvalConfig", "evaluate", "load_task", "run_config_of", "shared_rgb", "main"]

METRICS = ("psnr", "ssim", "sam_deg", "mae", "rmse")
REGIONS = ("all", "cloudy", "clear")


@dataclass
class EvalConfig:
    """``cr-eval`` settings (one field per flag).

    Attributes:
        checkpoint: a ``cr-train`` checkpoint (``best.ckpt``).
        split: ``train``/``val``/``test``.
        out: output folder.
        input_data_folder, data_list_filepath: default: from the run's ``config.json``.
        load_size: default from the run; crop_size: evaluation centre crop (0: the largest multiple
            of the network stride that fits ``load_size``).
        cloud_mask: ``difference`` or ``s2cloudless`` (default: the run's).
        cloud_threshold: intensity above which a pixel counts as cloudy.
        batch_size: images per forward pass.
        panels: number of best and of worst images drawn.
        lpips_weights: local LPIPS backbone weights (LPIPS is skipped without them).
        limit: evaluate only the first N images (0: all).
    """

    checkpoint: Path
    split: str = "test"
    out: Path = Path("runs/cr_eval")
    input_data_folder: Path | None = None
    data_list_filepath: Path | None = None
    load_size: int | None = None
    crop_size: int = 0
    cloud_mask: str | None = None
    cloud_threshold: float = 0.2
    batch_size: int = 4
    panels: int = 3
    lpips_weights: Path | None = None
    limit: int = 0


def run_config_of(checkpoint: Path) -> dict[str, Any]:
    """The ``arguments`` of ``config.json`` of the run a checkpoint belongs to ({} if none)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        cfg = folder / "config.json"
        if cfg.is_file():
            return json.loads(cfg.read_text()).get("arguments", {})
    return {}


def load_task(checkpoint: str | Path) -> CloudRemovalTask:
    """Load a trained :class:`CloudRemovalTask` on CPU in eval mode (clear error if missing)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        task = CloudRemovalTask.load_from_checkpoint(path, map_location="cpu")
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a cr-train checkpoint ({exc})") from exc
    return task.eval()


def shared_rgb(
    images: list[np.ndarray], bands: tuple[int, int, int] = (3, 2, 1), reference: int = -1
) -> list[np.ndarray]:
    """RGB (H, W, 3) of several (C, H, W) images with ONE stretch (2-98 % of ``images[reference]``).

    A shared stretch keeps the cloudy input, the prediction and the target comparable.
    """
    ref = images[reference][list(bands)]
    lo, hi = np.nanpercentile(ref, 2), np.nanpercentile(ref, 98)
    scale = max(float(hi - lo), 1e-6)
    return [np.clip((im[list(bands)] - lo) / scale, 0, 1).transpose(1, 2, 0) for im in images]


def _image_metrics(
    pred: torch.Tensor, target: torch.Tensor, cloudy: torch.Tensor, data_range: float
) -> dict[str, float]:
    """Metrics of one image (1, C, H, W) over all, cloudy and clear pixels; NaN for empty regions."""
    out: dict[str, float] = {}
    regions = {"all": None, "cloudy": cloudy, "clear": ~cloudy}
    for region, mask in regions.items():
        if mask is not None and not bool(mask.any()):
            for m in METRICS:
                out[f"{region}_{m}"] = float("nan")
            continue
        met = ImageQualityMetrics(data_range=data_range)
        met.update(pred, target, mask=mask)
        res = met.compute()
        for m in METRICS:
            out[f"{region}_{m}"] = float(res[m])
    return out


def evaluate(cfg: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; write per-image CSV, summary JSON and panels.

    Returns:
        The summary dict (also ``<out>/summary.json``).
    """
    ckpt = Path(cfg.checkpoint)
    task = load_task(ckpt)
    run = run_config_of(ckpt)
    root = cfg.input_data_folder or run.get("input_data_folder")
    if root is None:
        raise CloudRemovalDataError(
            f"{ckpt}: no --input_data_folder given and none recorded in the run's config.json"
        )
    data_list = cfg.data_list_filepath or run.get("data_list_filepath")
    load_size = cfg.load_size if cfg.load_size is not None else int(run.get("load_size", 256))
    stride = task.model_config.stride
    crop = cfg.crop_size or (load_size // stride) * stride
    if crop % stride:
        raise ValueError(f"--crop_size {crop} is not divisible by the network stride {stride}")
    convention = task.hparams.get("convention", "glf-cr")
    ds = SEN12MSCRDataset(
        root,
        data_list,
        cfg.split,
        load_size=load_size,
        crop_size=crop,
        train=False,
        convention=convention,
        cloud_mask=cfg.cloud_mask or run.get("cloud_mask", "difference"),
    )
    n = len(ds) if not cfg.limit else min(cfg.limit, len(ds))
    if n == 0:
        raise CloudRemovalDataError(f"{ds.data_list}: split {cfg.split!r} has no rows")
    r = task.data_range
    totals = {
        (who, region): ImageQualityMetrics(data_range=r, lpips_weights=None)
        for who in ("model", "identity")
        for region in REGIONS
    }
    lpips = (
        {
            who: ImageQualityMetrics(
                data_range=r, rgb_bands=(3, 2, 1), lpips_weights=cfg.lpips_weights
            )
            for who in ("model", "identity")
        }
        if cfg.lpips_weights
        else None
    )
    rows: list[dict[str, Any]] = []
    keep: list[tuple[float, dict[str, np.ndarray]]] = []
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for start in tqdm(range(0, n, cfg.batch_size), disable=not progress, desc="cr-eval"):
            items = [ds[i] for i in range(start, min(n, start + cfg.batch_size))]
            batch = {
                k: torch.stack([it[k] for it in items])
                for k in ("optical", "sar", "target", "cloud_mask")
            }
            out = task(batch["optical"], batch["sar"])
            pred = out.prediction.clamp(0, r)
            ident = batch["optical"].clamp(0, r)
            target = batch["target"]
            cloudy = batch["cloud_mask"] > cfg.cloud_threshold
            for region in REGIONS:
                mask = None if region == "all" else (cloudy if region == "cloudy" else ~cloudy)
                if mask is not None and not bool(mask.any()):
                    continue
                totals[("model", region)].update(pred, target, mask=mask)
                totals[("identity", region)].update(ident, target, mask=mask)
            if lpips is not None:
                lpips["model"].update(pred, target)
                lpips["identity"].update(ident, target)
            for j, it in enumerate(items):
                sl = slice(j, j + 1)
                m_model = _image_metrics(pred[sl], target[sl], cloudy[sl], r)
                m_ident = _image_metrics(ident[sl], target[sl], cloudy[sl], r)
                row: dict[str, Any] = {
                    "name": it["name"],
                    "index": it["index"],
                    "cloud_fraction": float(cloudy[sl].float().mean()),
                }
                for k in m_model:
                    row[f"model_{k}"] = m_model[k]
                    row[f"identity_{k}"] = m_ident[k]
                    row[f"delta_{k}"] = m_model[k] - m_ident[k]
                rows.append(row)
                conf = out.confidence[j, 0].numpy() if out.confidence is not None else None
                keep.append(
                    (
                        row["delta_all_psnr"],
                        {
                            "optical": batch["optical"][j].numpy(),
                            "sar": batch["sar"][j].numpy(),
                            "pred": pred[j].numpy(),
                            "target": target[j].numpy(),
                            "mask": batch["cloud_mask"][j, 0].numpy(),
                            "conf": conf,
                            "name": it["name"],
                            "psnr": row["model_all_psnr"],
                            "ident_psnr": row["identity_all_psnr"],
                        },
                    )
                )
                keep.sort(key=lambda t: t[0])
                if len(keep) > 2 * cfg.panels:
                    del keep[cfg.panels : len(keep) - cfg.panels]
    metrics: dict[str, Any] = {"model": {}, "identity": {}, "delta": {}}
    for region in REGIONS:
        for who in ("model", "identity"):
            met = totals[(who, region)]
            metrics[who][region] = (
                {k: float(v) for k, v in met.compute().items()} if met.update_count else None
            )
        if metrics["model"][region] and metrics["identity"][region]:
            metrics["delta"][region] = {
                k: metrics["model"][region][k] - metrics["identity"][region][k]
                for k in metrics["model"][region]
            }
    if lpips is not None:
        for who in ("model", "identity"):
            metrics[who]["all"]["lpips"] = float(lpips[who].compute()["lpips"])
        metrics["delta"]["all"]["lpips"] = (
            metrics["model"]["all"]["lpips"] - metrics["identity"]["all"]["lpips"]
        )
    csv_path = out_dir / "per_image.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_write(csv_path, "w") as f:
        f.write(buf.getvalue())
    figures = _panels(keep, cfg.panels, out_dir)
    summary = {
        "checkpoint": str(ckpt),
        "split": cfg.split,
        "n_images": len(rows),
        "crop_size": crop,
        "normalization": convention,
        "data_range": r,
        "cloud_mask": ds.cloud_mask,
        "cloud_threshold": cfg.cloud_threshold,
        "conventions": "split PSNR from the split MSE; SSIM 11x11 Gaussian sigma 1.5, border cropped; "
        "SAM in degrees; predictions clamped to [0, data_range]",
        "metrics": metrics,
        "per_image_csv": str(csv_path),
        "figures": [str(p) for p in figures],
        "images_improved": int(sum(1 for r_ in rows if r_["delta_all_psnr"] > 0)),
    }
    atomic_save_json(summary, out_dir / "summary.json")
    return summary


def _panels(keep: list[tuple[float, dict[str, np.ndarray]]], k: int, out_dir: Path) -> list[Path]:
    from eo_common.viz import save_panels

    if not keep or k <= 0:
        return []
    worst = keep[:k]
    best = keep[::-1][:k]
    figures = []
    for label, chosen in (("best", best), ("worst", worst)):
        rows = []
        for gain, d in chosen:
            cloudy_rgb, pred_rgb, target_rgb = shared_rgb([d["optical"], d["pred"], d["target"]])
            err = np.abs(d["pred"] - d["target"]).mean(0)
            row = [
                (f"cloudy {d['name']}\nPSNR {d['ident_psnr']:.1f} dB", cloudy_rgb),
                ("SAR VV (normalised)", d["sar"][0], {"cmap": "gray"}),
                (f"prediction\nPSNR {d['psnr']:.1f} dB ({gain:+.1f})", pred_rgb),
                ("target (clear)", target_rgb),
                ("|error| mean over bands", err, {"cmap": "magma"}),
                (
                    "confidence" if d["conf"] is not None else "cloud mask",
                    d["conf"] if d["conf"] is not None else d["mask"],
                    {"cmap": "viridis", "vmin": 0, "vmax": 1},
                ),
            ]
            rows.append(row)
        figures.append(save_panels(rows, out_dir / f"panels_{label}.png"))
    return figures


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cr-eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--out", type=Path, default=Path("runs/cr_eval"))
    p.add_argument("--input_data_folder", type=Path, default=None)
    p.add_argument("--data_list_filepath", type=Path, default=None)
    p.add_argument("--load_size", type=int, default=None)
    p.add_argument("--crop_size", type=int, default=0)
    p.add_argument("--cloud_mask", default=None, choices=("difference", "s2cloudless"))
    p.add_argument("--cloud_threshold", type=float, default=0.2)
    p.add_argument("--batch_size", type=int, default=4)
    p.add_argument("--panels", type=int, default=3)
    p.add_argument("--lpips_weights", type=Path, default=None)
    p.add_argument("--limit", type=int, default=0)
    return p


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    cfg = EvalConfig(**vars(ns))
    try:
        summary = evaluate(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"cr-eval: error: {exc}", file=sys.stderr)
        return 2
    m = summary["metrics"]
    print(f"{summary['n_images']} images, split {summary['split']}")
    print("region  who       " + " ".join(f"{k:>8s}" for k in METRICS))
    for region in REGIONS:
        for who in ("model", "identity", "delta"):
            vals = m[who].get(region)
            if vals:
                print(
                    f"{region:7s} {who:9s} " + " ".join(f"{_fmt(vals.get(k)):>8s}" for k in METRICS)
                )
    print(f"wrote {summary['per_image_csv']} and {Path(cfg.out) / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
