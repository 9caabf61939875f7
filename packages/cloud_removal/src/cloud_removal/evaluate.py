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
SAM in degrees. The run folder (``--output_dir``, alias ``--out``; the rerun rule of every eolab
command) receives ``config.yaml``, ``per_image.csv``, ``summary.json`` and PNG panels (cloudy RGB |
SAR VV | prediction | target | error | confidence) of the best and worst images by PSNR gain over the
identity. Data settings not given (root, list, load size, cloud mask) are those of the training run
(its ``config.yaml``, or the ``config.json`` of a release 0.1.0 run).

Example::

    cr-eval --checkpoint runs/cloud_removal/checkpoints/best.ckpt --split test --out runs/eval
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from eo_common.errors import CheckpointError
from eo_common.io import atomic_write
from eo_common.metrics import ImageQualityMetrics
from eo_common.runs import RunFolder, read_config
from eo_common.training import load_checkpoint
from tqdm import tqdm

from .config import CREvalConfig
from .data import CloudRemovalDataError, SEN12MSCRDataset
from .task import CloudRemovalTask

__all__ = ["evaluate", "load_task", "run_settings", "shared_rgb", "METRICS", "REGIONS"]

METRICS = ("psnr", "ssim", "sam_deg", "mae", "rmse")
REGIONS = ("all", "cloudy", "clear")
_HPARAMS = ("model_name", "model_config", "loss_config")


def run_settings(checkpoint: Path) -> dict[str, Any]:
    """Data settings of the run a checkpoint belongs to, as ``{"root", "data_list", "load_size",
    "cloud_mask", "val_fraction"}`` (only those found): from ``config.yaml`` (cr-train runs) or the
    ``config.json`` of release 0.1.0 runs, in the checkpoint's folder or the one above it."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        cfg = read_config(folder)
        if cfg and isinstance(cfg.get("data"), dict):
            data = cfg["data"]
            return {
                k: data[k]
                for k in ("root", "data_list", "load_size", "cloud_mask", "val_fraction")
                if k in data
            }
        old = folder / "config.json"
        if old.is_file():
            try:
                args = json.loads(old.read_text()).get("arguments", {})
            except (OSError, ValueError):
                args = {}
            keys = {
                "input_data_folder": "root",
                "data_list_filepath": "data_list",
                "load_size": "load_size",
                "cloud_mask": "cloud_mask",
            }
            return {new: args[k] for k, new in keys.items() if args.get(k) is not None}
    return {}


def load_task(checkpoint: str | Path) -> CloudRemovalTask:
    """A trained :class:`CloudRemovalTask` from a cr-train checkpoint, on CPU in eval mode.

    Raises:
        CheckpointError: one line for a missing, truncated or corrupt file, and for a checkpoint of
            another command or package (other hyper-parameters, or tensors that do not fit).
    """
    path = Path(checkpoint)
    data = load_checkpoint(path, expect_keys=("state_dict", "hyper_parameters"))
    hp = dict(data["hyper_parameters"] or {})
    missing = [k for k in _HPARAMS if k not in hp]
    accepted = set(inspect.signature(CloudRemovalTask.__init__).parameters) - {"self"}
    if missing:
        raise CheckpointError(
            f"not a cr-train checkpoint (no {', '.join(missing)} among its hyper-parameters)",
            path=path,
        )
    try:
        task = CloudRemovalTask(**{k: v for k, v in hp.items() if k in accepted})
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"not a usable cr-train checkpoint ({exc})", path=path) from None
    state = data["state_dict"]
    own = task.state_dict()
    absent = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if absent or extra or wrong:
        raise CheckpointError(
            f"not a cr-train checkpoint of this network: {len(absent)} of its {len(own)} tensors "
            f"missing, {len(extra)} unexpected, {len(wrong)} of another shape",
            path=path,
        )
    task.load_state_dict(state)
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


def _dataset(cfg: CREvalConfig, task: CloudRemovalTask) -> tuple[SEN12MSCRDataset, int]:
    """The split to score (settings not given come from the training run) and the crop size."""
    ckpt = Path(cfg.checkpoint)  # type: ignore[arg-type]
    run = run_settings(ckpt)
    d = cfg.data
    root = d.root or run.get("root")
    if root is None:
        raise CloudRemovalDataError(
            f"{ckpt}: no --input_data_folder given and none recorded in the run's config.yaml"
        )
    data_list = d.data_list or (run.get("data_list") if not d.root else None)
    load_size = d.load_size if d.load_size >= 0 else int(run.get("load_size", 256))
    stride = task.model_config.stride
    crop = d.crop_size or (load_size // stride) * stride
    if crop % stride or crop <= 0:
        raise CloudRemovalDataError(
            f"data.crop_size: {crop} is not a positive multiple of the network stride {stride}"
        )
    val_fraction = d.val_fraction if d.val_fraction >= 0 else float(run.get("val_fraction", 0.1))
    ds = SEN12MSCRDataset(
        root,
        data_list,
        d.split,
        load_size=load_size,
        crop_size=crop,
        train=False,
        convention=task.hparams.get("convention", "glf-cr"),
        cloud_mask=d.cloud_mask if d.cloud_mask != "run" else run.get("cloud_mask", "difference"),
        val_fraction=val_fraction,
    )
    if not len(ds):
        raise CloudRemovalDataError(f"{ds.data_list}: split {d.split!r} has no rows")
    ds.read_row(0)  # band counts, grids and sizes of the first sample, before the folder is touched
    return ds, crop


def _score(
    task: CloudRemovalTask,
    ds: SEN12MSCRDataset,
    n: int,
    *,
    batch_size: int,
    threshold: float,
    panels: int,
    lpips_weights: Path | None,
    progress: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]], list[tuple[float, dict[str, Any]]]]:
    """(metrics by who and region, per-image rows, the best/worst images kept for panels)."""
    r = task.data_range
    totals = {
        (who, region): ImageQualityMetrics(data_range=r, lpips_weights=None)
        for who in ("model", "identity")
        for region in REGIONS
    }
    lpips = (
        {
            who: ImageQualityMetrics(data_range=r, rgb_bands=(3, 2, 1), lpips_weights=lpips_weights)
            for who in ("model", "identity")
        }
        if lpips_weights
        else None
    )
    rows: list[dict[str, Any]] = []
    keep: list[tuple[float, dict[str, np.ndarray]]] = []
    with torch.no_grad():
        for start in tqdm(range(0, n, batch_size), disable=not progress, desc="cr-eval"):
            items = [ds[i] for i in range(start, min(n, start + batch_size))]
            batch = {
                k: torch.stack([it[k] for it in items])
                for k in ("optical", "sar", "target", "cloud_mask")
            }
            out = task(batch["optical"], batch["sar"])
            pred = out.prediction.clamp(0, r)
            ident = batch["optical"].clamp(0, r)
            target = batch["target"]
            cloudy = batch["cloud_mask"] > threshold
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
                if len(keep) > 2 * panels:
                    del keep[panels : len(keep) - panels]
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
    return metrics, rows, keep


def headline(metrics: dict[str, Any], split: str) -> dict[str, float]:
    """summary.json's metrics: ``<split>/psnr`` ... of the model over all pixels, the gain over the
    identity, and PSNR over cloudy and clear pixels."""
    out = {
        f"{split}/{k}": v for k, v in metrics["model"]["all"].items() if k in METRICS + ("lpips",)
    }
    out[f"{split}/identity_psnr"] = metrics["identity"]["all"]["psnr"]
    out[f"{split}/psnr_gain"] = metrics["delta"]["all"]["psnr"]
    for region in ("cloudy", "clear"):
        if metrics["model"].get(region):
            out[f"{split}/{region}_psnr"] = metrics["model"][region]["psnr"]
            out[f"{split}/{region}_psnr_gain"] = metrics["delta"][region]["psnr"]
    return out


def evaluate(cfg: CREvalConfig) -> dict[str, Any]:
    """Score a checkpoint and the identity baseline on a split; write the run folder.

    The folder (rerun rule of :mod:`eo_common.runs`) receives ``config.yaml``, ``per_image.csv``,
    ``panels_best.png`` / ``panels_worst.png`` and ``summary.json`` (headline metrics of
    :func:`headline`; every region and the identity baseline under ``extra.metrics``).

    Returns:
        The ``summary.json`` record.
    """
    folder = RunFolder.plan(cfg, "cr-eval")
    ckpt = Path(cfg.checkpoint)  # type: ignore[arg-type]
    task = load_task(ckpt)
    ds, crop = _dataset(cfg, task)
    n = len(ds) if not cfg.data.limit else min(cfg.data.limit, len(ds))
    out_dir = folder.open()
    metrics, rows, keep = _score(
        task,
        ds,
        n,
        batch_size=cfg.data.batch_size,
        threshold=cfg.cloud_threshold,
        panels=cfg.panels,
        lpips_weights=cfg.lpips_weights,
        progress=cfg.run.progress,
    )
    csv_path = out_dir / "per_image.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    with atomic_write(csv_path, "w") as f:
        f.write(buf.getvalue())
    figures = _panels(keep, cfg.panels, out_dir)
    split = cfg.data.split
    paths: dict[str, Any] = {"checkpoint": ckpt, "per_image_csv": csv_path}
    paths.update({p.stem: p for p in figures})
    _print_table(metrics, len(rows), split)
    return folder.finish(
        metrics=headline(metrics, split),
        paths=paths,
        extra={
            "split": split,
            "n_images": len(rows),
            "images_improved": int(sum(1 for r_ in rows if r_["delta_all_psnr"] > 0)),
            "crop_size": crop,
            "normalization": ds.convention,
            "data_range": task.data_range,
            "cloud_mask": ds.cloud_mask,
            "cloud_threshold": cfg.cloud_threshold,
            "conventions": "split PSNR from the split MSE; SSIM 11x11 Gaussian sigma 1.5, border "
            "cropped; SAM in degrees; predictions clamped to [0, data_range]",
            "metrics": metrics,
        },
    )


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


def _fmt(v: float | None) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _print_table(metrics: dict[str, Any], n: int, split: str) -> None:
    """The metrics table on stderr (stdout carries the JSON summary)."""
    lines = [
        f"{n} images, split {split}",
        "region  who       " + " ".join(f"{k:>8s}" for k in METRICS),
    ]
    for region in REGIONS:
        for who in ("model", "identity", "delta"):
            vals = metrics[who].get(region)
            if vals:
                lines.append(
                    f"{region:7s} {who:9s} " + " ".join(f"{_fmt(vals.get(k)):>8s}" for k in METRICS)
                )
    print("\n".join(lines), file=sys.stderr)
