"""Sliding-window prediction: a GeoTIFF (or an array) streamed through a model tile row by tile row.

:func:`sliding_window_predict` streams a GeoTIFF through a prediction function a few tile rows at a
time (``N`` tiles per call for a batched function), writing the blended output strip by strip, so
memory stays flat with the scene size;
:func:`predict_array_tiled` does the same for an in-memory array. The nodata mask of the input (NaN
included) is carried to the output.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from rasterio.windows import Window

from eo_common.io import atomic_temp_path

from .batching import BatchSize, is_batched, resolve_batch_size
from .io import (
    PathLike,
    RasterError,
    _check_bands,
    _fits_dtype,
    _geotiff_profile,
    _open,
    missing_mask,
)
from .tiles import (
    BlendKind,
    _axis_weights,
    _check_tiling,
    _pad_reflect,
    padded_tile_size,
    tile_spans,
)

# rows per strip of the output of sliding_window_predict (see _StripWriter)
_OUTPUT_ROWS_PER_STRIP = 16
# GDAL block cache while streaming: one block row of a wide source fits (an 8192 px wide, 4-band
# uint16 source with 256 px blocks decodes to 16 MiB per block row); GDAL's default (5 % of the RAM)
# let the resident memory grow with the raster width (660 MiB at 8192^2 vs 313 MiB capped, measured)
_GDAL_CACHE_BYTES = 64 * 2**20


def _row_groups(n_rows: int, n_cols: int, batch: int, stretch: int = 0) -> list[tuple[int, int]]:
    """Consecutive tile rows processed together: enough rows for ``batch`` tiles, at least one.

    Square tiles: ``batch // n_cols`` rows (at most ``batch`` tiles). Stretched layout: the tiles of
    a row have two shapes (the last one is wider) and a call takes one shape, so the group holds
    enough rows for ``batch`` tiles of the common shape (``ceil(batch / (n_cols - 1))`` rows).
    """
    if stretch and n_cols > 1:
        per_group = max(1, -(-batch // (n_cols - 1)))
    else:
        per_group = max(1, batch // max(n_cols, 1))
    return [(g, min(g + per_group, n_rows)) for g in range(0, n_rows, per_group)]


def _stream_rows(
    read_rows: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    emit: Callable[[int, np.ndarray, np.ndarray | None], None],
    height: int,
    width: int,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    out_bands: int,
    tile_size: int,
    overlap: int,
    blend: str,
    progress: bool,
    desc: str,
    batch_size: BatchSize = 1,
    batched: bool | None = None,
    device: Any = None,
    stretch: int = 0,
) -> None:
    """Run ``predict_fn`` over all tiles, a group of tile rows at a time, emitting finished rows.

    ``read_rows(row_off, n)`` returns ``(data (C, n, width) float32, missing (n, width) bool | None)``.
    ``emit(row_off, values (out_bands, n, width) float64, missing (n, width) | None)`` receives each
    block of finished rows once, top to bottom.

    Tiles follow :func:`~eo_common.raster.tiles.tile_spans` (``stretch``: the last row and column
    stretched to the border). Tiles are predicted ``N`` at a time (``N`` =
    :func:`resolve_batch_size` of ``batch_size``): a group is ``max(1, N // tiles_per_row)``
    consecutive tile rows, read as one window, and its tiles go through ``predict_fn`` in chunks of
    one shape, at most ``N`` tiles of ``tile_size`` squared or as many larger (stretched) tiles as
    cover the same area, at least one, so a call needs about the memory of ``N`` regular tiles
    (a stretched layout has up to four shapes; a per-tile function is called once per tile). Memory: the group's rows ``(C, span, width)``, its predictions, one
    accumulator ``(out_bands, span, width)`` and one weight buffer ``(span, width)`` (``span`` about
    ``N / tiles_per_row`` tile rows, so the buffers hold about ``N`` tiles' worth whatever the raster
    height), reused for every group; the rows shared with the next group are shifted to the top.
    Weighted sums are accumulated in float64 in row-major tile order for every ``N``, so the output
    does not depend on ``N``.
    """
    from tqdm.auto import tqdm

    _check_tiling(tile_size, overlap)
    if out_bands <= 0:
        raise ValueError(f"out_bands must be positive, got {out_bands}")
    if blend not in ("linear", "cosine", "none"):
        raise ValueError(f"unknown blend kind {blend!r}; choose 'linear', 'cosine' or 'none'")
    takes_batch = is_batched(predict_fn, batched)
    rows = tile_spans(height, tile_size, overlap, stretch)
    cols = tile_spans(width, tile_size, overlap, stretch)
    row_w, col_w = _axis_weights(rows, blend), _axis_weights(cols, blend)
    row_pad = [padded_tile_size(n, tile_size, stretch) for _, n in rows]
    col_pad = [padded_tile_size(n, tile_size, stretch) for _, n in cols]
    sample = None
    if batch_size == "auto" and takes_batch:
        first, _ = read_rows(0, rows[0][1])  # the first tile is a regular one
        sample = _pad_reflect(first[:, :, : cols[0][1]], row_pad[0], col_pad[0])
    n_batch = resolve_batch_size(batch_size, predict_fn, sample, batched=takes_batch, device=device)
    groups = _row_groups(len(rows), len(cols), n_batch, stretch)
    span_max = max(rows[g1 - 1][0] + rows[g1 - 1][1] - rows[g0][0] for g0, g1 in groups)

    def run(tiles: np.ndarray) -> np.ndarray:
        expected = (len(tiles), out_bands, *tiles.shape[2:])
        if takes_batch:
            pred = np.asarray(predict_fn(tiles))
        else:
            pred = np.stack([np.asarray(predict_fn(t)) for t in tiles])
        if pred.shape != expected:
            got = pred.shape if takes_batch else pred.shape[1:]
            want = expected if takes_batch else expected[1:]
            raise ValueError(
                f"predict_fn returned shape {got} for "
                f"{'a batch' if takes_batch else 'a tile'} of shape "
                f"{tiles.shape if takes_batch else tiles.shape[1:]}; expected {want}"
            )
        return pred

    acc = np.zeros((out_bands, span_max, width), dtype=np.float64)
    wsum = np.zeros((span_max, width), dtype=np.float64)
    bar = tqdm(total=len(rows) * len(cols), desc=desc, unit="tile", disable=not progress)
    try:
        for gi, (g0, g1) in enumerate(groups):
            top = rows[g0][0]
            span = rows[g1 - 1][0] + rows[g1 - 1][1] - top
            data, missing = read_rows(top, span)
            by_shape: dict[tuple[int, int], list[tuple[int, int]]] = {}  # tiles to predict
            todo = []
            for ri in range(g0, g1):
                local, rh = rows[ri][0] - top, rows[ri][1]
                for ci, (c0, cw) in enumerate(cols):
                    if missing is not None and missing[local : local + rh, c0 : c0 + cw].all():
                        bar.update(1)
                        continue  # every pixel of this tile is written as nodata anyway
                    todo.append((ri, ci))
                    by_shape.setdefault((row_pad[ri], col_pad[ci]), []).append((ri, ci))
            preds: dict[tuple[int, int], np.ndarray] = {}
            for (ph, pw), items in sorted(by_shape.items()):
                per_call = max(1, n_batch * tile_size * tile_size // (ph * pw))
                for k in range(0, len(items), per_call):
                    chunk = items[k : k + per_call]
                    tiles = np.empty((len(chunk), data.shape[0], ph, pw), np.float32)
                    for j, (ri, ci) in enumerate(chunk):
                        (r0, rh), (c0, cw) = rows[ri], cols[ci]
                        block = data[:, r0 - top : r0 - top + rh, c0 : c0 + cw]
                        tiles[j] = _pad_reflect(block, ph, pw)
                    pred = run(tiles)
                    for j, key in enumerate(chunk):
                        preds[key] = pred[j]
                    bar.update(len(chunk))
            for ri, ci in todo:  # row-major: the same sums in the same order for every N
                (r0, rh), (c0, cw) = rows[ri], cols[ci]
                local = r0 - top
                weight = np.outer(row_w[ri], col_w[ci])
                acc[:, local : local + rh, c0 : c0 + cw] += (
                    preds.pop((ri, ci))[:, :rh, :cw] * weight
                )
                wsum[local : local + rh, c0 : c0 + cw] += weight
            last = gi + 1 == len(groups)
            done = span if last else rows[g1][0] - top
            values = acc[:, :done]  # divided in place: these rows are emitted, then overwritten
            with np.errstate(invalid="ignore", divide="ignore"):
                np.divide(values, wsum[:done], out=values)
            emit(top, values, None if missing is None else missing[:done])
            if not last:
                keep = span - done
                acc[:, :keep] = acc[:, done:span]
                acc[:, keep:] = 0.0
                wsum[:keep] = wsum[done:span]
                wsum[keep:] = 0.0
    finally:
        bar.close()


def predict_array_tiled(
    array: np.ndarray,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    out_bands: int,
    tile_size: int,
    overlap: int,
    blend: BlendKind = "cosine",
    progress: bool = False,
    batch_size: BatchSize = 1,
    batched: bool | None = None,
    device: Any = None,
    stretch: int = 0,
) -> np.ndarray:
    """Apply ``predict_fn`` tile by tile to an in-memory ``(C, H, W)`` array and blend the tiles.

    Same tiling (``stretch`` included), blending, batching and small-raster padding as
    :func:`sliding_window_predict`.

    Args:
        array: ``(C, H, W)`` input (converted to float32 for ``predict_fn``).
        predict_fn: ``(C, t, t) float32 -> (out_bands, t, t)`` with ``t = tile_size``, or with
            ``batched`` ``(B, C, t, t) -> (B, out_bands, t, t)``.
        out_bands: number of output bands.
        tile_size, overlap: see :func:`tile_windows`.
        blend: ``"cosine"``, ``"linear"`` or ``"none"`` (see :func:`blend_weights`).
        batch_size, batched, device, stretch: see :func:`sliding_window_predict`.

    Returns:
        ``(out_bands, H, W)`` float32.

    Example:
        >>> x = np.random.rand(2, 50, 70).astype(np.float32)
        >>> y = predict_array_tiled(x, lambda t: t.sum(0, keepdims=True), out_bands=1,
        ...                         tile_size=32, overlap=8)
        >>> bool(np.allclose(y, x.sum(0, keepdims=True), atol=1e-5))
        True
    """
    array = np.asarray(array)
    if array.ndim != 3 or 0 in array.shape:
        raise ValueError(f"array must have shape (C, H, W), got {array.shape}")
    _, height, width = array.shape
    out = np.empty((out_bands, height, width), dtype=np.float32)

    def read_rows(r0: int, n: int) -> tuple[np.ndarray, None]:
        return array[:, r0 : r0 + n].astype(np.float32, copy=False), None

    def emit(r0: int, values: np.ndarray, missing: np.ndarray | None) -> None:
        out[:, r0 : r0 + values.shape[1]] = values

    _stream_rows(
        read_rows,
        emit,
        height,
        width,
        predict_fn,
        out_bands=out_bands,
        tile_size=tile_size,
        overlap=overlap,
        blend=blend,
        progress=progress,
        desc="tiles",
        batch_size=batch_size,
        batched=batched,
        device=device,
        stretch=stretch,
    )
    return out


class _StripWriter:
    """Writes finished rows to a strip GeoTIFF so that every strip is written exactly once, whole.

    GDAL accepts writes that cover part of a strip (it completes the strip in its block cache), but
    whole-strip writes make each compressed strip written exactly once whatever the cache size, at the
    cost of buffering at most ``rows_per_strip - 1`` rows. The file ends up byte-for-byte as large as
    a one-shot write of the same pixels (tested).
    """

    def __init__(self, dst: rasterio.io.DatasetWriter, rows_per_strip: int):
        self.dst = dst
        self.rows = rows_per_strip
        self.pending: np.ndarray | None = None  # rows [pending_start, next_row)
        self.pending_start = 0
        self.next_row = 0

    def write(self, r0: int, block: np.ndarray) -> None:
        assert r0 == self.next_row, "rows must arrive in order"
        n = block.shape[1]
        self.next_row = r0 + n
        if self.pending is not None:
            need = self.rows - self.pending.shape[1]
            head = block[:, :need]
            self.pending = np.concatenate([self.pending, head], axis=1)
            block = block[:, need:]
            if self.pending.shape[1] < self.rows:
                return
            self._put(self.pending_start, self.pending)
            self.pending = None
            r0 = self.pending_start + self.rows
        whole = (block.shape[1] // self.rows) * self.rows
        if whole:
            self._put(r0, block[:, :whole])
        if block.shape[1] > whole:
            self.pending = block[:, whole:].copy()
            self.pending_start = r0 + whole

    def close(self) -> None:
        if self.pending is not None:
            self._put(self.pending_start, self.pending)
            self.pending = None

    def _put(self, r0: int, block: np.ndarray) -> None:
        self.dst.write(block, window=Window(0, r0, block.shape[2], block.shape[1]))


def _to_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast blended float values; integer outputs are rounded and clipped to the dtype's range."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        values = np.clip(np.rint(np.nan_to_num(values, nan=0.0)), info.min, info.max)
    return values.astype(dtype)


def sliding_window_predict(
    src_path: PathLike,
    out_path: PathLike,
    predict_fn: Callable[[np.ndarray], np.ndarray],
    *,
    out_bands: int,
    tile_size: int,
    overlap: int,
    blend: BlendKind = "cosine",
    out_dtype: Any = "float32",
    bands: Sequence[int] | None = None,
    nodata: float | None = None,
    progress: bool = True,
    batch_size: BatchSize = 1,
    batched: bool | None = None,
    device: Any = None,
    band_names: Sequence[str] | None = None,
    stretch: int = 0,
) -> Path:
    """Run ``predict_fn`` over a GeoTIFF of any size with bounded memory; write a blended GeoTIFF.

    The source is read one group of tile rows at a time (a window of the full width); the group's
    tiles go through ``predict_fn`` ``N`` at a time (``batch_size``: ``N`` tiles per call when
    ``predict_fn`` takes a batch, see below); weighted predictions and weights are accumulated in a
    buffer of ``(out_bands, span, width)`` plus ``(span, width)``. Rows that no later tile touches are
    divided by their weight sum and written (windowed writes); the rows shared with the next group
    move to the top of the buffer. A group is ``max(1, N // tiles_per_row)`` tile rows, so ``span`` is
    one tile row (``tile_size``) when a tile row holds ``N`` tiles or more. Memory therefore grows with
    the width and ``N`` but not with the height, and the whole raster is never in memory: about
    ``span * width * (C * 8 + out_bands * 16 + 8)`` bytes for float32 input, plus ``N`` tiles and
    GDAL's block cache, capped at 64 MiB while the function runs.
    The output is the same for every ``N`` (same tiles, same weights, same float64 sums).

    Tiles follow :func:`tile_windows`; overlapping predictions are blended with complementary ramps
    (see :func:`blend_weights`) over each tile's actual overlap with its neighbours, so an identity
    ``predict_fn`` reproduces the input. A raster smaller than one tile (in either direction) is padded
    by reflection to the tile size and the prediction cropped back.

    Layout: by default every tile is ``tile_size`` square and the last one of each row and column
    is shifted inwards to end at the border, overlapping its neighbour by more than ``overlap``
    (at 1024 px, 256 px tiles with 32 px overlap: 5 tiles, 1280 px computed per 1024). With
    ``stretch=k`` (for a fully convolutional ``predict_fn`` that takes any size divisible by ``k``)
    the last tile of each row and column instead stretches to the border (at most ``2 * tile_size -
    overlap``), is padded by reflection to a multiple of ``k`` and cropped back: 4 tiles, 1120 px
    per 1024, i.e. 1.20x the raster's pixels instead of 1.56x (see :func:`tile_spans`).

    Nodata: a source pixel is missing when any of its bands (of ``bands``) equals the source's nodata
    value or is NaN; it is written as the output nodata. Missing pixels are passed to ``predict_fn``
    unchanged (replace them inside ``predict_fn`` if the model needs finite input); tiles that are
    entirely missing are not predicted at all. Integer outputs are rounded and clipped to the dtype.

    Args:
        src_path: input GeoTIFF.
        out_path: output GeoTIFF (same CRS and transform, ``out_bands`` bands, DEFLATE level 1 with a
            predictor, strips of 16 rows); written to a temporary file and renamed when complete.
        predict_fn: ``(C, t, t) float32 -> (out_bands, t, t)`` with ``t = tile_size`` (with
            ``stretch``: ``(C, h, w) -> (out_bands, h, w)``, see below) (numpy, or
            anything :func:`numpy.asarray` accepts, e.g. a CPU tensor); or, when ``batched`` (or
            ``predict_fn.batched`` is True), ``(B, C, t, t) -> (B, out_bands, t, t)`` with
            ``B <= N`` (e.g. :func:`eo_common.raster.batching.torch_batch_predictor`).
        out_bands: number of output bands.
        tile_size, overlap: tile side and overlap in pixels (``0 <= overlap < tile_size``).
        blend: ``"cosine"``, ``"linear"`` or ``"none"``.
        out_dtype: output dtype.
        bands: 1-based source bands to feed ``predict_fn`` (None: all).
        nodata: output nodata value; None uses the source's nodata value. A float output of a source
            without nodata marks NaN source pixels with NaN.
        progress: show a tqdm progress bar over tiles.
        batch_size: tiles per ``predict_fn`` call ``N`` (a batched ``predict_fn`` only; a per-tile
            one is called once per tile; a stretched tile counts by its area, so a call of those
            holds fewer), or ``"auto"``: from the free GPU memory on a CUDA
            ``device``, :data:`~eo_common.raster.batching.AUTO_CPU_BATCH` on the CPU
            (:func:`~eo_common.raster.batching.resolve_batch_size`).
        batched: whether ``predict_fn`` takes a batch; None reads ``predict_fn.batched`` (default
            False: one tile per call, as before).
        device: where ``predict_fn`` computes, for ``batch_size="auto"`` (None: CUDA if available).
        band_names: one description per output band (shown by QGIS and ``gdalinfo``, kept by
            :func:`~eo_common.raster.finalize_geotiff`); None leaves the bands undescribed.
        stretch: 0 for square tiles only; ``k > 0`` stretches the last tile of each row and column
            to the border, its sides padded to multiples of ``k`` (``predict_fn`` then gets tiles of
            up to four shapes, each side a multiple of ``k`` between ``tile_size`` and ``2 *
            tile_size - overlap + k``).

    Returns:
        ``Path(out_path)``.

    Raises:
        RasterError: the source is missing or unreadable, or the output nodata does not fit
            ``out_dtype``, or an integer output has missing pixels but no nodata value.
        ValueError: bad tiling arguments, a ``predict_fn`` output of the wrong shape, or
            ``band_names`` of another length than ``out_bands``.

    Example:
        >>> def ndvi(t):  # bands 4 (red), 8 (NIR) of a 2-band input
        ...     return ((t[1] - t[0]) / (t[1] + t[0] + 1e-6))[None]
        >>> sliding_window_predict("s2_red_nir.tif", "ndvi.tif", ndvi, out_bands=1,
        ...                        tile_size=256, overlap=32, band_names=["NDVI"])  # doctest: +SKIP
    """
    src_path, out_path = Path(src_path), Path(out_path)
    out_dtype = np.dtype(out_dtype)
    if band_names is not None and len(band_names) != out_bands:
        raise ValueError(
            f"band_names has {len(band_names)} names for {out_bands} output bands: {list(band_names)}"
        )
    with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES), _open(src_path) as src:
        band_list = _check_bands(bands, src.count, src_path)
        height, width = src.height, src.width
        src_nodata = src.nodata
        out_nodata = nodata if nodata is not None else src_nodata
        if out_nodata is not None and not _fits_dtype(float(out_nodata), out_dtype):
            raise RasterError(
                f"output nodata {out_nodata} does not fit out_dtype {out_dtype.name}; pass nodata=",
                out_path,
            )
        fill_value = out_nodata
        if fill_value is None and out_dtype.kind == "f":
            fill_value = float("nan")
        profile = _geotiff_profile(
            out_bands,
            height,
            width,
            out_dtype,
            src.crs,
            src.transform,
            out_nodata,
            "deflate",
            tiled=False,
            blocksize=256,
            rows_per_strip=_OUTPUT_ROWS_PER_STRIP,
            zlevel=1,  # fast DEFLATE: level 6 doubles the time for ~2 % smaller files
        )

        def read_rows(r0: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
            raw = src.read(band_list, window=Window(0, r0, width, n))
            missing = missing_mask(raw, src_nodata, "any")
            return raw.astype(np.float32, copy=False), missing

        tmp = atomic_temp_path(out_path)
        try:
            with rasterio.open(tmp, "w", **profile) as dst:
                if band_names is not None:
                    dst.descriptions = tuple(str(n) for n in band_names)
                writer = _StripWriter(dst, profile.get("blockysize", _OUTPUT_ROWS_PER_STRIP))

                def emit(r0: int, values: np.ndarray, missing: np.ndarray | None) -> None:
                    block = _to_dtype(values, out_dtype)
                    if missing is not None and missing.any():
                        if fill_value is None:
                            raise RasterError(
                                f"rows {r0}..{r0 + values.shape[1]} have missing pixels but the "
                                f"{out_dtype.name} output has no nodata value; pass nodata=",
                                src_path,
                            )
                        block[:, missing] = fill_value
                    writer.write(r0, block)

                _stream_rows(
                    read_rows,
                    emit,
                    height,
                    width,
                    predict_fn,
                    out_bands=out_bands,
                    tile_size=tile_size,
                    overlap=overlap,
                    blend=blend,
                    progress=progress,
                    desc=f"predict {src_path.name}",
                    batch_size=batch_size,
                    batched=batched,
                    device=device,
                    stretch=stretch,
                )
                writer.close()
            os.replace(tmp, out_path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return out_path
