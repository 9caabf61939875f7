"""Tile layouts and blend weights: every pixel covered, overlapping predictions blended to one.

:func:`tile_windows` lays tiles of ``tile_size`` with ``overlap`` pixels between neighbours; the last
tile of each row and column is shifted inwards so that it ends at the border, so every pixel is covered
and no padding is needed when the raster is at least one tile large. Overlapping predictions are
blended with weights that ramp up over the overlap (:func:`blend_weights`, linear or cosine); the
ramps of two neighbours are complementary, so the weights sum to one and a function that returns its
input comes back unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
from rasterio.windows import Window

from .io import PathLike, _check_bands, _open

BlendKind = Literal["linear", "cosine", "none"]


# --------------------------------------------------------------------------------------------------
def _check_tiling(tile_size: int, overlap: int) -> None:
    if int(tile_size) != tile_size or tile_size <= 0:
        raise ValueError(f"tile_size must be a positive integer, got {tile_size}")
    if int(overlap) != overlap or not 0 <= overlap < tile_size:
        raise ValueError(f"overlap must be an integer in [0, tile_size), got {overlap}")


def tile_offsets(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles along one axis of ``length`` pixels.

    Steps of ``tile_size - overlap``; the last tile is shifted inwards to end at ``length`` (so it may
    overlap its neighbour by more than ``overlap``). ``length <= tile_size`` gives ``[0]``.

    Example:
        >>> tile_offsets(10, 4, 1)
        [0, 3, 6]
        >>> tile_offsets(11, 4, 1)
        [0, 3, 6, 7]
    """
    _check_tiling(tile_size, overlap)
    if length <= 0:
        raise ValueError(f"length must be positive, got {length}")
    if length <= tile_size:
        return [0]
    stride = tile_size - overlap
    return list(range(0, length - tile_size, stride)) + [length - tile_size]


def tile_windows(height: int, width: int, tile_size: int, overlap: int) -> list[Window]:
    """Windows of ``tile_size`` x ``tile_size`` with ``overlap`` that cover every pixel, row by row.

    The last window of each row and column is shifted inwards to end at the border, so no window
    sticks out of the raster and no padding is needed when the raster is at least one tile large. A
    dimension smaller than the tile gives windows of that dimension's size.

    Example:
        >>> [(w.row_off, w.col_off, w.height, w.width) for w in tile_windows(5, 7, 4, 1)]
        [(0, 0, 4, 4), (0, 3, 4, 4), (1, 0, 4, 4), (1, 3, 4, 4)]
    """
    rows = tile_offsets(height, tile_size, overlap)
    cols = tile_offsets(width, tile_size, overlap)
    th, tw = min(tile_size, height), min(tile_size, width)
    return [Window(c, r, tw, th) for r in rows for c in cols]


def _ramp(n: int, kind: str) -> np.ndarray:
    """``n`` weights rising strictly inside (0, 1): ``x_i = (i + 1) / (n + 1)``."""
    x = np.arange(1, n + 1, dtype=np.float64) / (n + 1)
    if kind == "linear":
        return x
    if kind == "cosine":
        return 0.5 - 0.5 * np.cos(np.pi * x)
    raise ValueError(f"unknown blend kind {kind!r}; choose 'linear', 'cosine' or 'none'")


def _weights_1d(length: int, before: int, after: int, kind: str) -> np.ndarray:
    """Weights of one tile along one axis: ramps over ``before`` leading and ``after`` trailing pixels.

    The ramp of ``n`` pixels is ``f((i + 1) / (n + 1))`` rising and its mirror image falling, with
    ``f(x) = x`` (linear) or ``(1 - cos(pi x)) / 2`` (cosine). Because ``f(x) + f(1 - x) = 1``, the
    falling ramp of one tile and the rising ramp of its neighbour over the same ``n`` pixels sum to
    exactly one. Where both ramps of one tile meet, the smaller weight is used. All weights are > 0.
    """
    w = np.ones(length, dtype=np.float64)
    if kind == "none":
        return w
    if before > 0:
        w[:before] = np.minimum(w[:before], _ramp(before, kind))
    if after > 0:
        w[length - after :] = np.minimum(w[length - after :], _ramp(after, kind)[::-1])
    return w


def blend_weights(tile_size: int, overlap: int, kind: BlendKind = "cosine") -> np.ndarray:
    """``(tile_size, tile_size)`` float32 blending window, strictly positive everywhere.

    Over the first and last ``overlap`` pixels of each axis the weight ramps with
    ``f((i + 1) / (overlap + 1))``, ``f(x) = x`` (``"linear"``) or ``(1 - cos(pi x)) / 2``
    (``"cosine"``); elsewhere it is 1; the 2-D window is the outer product of the 1-D ones.
    ``"none"`` is all ones (plain averaging). The falling ramp of one tile and the rising ramp of the
    next sum to one over an overlap of ``overlap`` pixels, so a function that returns its input is
    reproduced exactly; no weight is zero, so a pixel covered by a single tile still gets weight.

    Example:
        >>> blend_weights(4, 1, "linear")[0].tolist()
        [0.25, 0.5, 0.5, 0.25]
        >>> [round(float(v), 3) for v in blend_weights(6, 2, "linear")[2]]
        [0.333, 0.667, 1.0, 1.0, 0.667, 0.333]
    """
    _check_tiling(tile_size, overlap)
    w = _weights_1d(tile_size, overlap, overlap, kind)
    return np.outer(w, w).astype(np.float32)


def _axis_weights(
    offsets: Sequence[int], length: int, tile_size: int, kind: str
) -> list[np.ndarray]:
    """1-D weights of each tile along an axis, using each tile's actual overlap with its neighbours.

    A tile ramps only towards a neighbour (never at the raster border), and over exactly the pixels it
    shares with it, so consecutive tiles' weights sum to one also where the shifted last tile overlaps
    more than ``overlap``. Cropped to the part of the tile inside the raster.
    """
    span = min(tile_size, length)
    out = []
    for i, start in enumerate(offsets):
        before = offsets[i - 1] + span - start if i > 0 else 0
        after = start + span - offsets[i + 1] if i + 1 < len(offsets) else 0
        out.append(_weights_1d(span, max(before, 0), max(after, 0), kind))
    return out


# --------------------------------------------------------------------------------------------------
# the row-streaming predictor shared by the file and the in-memory versions
# --------------------------------------------------------------------------------------------------
def _pad_reflect(block: np.ndarray, tile_size: int) -> np.ndarray:
    """Pad the last two axes at their end by reflection up to ``tile_size`` where they are smaller."""
    pad_h = max(0, tile_size - block.shape[-2])
    pad_w = max(0, tile_size - block.shape[-1])
    if pad_h == 0 and pad_w == 0:
        return block
    return np.pad(block, ((0, 0), (0, pad_h), (0, pad_w)), mode="reflect")


def iter_tiles(
    path: PathLike, tile_size: int, overlap: int, bands: Sequence[int] | None = None
) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield ``(window, (C, h, w) array)`` for each window of :func:`tile_windows` over a file.

    Example:
        >>> for window, tile in iter_tiles("stack.tif", 256, 32):  # doctest: +SKIP
        ...     check_not_all_nodata(tile, -9999, f"stack.tif {window}")
    """
    with _open(path) as src:
        band_list = _check_bands(bands, src.count, path)
        for window in tile_windows(src.height, src.width, tile_size, overlap):
            yield window, src.read(band_list, window=window)
