"""Prepare stage: inputs on one grid, block split, tiling, oversampling, SMOTE.

Layout written by :func:`prepare_dataset` under ``<output_dir>/prepare/``::

    stack.tif            the inputs on the reference grid (only when something had to be built:
                         a list of rasters, per-file nodata, resampling; see risk_mapping.sources)
    labels.tif           the labels on that grid (only when resampled or mapped)
    split_mask.tif       class map 0 = train, 1 = val, 2 = test block (255 outside every block), COG
    band_stats.json      per-band mean/std over the valid pixels of the *train* blocks only
    tiles_train.npz      x (N, C, t, t) float32 standardised (missing -> 0), y (N, t, t) uint8, ids
    tiles_val.npz, tiles_test.npz
    dataset_summary.json tile counts and class fractions per split, before and after oversampling

Missing pixels
    A pixel is missing when any band is nodata, NaN or +-inf (:func:`eo_common.raster.missing_mask`);
    its label becomes 255 (ignore), it is left out of the band statistics and set to 0 after
    standardisation, so neither SMOTE nor the network ever sees a non-finite value.

Spatial split without leakage
    The raster is cut into square blocks of ``block_size`` pixels (the last block row/column absorbs a
    remainder smaller than one tile). Whole blocks are assigned to train/val/test by a seeded
    permutation, and tiles are laid *inside each block* (:func:`eo_common.raster.tile_windows` over the
    block), so tiles overlap only tiles of their own block: no pixel appears in two splits. Layouts
    with an official split (Landslide4Sense) use their patches as blocks and their split.

Oversampling and SMOTE: :mod:`risk_mapping.oversample`.

Example:
    >>> summary = prepare_dataset(cfg, "runs/risk/prepare")  # doctest: +SKIP
    >>> summary["train"]["n_synthetic"]  # doctest: +SKIP
    12
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from eo_common.io import atomic_save_json
from eo_common.normalize import BandStats, RunningBandStats
from eo_common.raster import ClassInfo, RasterError, missing_mask, write_class_map
from rasterio.windows import Window

from risk_mapping.config import IGNORE_INDEX, RiskConfig
from risk_mapping.oversample import (
    class_fractions,
    oversample_by_duplication,
    smote_tiles,
)
from risk_mapping.tiles import (
    SPLIT_CODES,
    SPLITS,
    TileSet,
    assign_blocks,
    block_layout,
    layout_tiles,
)

__all__ = [
    "SPLIT_CLASSES",
    "LabelError",
    "prepare_dataset",
    "load_summary",
]

log = logging.getLogger(__name__)

#: the split mask as a class map (colours for QGIS)
SPLIT_CLASSES = [
    ClassInfo(0, "train", (77, 175, 74)),
    ClassInfo(1, "val", (55, 126, 184)),
    ClassInfo(2, "test", (228, 26, 28)),
]


class LabelError(RasterError):
    """The label raster holds values other than 0, 1, 2 and 255 (message names the file)."""


# --------------------------------------------------------------------------------------------------
# the prepare stage
# --------------------------------------------------------------------------------------------------
def _read_block(
    stack: rasterio.io.DatasetReader,
    labels: rasterio.io.DatasetReader,
    window: Window,
    labels_path: str | os.PathLike,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x (C, h, w) float32, y (h, w) uint8, missing (h, w) bool)`` of one block.

    A pixel is missing when any band is nodata, NaN or +-inf; its label becomes 255.
    """
    x = stack.read(window=window).astype(np.float32)
    y = labels.read(1, window=window)
    bad = np.setdiff1d(np.unique(y), [0, 1, 2, IGNORE_INDEX])
    if bad.size:
        raise LabelError(
            f"label values must be 0, 1, 2 or 255 (ignore); found {bad[:5].tolist()}", labels_path
        )
    missing = missing_mask(x, stack.nodata, "any")
    y = np.where(missing, IGNORE_INDEX, y).astype(np.uint8)
    return x, y, missing


def _blocks(
    cfg: RiskConfig, inputs: Any, height: int, width: int
) -> tuple[list[Window], list[str]]:
    ds = cfg.dataset
    if inputs.blocks is not None:
        return list(inputs.blocks), list(inputs.block_splits)
    blocks = block_layout(height, width, ds.block_size, ds.tile_size)
    return blocks, assign_blocks(len(blocks), ds.val_fraction, ds.test_fraction, cfg.seed)


def prepare_dataset(cfg: RiskConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Run the whole prepare stage (see the module docstring); returns the summary dict.

    Memory: one block of the stack at a time while computing statistics, then the tiles themselves.

    Raises:
        eo_common.errors.InputError, RasterError: inputs that cannot be used (names file and field).
    """
    from risk_mapping.sources import build_inputs

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = cfg.dataset
    inputs = build_inputs(cfg, out_dir)
    stack_path, labels_path = inputs.stack, inputs.labels
    categorical = [b for b, kind in enumerate(inputs.band_kinds) if kind == "categorical"]
    with rasterio.open(stack_path) as stack, rasterio.open(labels_path) as labels:
        height, width, channels = stack.height, stack.width, stack.count
        blocks, split_of_block = _blocks(cfg, inputs, height, width)
        split_mask = np.full((height, width), 255, np.uint8)
        for block, name in zip(blocks, split_of_block):
            split_mask[
                block.row_off : block.row_off + block.height,
                block.col_off : block.col_off + block.width,
            ] = SPLIT_CODES[name]
        write_class_map(
            out_dir / "split_mask.tif",
            split_mask,
            crs=stack.crs,
            transform=stack.transform,
            classes=SPLIT_CLASSES,
            description="split",
        )
        del split_mask

        running = RunningBandStats(nodata=None)
        for block, name in zip(blocks, split_of_block):
            if name != "train":
                continue
            x, _, missing = _read_block(stack, labels, block, labels_path)
            x[:, missing] = np.nan  # RunningBandStats ignores NaN
            running.update(x)
        stats: BandStats = running.finalize()
        stats.save(out_dir / "band_stats.json")

        per_split: dict[
            str, list[tuple[np.ndarray, np.ndarray, str, tuple[int, int, int, int]]]
        ] = {s: [] for s in SPLITS}
        tiles_by_block: dict[int, list[Window]] = {}
        for b, w in layout_tiles(blocks, ds.tile_size, ds.overlap):
            tiles_by_block.setdefault(b, []).append(w)
        for b, block in enumerate(blocks):
            x, y, missing = _read_block(stack, labels, block, labels_path)
            x = stats.standardize(x).astype(np.float32)
            x[:, missing] = 0.0
            for w in tiles_by_block.get(b, []):
                r, c = int(w.row_off - block.row_off), int(w.col_off - block.col_off)
                ty = y[r : r + int(w.height), c : c + int(w.width)]
                if (ty != IGNORE_INDEX).mean() < ds.min_valid_fraction:
                    continue
                tx = x[:, r : r + int(w.height), c : c + int(w.width)]
                name = split_of_block[b]
                tile_id = f"{name}_r{int(w.row_off):05d}_c{int(w.col_off):05d}"
                per_split[name].append(
                    (tx, ty, tile_id, (int(w.row_off), int(w.col_off), int(w.height), int(w.width)))
                )

    summary: dict[str, Any] = {
        "stack": str(stack_path),
        "labels": str(labels_path),
        "built": inputs.built,
        "band_names": inputs.band_names,
        "band_kinds": inputs.band_kinds,
        "height": height,
        "width": width,
        "bands": channels,
        "tile_size": ds.tile_size,
        "overlap": ds.overlap,
        "n_blocks": {s: split_of_block.count(s) for s in SPLITS},
        "block_size": ds.block_size,
    }
    for name in SPLITS:
        items = per_split[name]
        if items:
            ts = TileSet(
                np.stack([i[0] for i in items]),
                np.stack([i[1] for i in items]),
                [i[2] for i in items],
                np.array([i[3] for i in items], dtype=np.int64),
            )
        else:
            ts = TileSet.empty(channels, ds.tile_size)
        entry: dict[str, Any] = {"n_tiles": len(ts), "classes": class_fractions(ts.y)}
        if name in ("train", "val") and len(ts) == 0:
            raise RasterError(
                f"no {name} tile has >= {ds.min_valid_fraction:.0%} labelled pixels "
                "(dataset.min_valid_fraction, dataset.block_size)",
                labels_path,
            )
        if name == "train":
            originals = ts
            ts, dup_info = oversample_by_duplication(
                originals,
                ds.oversample_class,
                ds.oversample_target_fraction,
                ds.medium_rich_threshold,
            )
            entry["duplication"] = dup_info
            entry["classes_after_duplication"] = class_fractions(ts.y)
            if ds.use_smote:
                result = smote_tiles(
                    originals,
                    cls=ds.oversample_class,
                    threshold=ds.medium_rich_threshold,
                    k_neighbors=ds.smote_k_neighbors,
                    ratio=ds.smote_ratio,
                    too_few=ds.smote_too_few,
                    seed=cfg.seed,
                    categorical_bands=categorical,
                )
                log.info(result.message)
                print(result.message)
                ts = ts.concat(result.tiles)
                entry["smote"] = {
                    "n_synthetic": len(result.tiles),
                    "k_used": result.k_used,
                    "message": result.message,
                }
            entry["n_synthetic"] = sum(i.startswith("smote_") for i in ts.ids)
            entry["n_tiles_final"] = len(ts)
            entry["classes_final"] = class_fractions(ts.y)
        ts.save(out_dir / f"tiles_{name}.npz")
        summary[name] = entry
    atomic_save_json(summary, out_dir / "dataset_summary.json")
    return summary


def load_summary(prepare_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(prepare_dir) / "dataset_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"dataset summary not found: {path} (run the prepare stage)")
    return json.loads(path.read_text(encoding="utf-8"))
