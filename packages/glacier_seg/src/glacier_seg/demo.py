"""Demo on real imagery with **derived** labels: the Landsat-8 sample scene cut into GlacierHack tiles.

Data: the real Landsat-8 L1 scene of ``eo_common.samples`` (key ``landsat8_scene``; EPSG:32616,
30 m, 603 x 627 px, a cloudy summer scene without snow or glaciers). Bands B2, B3, B4, B6 are
converted to top-of-atmosphere reflectance with the OLI rescaling constants every Landsat-8 L1
metadata file carries (``rho = 2e-5 DN - 0.1``, no sun-angle correction) and B10 to brightness
temperature (``L = 3.342e-4 DN + 0.1``, ``T = 1321.0789 / ln(774.8853 / L + 1)`` K).

Labels are **derived from spectral indices**, not mapped by people, and the scene holds no real
glacier: the rules reproduce the *structure* of the GlacierHack task (four classes, one rare) on
real radiometry, so the pipeline can be run end to end on real pixels. With scene percentiles
``P_q`` (the scene has no pixel above the usual NDSI 0.4 snow threshold, so fixed thresholds would
leave the classes empty):

* glacier ("snow/ice-like"): bright and cold, ``green >= P85(green)`` and ``T <= P25(T)`` and
  ``NDSI >= P50(NDSI)`` with ``NDSI = (B3 - B6) / (B3 + B6)`` (here mostly cold bright cloud tops);
* debris ("thermal + index rule"): not glacier, ``P25(T) < T <= P40(T)`` and ``NDSI < P50(NDSI)``
  and ``green >= P50(green)`` (cool, moderately bright, low snow index);
* lake: ``NDWI >= P99(NDWI)`` with ``NDWI = (B3 - B5) / (B3 + B5)`` (B5, NIR, is *not* one of the
  five input bands, so the network must infer water from the others);
* background: everything else.

Tiles of 96 x 96 px (36 tiles) are written in the GlacierHack layout with their georeference; a
seeded quarter of the tiles is held out. Training runs on CPU within the wall-clock budget; the
held-out MCC is computed over all held-out pixels flattened (competition definition).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from eo_common.demos import DemoResult
from eo_common.io import atomic_save_json
from eo_common.raster import read_raster, write_raster
from rasterio.windows import Window

from glacier_seg.data import (
    BAND_FOLDERS,
    BAND_NAMES,
    CLASS_NAMES,
    LABEL_FOLDER,
    classes_to_mask_values,
)

__all__ = ["derive_labels", "landsat_to_glacierhack_bands", "build_demo_layout", "run_demo"]

TILE = 96
_REFLECTANCE_MULT, _REFLECTANCE_ADD = 2.0e-5, -0.1
_B10_MULT, _B10_ADD, _B10_K1, _B10_K2 = 3.342e-4, 0.1, 774.8853, 1321.0789


def landsat_to_glacierhack_bands(dn: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Landsat-8 L1 DN -> TOA reflectance (B2..B7) and B10 brightness temperature (K), float32."""
    out = {}
    for band, values in dn.items():
        v = values.astype(np.float64)
        if band == "B10":
            radiance = _B10_MULT * v + _B10_ADD
            out[band] = (_B10_K2 / np.log(_B10_K1 / radiance + 1.0)).astype(np.float32)
        else:
            out[band] = (_REFLECTANCE_MULT * v + _REFLECTANCE_ADD).astype(np.float32)
    return out


def derive_labels(bands: dict[str, np.ndarray]) -> np.ndarray:
    """Class map (H, W) uint8 0..3 from B3, B5, B6 reflectance and B10 temperature (module rules)."""
    green, nir, swir, temp = (bands[k].astype(np.float64) for k in ("B3", "B5", "B6", "B10"))
    ndsi = (green - swir) / np.maximum(green + swir, 1e-6)
    ndwi = (green - nir) / np.maximum(green + nir, 1e-6)
    p = np.percentile
    glacier = (green >= p(green, 85)) & (temp <= p(temp, 25)) & (ndsi >= p(ndsi, 50))
    debris = (
        ~glacier
        & (temp > p(temp, 25))
        & (temp <= p(temp, 40))
        & (ndsi < p(ndsi, 50))
        & (green >= p(green, 50))
    )
    lake = ndwi >= p(ndwi, 99)
    classes = np.zeros(green.shape, dtype=np.uint8)
    classes[glacier] = 1
    classes[debris] = 2
    classes[lake] = 3
    return classes


def build_demo_layout(dest: str | Path, seed: int = 0, tile: int = TILE) -> Path:
    """Write the derived-label Landsat-8 tiles in the GlacierHack layout (idempotent).

    Returns the root; ``root/split.json`` holds ``{"train": [...], "val": [...]}`` tile ids.
    """
    from eo_common.samples import sample_path

    root = Path(dest)
    done = root / "split.json"
    if done.is_file():
        return root
    scene = sample_path("landsat8_scene")
    needed = ("B2", "B3", "B4", "B5", "B6", "B10")
    rasters = {b: read_raster(scene / f"l8_{b}.tif", bands=[1]) for b in needed}
    ref = rasters["B2"]
    values = landsat_to_glacierhack_bands({b: r.array[0] for b, r in rasters.items()})
    classes = derive_labels(values)
    height, width = classes.shape
    ids = []
    k = 0
    for r0 in range(0, height - tile + 1, tile):
        for c0 in range(0, width - tile + 1, tile):
            k += 1
            tag = f"{k:02d}"
            window = Window(c0, r0, tile, tile)
            transform = rasterio_window_transform(ref.transform, window)
            for folder, band in zip(BAND_FOLDERS, BAND_NAMES):
                write_raster(
                    root / folder / f"{band}_{band}_masked_{tag}.tif",
                    values[band][None, r0 : r0 + tile, c0 : c0 + tile],
                    crs=ref.crs,
                    transform=transform,
                )
            write_raster(
                root / LABEL_FOLDER / f"Y_output_resized_{tag}.tif",
                classes_to_mask_values(classes[r0 : r0 + tile, c0 : c0 + tile])[None],
                crs=ref.crs,
                transform=transform,
            )
            ids.append(str(k))
    order = np.random.default_rng(seed).permutation(len(ids))
    n_val = len(ids) // 4
    val = sorted((ids[i] for i in order[:n_val]), key=int)
    train = [i for i in ids if i not in set(val)]
    fractions = {name: float((classes == c).mean()) for c, name in enumerate(CLASS_NAMES)}
    atomic_save_json({"train": train, "val": val, "class_fractions": fractions, "tile": tile}, done)
    return root


def rasterio_window_transform(transform, window: Window):
    """Affine transform of a window (rasterio's ``windows.transform``)."""
    from rasterio.windows import transform as window_transform

    return window_transform(window, transform)


def run_demo(out_dir: Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    """Build the tiles, train within ``budget_s`` on CPU, evaluate the held-out tiles, draw panels."""
    import torch

    from glacier_seg.evaluate import EvalConfig, evaluate
    from glacier_seg.train import build_parser, config_from_args, train

    started = time.perf_counter()
    out_dir = Path(out_dir)
    root = build_demo_layout(out_dir / "data", seed=seed)
    split = json.loads((root / "split.json").read_text())
    train_budget = max(20.0, 0.6 * budget_s - (time.perf_counter() - started))
    args = [
        "--data_root", str(root), "--val_ids", ",".join(split["val"]),
        "--encoder_name", "resnet18", "--encoder_weights", "none",
        "--decoder_channels", "64,32,32,16,16", "--normalization", "dataset",
        "--crop_size", "64", "--batch_size", "8", "--samples_per_epoch", "96",
        "--max_epochs", "200", "--lr", "2e-3", "--lr_scheduler", "none",
        "--p_minority", "0.5", "--lake_weight", "2", "--debris_weight", "1",
        "--num_workers", "0", "--early_stop_patience", "0",
        "--output_dir", str(out_dir / "runs"), "--experiment_name", "glacier_demo",
        "--seed", str(seed), "--max_time_s", f"{train_budget:.0f}",
    ]  # fmt: skip
    cfg = config_from_args(build_parser().parse_args(args))
    threads = torch.get_num_threads()
    # one intra-op thread: on a small shared CPU, 2+ threads spin against other processes and a
    # training step gets 5-10x slower (measured: 0.4 s vs 2-8 s per step)
    torch.set_num_threads(1)
    try:
        summary = train(cfg, enable_progress_bar=False, enable_model_summary=False)
    finally:
        torch.set_num_threads(threads)
    metrics = evaluate(
        EvalConfig(
            checkpoints=[Path(summary["best_checkpoint"])],
            data_root=root,
            tile_ids=tuple(split["val"]),
            out_dir=out_dir / "eval",
            max_panels=4,
            glcm_cache=out_dir / "runs" / "glcm_cache",
        )
    )
    from eo_common.viz import plot_training_curves

    figures = [out_dir / "eval" / "confusion_matrix.png"]
    figures += sorted((out_dir / "eval").glob("panel_*.png"))
    curves = plot_training_curves(
        Path(summary["run_dir"]) / "metrics.csv",
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
64 px crops, {summary["epochs"]} epochs in {summary["seconds"]:.0f} s of CPU
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
            "epochs": summary["epochs"],
            "train_seconds": summary["seconds"],
            "val_tiles": split["val"],
            "labels": "derived from spectral indices (not real glacier outlines)",
        },
    )
