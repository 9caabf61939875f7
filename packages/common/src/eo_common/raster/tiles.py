"""Tile layouts and blend weights: every pixel covered, overlapping predictions blended to one.

:func:`tile_windows` lays tiles of ``tile_size`` with ``overlap`` pixels between neighbours; the last
tile of each row and column is shifted inwards so that it ends at the border, so every pixel is covered
and no padding is needed when the raster is at least one tile large. With ``stretch`` (for fully
convolutional models) the last tile of each row and column stretches to the border instead
(:func:`tile_spans`), which computes fewer pixels twice. Overlapping predictions are blended with
weights that ramp up over the overlap (:func:`blend_weights`, linear or cosine); the ramps of two
neighbours are complementary, so the weights sum to one and a function that returns its input comes
back unchanged.
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


def tile_spans(
    length: int, tile_size: int, overlap: int, stretch: int = 0
) -> list[tuple[int, int]]:
    """``(start, size)`` of the tiles along one axis of ``length`` pixels.

    ``stretch=0``: the tiles of :func:`tile_offsets`, each ``min(tile_size, length)`` long (the last
    one shifted inwards). ``stretch > 0``: the same steps of ``tile_size - overlap``, but instead of
    adding a shifted tile at the end, the last regular tile stretches to the border (``tile_size <
    size <= 2 * tile_size - overlap``) and keeps an overlap of exactly ``overlap`` with its
    neighbour, so fewer pixels are computed twice (at 1024 px with 256 px tiles and 32 px overlap: 4
    tiles covering 1120 px instead of 5 covering 1280); such a tile is padded to a multiple of
    ``stretch`` before the model sees it (:func:`padded_tile_size`).

    Example:
        >>> tile_spans(1024, 256, 32)
        [(0, 256), (224, 256), (448, 256), (672, 256), (768, 256)]
        >>> tile_spans(1024, 256, 32, stretch=32)
        [(0, 256), (224, 256), (448, 256), (672, 352)]
        >>> tile_spans(200, 256, 32, stretch=32)
        [(0, 200)]
    """
    if int(stretch) != stretch or stretch < 0:
        raise ValueError(f"stretch must be a non-negative integer, got {stretch}")
    offsets = tile_offsets(length, tile_size, overlap)
    if not stretch or len(offsets) == 1:
        return [(o, min(tile_size, length)) for o in offsets]
    regular = offsets[:-1]  # the shifted last tile is dropped; the last regular one stretches
    return [(o, tile_size) for o in regular[:-1]] + [(regular[-1], length - regular[-1])]


def padded_tile_size(size: int, tile_size: int, stretch: int = 0) -> int:
    """Side of the array the model gets for a tile of ``size`` pixels: ``tile_size`` for every tile
    of the fixed layout (a raster smaller than a tile is padded up to it), and for a stretched tile
    its size rounded up to a multiple of ``stretch``.

    Example:
        >>> padded_tile_size(200, 256), padded_tile_size(340, 256, stretch=32)
        (256, 352)
    """
    if not stretch:
        return tile_size
    return max(tile_size, -(-size // stretch) * stretch)


def tile_windows(
    height: int, width: int, tile_size: int, overlap: int, stretch: int = 0
) -> list[Window]:
    """Windows that cover every pixel with ``overlap`` between neighbours, row by row.

    With ``stretch=0`` every window is ``tile_size`` x ``tile_size``: the last window of each row and
    column is shifted inwards to end at the border, so no window sticks out of the raster and no
    padding is needed when the raster is at least one tile large. A dimension smaller than the tile
    gives windows of that dimension's size. ``stretch > 0``: the last row and column of windows
    stretch to the border instead (see :func:`tile_spans`).

    Example:
        >>> [(w.row_off, w.col_off, w.height, w.width) for w in tile_windows(5, 7, 4, 1)]
        [(0, 0, 4, 4), (0, 3, 4, 4), (1, 0, 4, 4), (1, 3, 4, 4)]
        >>> [(w.row_off, w.col_off, w.height, w.width) for w in tile_windows(5, 7, 4, 1, 1)]
        [(0, 0, 5, 7)]
    """
    rows = tile_spans(height, tile_size, overlap, stretch)
    cols = tile_spans(width, tile_size, overlap, stretch)
    return [Window(c, r, cw, rh) for r, rh in rows for c, cw in cols]


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


def _axis_weights(spans: Sequence[tuple[int, int]], kind: str) -> list[np.ndarray]:
    """1-D weights of each tile ``(start, size)`` along an axis, using its actual overlaps.

    A tile ramps only towards a neighbour (never at the raster border), and over exactly the pixels it
    shares with it, so consecutive tiles' weights sum to one also where the shifted last tile overlaps
    more than ``overlap``. Each is ``size`` long (the part of the tile inside the raster).
    """
    out = []
    for i, (start, size) in enumerate(spans):
        before = spans[i - 1][0] + spans[i - 1][1] - start if i > 0 else 0
        after = start + size - spans[i + 1][0] if i + 1 < len(spans) else 0
        out.append(_weights_1d(size, max(before, 0), max(after, 0), kind))
    return out


# --------------------------------------------------------------------------------------------------
# the row-streaming predictor shared by the file and the in-memory versions
# --------------------------------------------------------------------------------------------------
def _pad_reflect(block: np.ndarray, height: int, width: int | None = None) -> np.ndarray:
    """Pad the last two axes at their end by reflection up to ``height`` x ``width`` (default
    ``height`` x ``height``) where they are smaller."""
    pad_h = max(0, height - block.shape[-2])
    pad_w = max(0, (height if width is None else width) - block.shape[-1])
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
