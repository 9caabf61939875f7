"""Prepare stage: aligned stack, block split, tiling, oversampling, SMOTE, and the training dataset.

Layout written by :func:`prepare_dataset` under ``<output_dir>/prepare/``::

    stack.tif            the input stack on one grid (only when the input was a list of rasters)
    split_mask.tif       uint8, 0 = train, 1 = val, 2 = test block (255 outside every block)
    band_stats.json      per-band mean/std over the valid pixels of the *train* blocks only
    tiles_train.npz      x (N, C, t, t) float32 standardised (nodata -> 0), y (N, t, t) uint8, ids
    tiles_val.npz, tiles_test.npz
    dataset_summary.json tile counts and class fractions per split, before and after oversampling

Spatial split without leakage
    The raster is cut into square blocks of ``block_size`` pixels (the last block row/column absorbs a
    remainder smaller than one tile). Whole blocks are assigned to train/val/test by a seeded
    permutation, and tiles are laid *inside each block* (:func:`eo_common.raster.tile_windows` over the
    block), so tiles overlap only tiles of their own block: no pixel appears in two splits.

Oversampling by duplication
    Tiles whose fraction of ``oversample_class`` pixels (among labelled pixels) is at least
    ``medium_rich_threshold`` are "rich". Copies of rich tiles, richest first and cycling, are appended
    until the class's pixel fraction over all train tiles reaches ``oversample_target_fraction``
    (the smallest number of copies that does). An unreachable target (or one that needs more copies than that) stops after ``3 x N`` copies with
    a note in the summary.

SMOTE on rich tiles, and the rule for synthetic labels
    imbalanced-learn's SMOTE works on flat vectors, so each *original* train tile becomes one vector:
    its standardised pixels followed by a one-hot encoding of its label mask with four channels (low,
    medium, high, ignore). Rich tiles are the minority class. SMOTE draws a rich tile ``a``, one of its
    ``k`` nearest rich neighbours ``b`` and ``lam ~ U(0, 1)`` and returns ``a + lam (b - a)`` for the
    whole vector. The image part is that interpolation. The label part is an interpolated one-hot
    ``(1 - lam) onehot(a) + lam onehot(b)``, which is turned back into a label per pixel as:

    * a pixel that is ignore (255) in either parent stays ignore (its ignore weight is > 0);
    * otherwise the class with the larger weight, i.e. the label of the parent the synthetic tile is
      closer to (``lam < 0.5``: ``a``; ``lam > 0.5``: ``b``); where both parents agree, that class.
      An exact tie (``lam = 0.5`` and different parents) goes to the lower class.

    So synthetic labels are always valid values {0, 1, 2, 255}, and every synthetic pixel carries the
    label one of its two parents has at that position. Synthetic tiles get ids ``smote_00000``, ...

Example:
    >>> from risk_mapping.config import load_config  # doctest: +SKIP
    >>> summary = prepare_dataset(load_config("config.yaml"), "runs/risk/prepare")  # doctest: +SKIP
    >>> summary["train"]["n_synthetic"]  # doctest: +SKIP
    12
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from eo_common.io import atomic_save_json, atomic_write
from eo_common.normalize import BandStats, RunningBandStats
from eo_common.raster import (
    RasterError,
    check_same_grid,
    missing_mask,
    stack_bands,
    tile_windows,
    write_raster,
)
from rasterio.windows import Window
from torch.utils.data import Dataset

from risk_mapping.config import (
    IGNORE_INDEX,
    NUM_CLASSES,
    AugmentationConfig,
    DatasetConfig,
    PipelineConfig,
)

__all__ = [
    "SPLITS",
    "TileSet",
    "LabelError",
    "resolve_stack",
    "block_layout",
    "assign_blocks",
    "layout_tiles",
    "class_fractions",
    "rich_mask",
    "oversample_by_duplication",
    "SmoteResult",
    "smote_tiles",
    "synthetic_labels_from_onehot",
    "prepare_dataset",
    "TileDataset",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class LabelError(RasterError):
    """The label raster holds values other than 0, 1, 2 and 255 (message names the file)."""


# --------------------------------------------------------------------------------------------------
# tiles in memory
# --------------------------------------------------------------------------------------------------
@dataclass
class TileSet:
    """Tiles of one split.

    Attributes:
        x: ``(N, C, t, t)`` float32, standardised, missing pixels set to 0.
        y: ``(N, t, t)`` uint8 labels 0/1/2, 255 = ignore.
        ids: ``N`` unique ids (``train_r0064_c0128``, ``..._dup0003``, ``smote_00007``).
        windows: ``(N, 4)`` int64 ``(row_off, col_off, height, width)`` in the raster; ``-1`` for
            synthetic tiles.
    """

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    windows: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def empty(cls, channels: int, tile: int) -> TileSet:
        return cls(
            np.zeros((0, channels, tile, tile), np.float32),
            np.zeros((0, tile, tile), np.uint8),
            [],
            np.zeros((0, 4), np.int64),
        )

    def concat(self, other: TileSet) -> TileSet:
        return TileSet(
            np.concatenate([self.x, other.x]),
            np.concatenate([self.y, other.y]),
            self.ids + other.ids,
            np.concatenate([self.windows, other.windows]),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` atomically (uncompressed: tiles are read back whole)."""
        with atomic_write(path, "wb") as f:
            np.savez(f, x=self.x, y=self.y, ids=np.array(self.ids, dtype=str), windows=self.windows)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TileSet:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tile file not found: {path} (run the prepare stage)")
        with np.load(path) as z:
            return cls(z["x"], z["y"], [str(i) for i in z["ids"]], z["windows"])


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------
def resolve_stack(cfg: DatasetConfig, out_dir: Path) -> Path:
    """Path of one multi-band GeoTIFF holding the input stack on the label grid.

    A single file is used as is. A list of single-band rasters is checked with
    :func:`eo_common.raster.check_same_grid`; when the grids differ and ``align_rasters`` is true they
    are resampled onto the first raster's grid with ``resampling``; the result is written to
    ``out_dir/stack.tif`` (float32, the inputs' nodata value). The label raster must share the stack's grid.

    Raises:
        RasterError: grids differ (and alignment is off), or the labels are on another grid.
    """
    if isinstance(cfg.stack, str):
        stack_path = Path(cfg.stack)
    else:
        paths = [Path(p) for p in cfg.stack]
        stack_path = out_dir / "stack.tif"
        try:
            check_same_grid(paths)
            same = True
        except RasterError:
            if not cfg.align_rasters:
                raise
            same = False
        raster = stack_bands(paths, reference=0, resampling="nearest" if same else cfg.resampling)
        names = cfg.band_names or [p.stem for p in paths]
        write_raster(
            stack_path,
            raster.array.astype(np.float32),
            crs=raster.crs,
            transform=raster.transform,
            nodata=raster.nodata,
            band_names=names,
        )
    check_same_grid([stack_path, Path(cfg.labels)])
    return stack_path


def block_layout(height: int, width: int, block_size: int, tile_size: int) -> list[Window]:
    """Partition a raster into non-overlapping blocks of about ``block_size`` pixels.

    Block edges fall on multiples of ``block_size``; a last row/column of blocks narrower than one
    tile is merged into its neighbour, so every block holds at least one tile (when the raster does).

    Example:
        >>> [(w.row_off, w.height, w.col_off, w.width) for w in block_layout(100, 90, 40, 16)]
        [(0, 40, 0, 40), (0, 40, 40, 50), (40, 40, 0, 40), (40, 40, 40, 50), (80, 20, 0, 40), (80, 20, 40, 50)]
        >>> [(w.row_off, w.height) for w in block_layout(100, 50, 40, 32)]  # 20-row rest merged
        [(0, 40), (40, 60)]
    """

    def edges(length: int) -> list[int]:
        cuts = list(range(0, length, block_size)) + [length]
        if len(cuts) > 2 and cuts[-1] - cuts[-2] < tile_size:
            del cuts[-2]
        return cuts

    rows, cols = edges(height), edges(width)
    return [
        Window(c0, r0, c1 - c0, r1 - r0)
        for r0, r1 in zip(rows[:-1], rows[1:])
        for c0, c1 in zip(cols[:-1], cols[1:])
    ]


def assign_blocks(n_blocks: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Split name per block: a seeded permutation, ``round(fraction * n)`` blocks each.

    With at least three blocks, val and test (when their fraction > 0) get at least one block each and
    train keeps at least one.

    Example:
        >>> sorted(assign_blocks(10, 0.2, 0.2, seed=0)).count("test")
        2
    """
    n_val = round(val_fraction * n_blocks)
    n_test = round(test_fraction * n_blocks)
    if n_blocks >= 3:
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
    n_val = min(n_val, max(n_blocks - 1, 0))
    n_test = min(n_test, max(n_blocks - 1 - n_val, 0))
    order = np.random.default_rng(seed).permutation(n_blocks)
    names = ["train"] * n_blocks
    for i in order[:n_val]:
        names[i] = "val"
    for i in order[n_val : n_val + n_test]:
        names[i] = "test"
    return names


def layout_tiles(blocks: list[Window], tile_size: int, overlap: int) -> list[tuple[int, Window]]:
    """``(block index, tile window in raster coordinates)`` for tiles laid inside each block."""
    out = []
    for b, block in enumerate(blocks):
        for w in tile_windows(int(block.height), int(block.width), tile_size, overlap):
            out.append(
                (b, Window(block.col_off + w.col_off, block.row_off + w.row_off, w.width, w.height))
            )
    return out


def class_fractions(y: np.ndarray) -> dict[str, Any]:
    """Pixel counts and fractions of classes 0/1/2 among labelled pixels (255 excluded)."""
    counts = np.bincount(y[y != IGNORE_INDEX].ravel().astype(np.int64), minlength=NUM_CLASSES)[
        :NUM_CLASSES
    ]
    total = int(counts.sum())
    return {
        "n_pixels": total,
        "n_ignored": int((y == IGNORE_INDEX).sum()),
        "counts": counts.tolist(),
        "fractions": [float(c / total) if total else 0.0 for c in counts],
    }


def rich_mask(y: np.ndarray, cls: int, threshold: float) -> np.ndarray:
    """``(N,)`` bool: tiles whose fraction of class ``cls`` among labelled pixels is >= threshold."""
    valid = (y != IGNORE_INDEX).reshape(len(y), -1).sum(1)
    hits = (y == cls).reshape(len(y), -1).sum(1)
    frac = np.where(valid > 0, hits / np.maximum(valid, 1), 0.0)
    return (frac >= threshold) & (valid > 0)


def oversample_by_duplication(
    tiles: TileSet, cls: int, target_fraction: float, threshold: float, max_factor: int = 3
) -> tuple[TileSet, dict[str, Any]]:
    """Append copies of rich tiles until class ``cls`` makes up ``target_fraction`` of labelled pixels.

    Rich tiles (see :func:`rich_mask`) are copied richest first, cycling, and the fewest copies that
    reach the target are used. Copies get ids ``<id>_dup<j>``.

    Returns:
        ``(tiles with copies appended, info)`` with ``info = {"n_duplicated", "fraction_before",
        "fraction_after", "reached"}``.

    Example:
        >>> y = np.zeros((4, 2, 2), np.uint8); y[0] = 1
        >>> ts = TileSet(np.zeros((4, 1, 2, 2), np.float32), y, ["a", "b", "c", "d"], np.zeros((4, 4), np.int64))
        >>> out, info = oversample_by_duplication(ts, cls=1, target_fraction=0.5, threshold=0.3)
        >>> info["n_duplicated"], info["fraction_after"]
        (2, 0.5)
    """
    flat = tiles.y.reshape(len(tiles), -1)
    valid = (flat != IGNORE_INDEX).sum(1).astype(np.int64)
    hits = (flat == cls).sum(1).astype(np.int64)
    total_valid, total_hits = int(valid.sum()), int(hits.sum())
    before = total_hits / total_valid if total_valid else 0.0
    info: dict[str, Any] = {
        "n_duplicated": 0,
        "fraction_before": before,
        "fraction_after": before,
        "reached": before >= target_fraction,
    }
    if target_fraction <= 0 or before >= target_fraction:
        return tiles, info
    rich = np.flatnonzero(rich_mask(tiles.y, cls, threshold))
    if rich.size == 0:
        info["reached"] = False
        info["note"] = f"no tile has >= {threshold:.0%} class-{cls} pixels; nothing to duplicate"
        return tiles, info
    frac = hits[rich] / np.maximum(valid[rich], 1)
    order = rich[np.argsort(-frac, kind="stable")]
    picks: list[int] = []
    limit = max_factor * len(tiles)
    while total_hits / total_valid < target_fraction and len(picks) < limit:
        i = int(order[len(picks) % len(order)])
        picks.append(i)
        total_hits += int(hits[i])
        total_valid += int(valid[i])
    reached = total_hits / total_valid >= target_fraction
    copies_of: dict[int, int] = {}
    new_ids = []
    for i in picks:
        copies_of[i] = copies_of.get(i, 0) + 1
        new_ids.append(f"{tiles.ids[i]}_dup{copies_of[i]:04d}")
    idx = np.array(picks, dtype=np.int64)
    dup = TileSet(tiles.x[idx], tiles.y[idx], new_ids, tiles.windows[idx])
    info.update(
        n_duplicated=len(picks), fraction_after=total_hits / total_valid, reached=bool(reached)
    )
    if not reached:
        info["note"] = f"target {target_fraction} unreachable within {limit} copies"
    return tiles.concat(dup), info


@dataclass
class SmoteResult:
    """Synthetic tiles and what happened (``message`` is the line printed to the user)."""

    tiles: TileSet
    k_used: int | None
    message: str


def synthetic_labels_from_onehot(onehot: np.ndarray) -> np.ndarray:
    """Labels of synthetic tiles from interpolated one-hot masks (the documented SMOTE rule).

    Args:
        onehot: ``(N, 4, t, t)`` interpolated one-hot weights for (low, medium, high, ignore).

    Returns:
        ``(N, t, t)`` uint8: 255 where the ignore weight is > 0, else the argmax of the three class
        weights (ties to the lower class).

    Example:
        >>> oh = np.zeros((1, 4, 1, 3), np.float32)
        >>> oh[0, :, 0, 0] = [0.3, 0.7, 0, 0]; oh[0, :, 0, 1] = [0, 0, 1, 0]; oh[0, :, 0, 2] = [0.6, 0, 0, 0.4]
        >>> synthetic_labels_from_onehot(oh).tolist()
        [[[1, 2, 255]]]
    """
    labels = np.argmax(onehot[:, :NUM_CLASSES], axis=1).astype(np.uint8)
    labels[onehot[:, NUM_CLASSES] > 1e-6] = IGNORE_INDEX
    return labels


def _onehot(y: np.ndarray) -> np.ndarray:
    """``(N, t, t)`` labels -> ``(N, 4, t, t)`` float32 one-hot (channel 3 = ignore)."""
    codes = np.where(y == IGNORE_INDEX, NUM_CLASSES, y).astype(np.int64)
    return np.eye(NUM_CLASSES + 1, dtype=np.float32)[codes].transpose(0, 3, 1, 2)


def smote_tiles(
    tiles: TileSet,
    *,
    cls: int,
    threshold: float,
    k_neighbors: int,
    ratio: float,
    too_few: str = "lower_k",
    seed: int = 0,
) -> SmoteResult:
    """Synthesise ``round(ratio * n_rich)`` tiles by SMOTE between rich tiles (imbalanced-learn).

    See the module docstring for the label rule. Needs ``k_neighbors + 1`` rich tiles; with fewer,
    ``too_few`` decides: ``"lower_k"`` uses ``k = n_rich - 1`` (skips when that is 0), ``"skip"`` makes
    no tiles, ``"error"`` raises.

    Raises:
        ValueError: too few rich tiles and ``too_few="error"`` (names ``dataset.smote_k_neighbors``).
    """
    from imblearn.over_sampling import SMOTE

    n, c, t, _ = tiles.x.shape
    empty = TileSet.empty(c, t)
    rich = rich_mask(tiles.y, cls, threshold)
    n_rich = int(rich.sum())
    n_new = int(round(ratio * n_rich))
    what = f"{n_rich} tile(s) with >= {threshold:.0%} class-{cls} pixels"
    if n_new == 0:
        return SmoteResult(empty, None, f"SMOTE: {what}; smote_ratio={ratio} asks for 0 new tiles")
    k = k_neighbors
    if n_rich < k + 1:
        msg = f"SMOTE needs at least smote_k_neighbors + 1 = {k + 1} rich tiles but found {what}"
        if too_few == "error":
            raise ValueError(
                f"dataset.smote_k_neighbors: {msg} (set smote_too_few: lower_k or skip)"
            )
        if too_few == "skip" or n_rich < 2:
            return SmoteResult(empty, None, f"{msg}; SMOTE skipped")
        k = n_rich - 1
        log.warning("%s; lowering k_neighbors to %d", msg, k)
    features = np.concatenate(
        [tiles.x.reshape(n, -1), _onehot(tiles.y).reshape(n, -1)], axis=1
    ).astype(np.float32)
    target = rich.astype(np.int64)
    if n_rich == n:
        # SMOTE insists on two classes; a dummy majority row does not enter the neighbour search
        # (SMOTE fits its nearest neighbours on the minority rows only) and is dropped again.
        features = np.concatenate([features, np.zeros((1, features.shape[1]), np.float32)])
        target = np.concatenate([target, [0]])
    sampler = SMOTE(sampling_strategy={1: n_rich + n_new}, k_neighbors=k, random_state=seed)
    resampled, _ = sampler.fit_resample(features, target)
    synth = resampled[len(features) :]
    if len(synth) != n_new:
        raise RuntimeError(f"SMOTE returned {len(synth)} synthetic rows, expected {n_new}")
    pix = c * t * t
    x_new = synth[:, :pix].reshape(n_new, c, t, t).astype(np.float32)
    y_new = synthetic_labels_from_onehot(synth[:, pix:].reshape(n_new, NUM_CLASSES + 1, t, t))
    ids = [f"smote_{i:05d}" for i in range(n_new)]
    windows = np.full((n_new, 4), -1, dtype=np.int64)
    msg = f"Generated {n_new} synthetic tiles via SMOTE (k_neighbors={k}, from {what})"
    return SmoteResult(TileSet(x_new, y_new, ids, windows), k, msg)


# --------------------------------------------------------------------------------------------------
# the prepare stage
# --------------------------------------------------------------------------------------------------
def _read_block(
    stack: rasterio.io.DatasetReader,
    labels: rasterio.io.DatasetReader,
    window: Window,
    labels_path: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def prepare_dataset(cfg: PipelineConfig, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Run the whole prepare stage (see the module docstring); returns the summary dict.

    Memory: one block of the stack at a time while computing statistics, then the tiles themselves.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = cfg.dataset
    stack_path = resolve_stack(ds, out_dir)
    labels_path = Path(ds.labels)
    with rasterio.open(stack_path) as stack, rasterio.open(labels_path) as labels:
        height, width, channels = stack.height, stack.width, stack.count
        if height < ds.tile_size or width < ds.tile_size:
            raise RasterError(
                f"raster of {height}x{width} px is smaller than dataset.tile_size={ds.tile_size}",
                stack_path,
            )
        bad_bands = [b for b in ds.optical_bands if b >= channels]
        if bad_bands:
            raise ValueError(
                f"dataset.optical_bands: band(s) {bad_bands} do not exist in {stack_path} ({channels} bands)"
            )
        blocks = block_layout(height, width, ds.block_size, ds.tile_size)
        split_of_block = assign_blocks(len(blocks), ds.val_fraction, ds.test_fraction, cfg.seed)

        split_mask = np.full((height, width), 255, np.uint8)
        for block, name in zip(blocks, split_of_block):
            split_mask[
                block.row_off : block.row_off + block.height,
                block.col_off : block.col_off + block.width,
            ] = SPLIT_CODES[name]
        write_raster(
            out_dir / "split_mask.tif",
            split_mask,
            crs=stack.crs,
            transform=stack.transform,
            nodata=255,
            band_names=["split"],
        )

        running = RunningBandStats(nodata=None)
        for block, name in zip(blocks, split_of_block):
            if name != "train":
                continue
            x, _, missing = _read_block(stack, labels, block, str(labels_path))
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
            x, y, missing = _read_block(stack, labels, block, str(labels_path))
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
        if name == "train":
            if len(ts) == 0:
                raise ValueError(
                    f"{labels_path}: no train tile has >= {ds.min_valid_fraction:.0%} labelled pixels (dataset.min_valid_fraction)"
                )
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


# --------------------------------------------------------------------------------------------------
# training dataset with augmentation
# --------------------------------------------------------------------------------------------------
class TileDataset(Dataset):
    """Tiles as tensors, with optional augmentation.

    Geometric (all bands and the label): random horizontal/vertical flips and rotations by multiples of
    90 degrees. Photometric (only ``optical_bands``, in standardised units): brightness adds
    ``U(-b, b)``, contrast scales around the tile mean by ``U(1 - c, 1 + c)``, saturation scales the
    deviation of each optical band from the optical-band mean by ``U(1 - s, 1 + s)``.

    Returns ``(x (C, t, t) float32, y (t, t) int64)``.
    """

    def __init__(
        self,
        tiles: TileSet,
        augmentation: AugmentationConfig | None = None,
        optical_bands: list[int] | None = None,
    ):
        self.tiles = tiles
        self.aug = augmentation
        self.optical = list(optical_bands or [])

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.tiles.x[i], dtype=np.float32))
        y = torch.from_numpy(self.tiles.y[i].astype(np.int64))
        if self.aug is None:
            return x, y
        a = self.aug
        if a.flips:
            if torch.rand(()) < 0.5:
                x, y = x.flip(-1), y.flip(-1)
            if torch.rand(()) < 0.5:
                x, y = x.flip(-2), y.flip(-2)
        if a.rotations and x.shape[-1] == x.shape[-2]:
            k = int(torch.randint(0, 4, ()))
            x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
        if self.optical:
            opt = x[self.optical]
            if a.brightness > 0:
                opt = opt + (torch.rand(()) * 2 - 1) * a.brightness
            if a.contrast > 0:
                factor = 1 + (torch.rand(()) * 2 - 1) * a.contrast
                opt = (opt - opt.mean()) * factor + opt.mean()
            if a.saturation > 0 and len(self.optical) > 1:
                factor = 1 + (torch.rand(()) * 2 - 1) * a.saturation
                grey = opt.mean(0, keepdim=True)
                opt = grey + (opt - grey) * factor
            x = x.clone()
            x[self.optical] = opt
        return x.contiguous(), y.contiguous()


def load_summary(prepare_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(prepare_dir) / "dataset_summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"dataset summary not found: {path} (run the prepare stage)")
    return json.loads(path.read_text(encoding="utf-8"))
