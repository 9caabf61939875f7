"""Constants and the cross-field rules of the risk config (used by :mod:`risk_mapping.config`).

Each rule returns ``"field: message"`` lines, so :meth:`risk_mapping.config.RiskConfig.check` can
report every problem at once. Nothing here imports torch or the config dataclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "IGNORE_INDEX",
    "STAGES",
    "CONTINUOUS_RESAMPLING",
    "CATEGORICAL_RESAMPLING",
    "stack_files",
    "dataset_problems",
    "model_problems",
    "inference_problems",
    "missing_files",
]

CLASS_NAMES = ("low", "medium", "high")
NUM_CLASSES = 3
IGNORE_INDEX = 255
STAGES = ("prepare", "train", "infer", "evaluate")
#: resampling of continuous rasters (GDAL's warper names)
CONTINUOUS_RESAMPLING = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "med",
    "min",
    "max",
    "q1",
    "q3",
    "rms",
)
#: resampling of categorical rasters and labels: never a value that is not in the input
CATEGORICAL_RESAMPLING = ("nearest", "mode")


def stack_files(dataset: Any) -> list[Path]:
    """The stack as a list of files (one multi-band file is a list of one)."""
    if dataset.stack is None:
        return []
    if isinstance(dataset.stack, list | tuple):
        return [Path(p) for p in dataset.stack]
    return [Path(dataset.stack)]


def dataset_problems(ds: Any, split: str) -> list[str]:
    out = []
    files = stack_files(ds)
    if ds.layout == "rasters":
        if not files:
            out.append(
                "dataset.stack: required for layout rasters (a multi-band GeoTIFF or a list of rasters)"
            )
        if ds.labels is None:
            out.append("dataset.labels: required for layout rasters")
    elif ds.root is None:
        out.append("dataset.root: required for layout landslide4sense (the data set folder)")
    n = len(files)
    for key in ("kinds", "nodata"):
        values = getattr(ds, key)
        if values and len(values) != n:
            out.append(f"dataset.{key}: {len(values)} value(s) for {n} stack file(s); one per file")
    kinds = ds.kinds or ["continuous"] * n
    if isinstance(ds.resampling, list):
        if len(ds.resampling) != n:
            out.append(
                f"dataset.resampling: {len(ds.resampling)} value(s) for {n} stack file(s); "
                "give one name, or one per file"
            )
        for i, (name, kind) in enumerate(zip(ds.resampling, kinds)):
            allowed = CATEGORICAL_RESAMPLING if kind == "categorical" else CONTINUOUS_RESAMPLING
            if name not in allowed:
                out.append(
                    f"dataset.resampling: {name!r} for {kind} file {i} ({files[i].name}); "
                    f"choose from {', '.join(allowed)}"
                )
    elif ds.resampling not in CONTINUOUS_RESAMPLING:
        out.append(
            f"dataset.resampling: {ds.resampling!r}; choose from {', '.join(CONTINUOUS_RESAMPLING)}"
        )
    bad_map = [v for v in ds.label_map if v not in (0, 1, 2, IGNORE_INDEX)]
    if bad_map:
        out.append(f"dataset.label_map: risk classes are 0, 1, 2 or 255, got {bad_map}")
    if ds.reproject and not ds.align_rasters:
        out.append("dataset.reproject: needs dataset.align_rasters: true")
    if ds.overlap >= ds.tile_size:
        out.append(f"dataset.overlap: must be smaller than dataset.tile_size ({ds.tile_size})")
    if ds.tile_size % 32:
        out.append(f"dataset.tile_size: must be a multiple of 32 (U-Net), got {ds.tile_size}")
    if ds.layout == "rasters":
        if ds.block_size < ds.tile_size:
            out.append(f"dataset.block_size: must be at least dataset.tile_size ({ds.tile_size})")
        if ds.val_fraction + ds.test_fraction >= 1.0:
            out.append("dataset.test_fraction: val_fraction + test_fraction must be < 1")
        if ds.val_fraction <= 0:
            out.append(
                "dataset.val_fraction: must be > 0 (early stopping and the best checkpoint "
                "use validation kappa)"
            )
        if split == "test" and ds.test_fraction <= 0:
            out.append(
                "dataset.test_fraction: is 0 but evaluation.split is 'test'; give the test split "
                "blocks or evaluate another split (evaluation.split: val or all)"
            )
    return out


def model_problems(model: Any, training: Any) -> list[str]:
    out = []
    if len(model.decoder_channels) != 5:
        out.append(f"model.decoder_channels: expected 5 values, got {len(model.decoder_channels)}")
    if training.class_weights is not None and len(training.class_weights) != NUM_CLASSES:
        out.append(
            f"training.class_weights: expected {NUM_CLASSES} values (low, medium, high), "
            f"got {len(training.class_weights)}"
        )
    return out


def inference_problems(inf: Any) -> list[str]:
    out = []
    if inf.tile_size % 32:
        out.append(f"inference.tile_size: must be a multiple of 32 (U-Net), got {inf.tile_size}")
    if inf.overlap >= inf.tile_size:
        out.append(f"inference.overlap: must be smaller than inference.tile_size ({inf.tile_size})")
    if inf.uncertainty == "mc_variance" and inf.mc_dropout_samples < 2:
        out.append("inference.uncertainty: 'mc_variance' needs inference.mc_dropout_samples >= 2")
    crf = inf.crf
    if crf.overlap >= crf.tile_size:
        out.append(
            f"inference.crf.overlap: must be smaller than inference.crf.tile_size ({crf.tile_size})"
        )
    if len(crf.image_bands) != 3:
        out.append(f"inference.crf.image_bands: expected 3 bands, got {len(crf.image_bands)}")
    if len(set(inf.ensemble_seeds)) != len(inf.ensemble_seeds):
        out.append(f"inference.ensemble_seeds: repeated seed in {inf.ensemble_seeds}")
    return out


def missing_files(cfg: Any) -> list[str]:
    """Input files and folders that do not exist (GDAL virtual paths are left to GDAL)."""
    out = []
    ds = cfg.dataset

    def local(p: Path) -> bool:
        text = str(p)
        return not (text.startswith("/vsi") or "://" in text)

    for p in stack_files(ds):
        if local(p) and not p.is_file():
            out.append(f"dataset.stack: input file not found: {p}")
    if ds.labels is not None and local(ds.labels) and not ds.labels.is_file():
        out.append(f"dataset.labels: input file not found: {ds.labels}")
    if ds.layout == "landslide4sense" and ds.root is not None and not ds.root.is_dir():
        out.append(f"dataset.root: folder not found: {ds.root}")
    base = cfg.evaluation.baseline_metrics
    if base is not None and not base.is_file():
        out.append(f"evaluation.baseline_metrics: file not found: {base}")
    return out
