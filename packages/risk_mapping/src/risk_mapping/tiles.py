"""Tiles in memory and the spatial split: blocks, their split, tiles laid inside each block."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from eo_common.io import atomic_write
from eo_common.raster import tile_windows
from rasterio.windows import Window

__all__ = ["SPLITS", "SPLIT_CODES", "TileSet", "block_layout", "assign_blocks", "layout_tiles"]

SPLITS = ("train", "val", "test")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


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
