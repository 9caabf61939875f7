"""Dense CRF refinement (pydensecrf2) of class probabilities, tiled, in worker processes.

:func:`dense_crf` runs a fully connected CRF (Kraehenbuehl & Koltun 2011) on one array: unary
``-log p``, a smoothness kernel (``spatial_weight`` px, weight ``compat_spatial``) and an appearance
kernel over position and a 3-band uint8 image (``bilateral_sxy`` px, ``bilateral_srgb`` grey levels,
weight ``compat_bilateral``), ``iterations`` mean-field steps. pydensecrf needs a C-contiguous
float32 unary and a C-contiguous uint8 ``(H, W, 3)`` image; both are made so here.

Label compatibility
    ``compatibility: potts`` (default) charges every label change the same (the usual dense CRF).
    ``compatibility: ordinal`` charges ``weight x |i - j|``, so low next to high costs twice as much as
    either next to medium. Medium pixels often form thin bands between low and high; Potts tends to
    absorb them, the ordinal compatibility keeps them (tested on a toy map) and pushes pixels towards
    medium. Which is better depends on the model (measured on the demo data, docs/benchmarks.md, risk_mapping section):
    for maps that under-predict medium (the averaged softmax/CORAL head) the ordinal CRF raised kappa
    0.50 -> 0.61 where Potts (strong weights) removed medium entirely; for the softmax head, which is
    already calibrated, the ordinal CRF over-predicts medium (kappa 0.63 -> 0.58 on validation) and a
    weak Potts CRF helps slightly (0.63 -> 0.65).

Tiling without seams, with memory bounded by the tile size
    :func:`crf_raster` lays tiles of at most ``tile_size`` with at least ``overlap``, as few as
    :func:`eo_common.raster.tile_offsets` would use but spread evenly and shrunk to fit
    (:func:`balanced_offsets`: no overlap recomputed beyond ``overlap``), and gives each tile a *core*: the part of the tile closer to its centre than to a neighbour's, i.e.
    the cores cut every overlap in the middle and partition the raster. Each worker process reads its
    tile's window of the probability and image rasters itself, runs the CRF on the whole tile and
    returns only the core; the parent writes the cores into the output GeoTIFFs. A core pixel is
    at least ``overlap / 2`` pixels inside its tile, so the CRF saw the same neighbourhood there as an
    untiled CRF (up to the kernels' reach), and every output pixel comes from exactly one tile:
    no blending of labels and no visible seams when ``overlap / 2`` exceeds the kernel widths.
    Memory: one tile per worker plus GDAL's block cache (capped at 64 MB), independent of the raster
    size.

The bilateral image is the stack's ``image_bands`` stretched to 0-255 with one 2-98 % percentile
pair per band computed on a decimated read of the whole raster, so every tile uses the same stretch.

Example:
    >>> probs = np.full((3, 32, 32), 1 / 3, np.float32); probs[2, :, 16:] = 0.5
    >>> image = np.zeros((32, 32, 3), np.uint8)
    >>> dense_crf(probs / probs.sum(0), image, CRFConfig(iterations=2)).shape
    (3, 32, 32)
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from eo_common.io import atomic_temp_path
from eo_common.raster import RasterError, check_same_grid, missing_mask, tile_offsets
from rasterio.enums import Resampling
from rasterio.windows import Window

from risk_mapping.config import IGNORE_INDEX, CRFConfig

__all__ = [
    "dense_crf",
    "core_tiles",
    "balanced_offsets",
    "CoreTile",
    "ImageStretch",
    "image_stretch",
    "stretch_to_uint8",
    "crf_array_tiled",
    "crf_raster",
]

RANK_NODATA = -1.0
_GDAL_CACHE_BYTES = 64 * 2**20


def dense_crf(probs: np.ndarray, image: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """Refine ``(K, H, W)`` class probabilities with a dense CRF; returns ``(K, H, W)`` float32.

    Args:
        probs: ``(K, H, W)`` probabilities (each pixel sums to 1); clipped to ``[1e-8, 1]``.
        image: ``(H, W, 3)`` uint8 guidance image for the appearance kernel.
        cfg: kernel widths, weights and iterations (:class:`risk_mapping.config.CRFConfig`).

    Raises:
        ValueError: shapes disagree or the image is not ``(H, W, 3)`` uint8.
    """
    import pydensecrf.densecrf as dcrf

    probs = np.asarray(probs)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (K, H, W), got {probs.shape}")
    k, h, w = probs.shape
    if image.shape != (h, w, 3) or image.dtype != np.uint8:
        raise ValueError(
            f"image must be uint8 (H, W, 3) = ({h}, {w}, 3), got {image.dtype} {image.shape}"
        )
    unary = -np.log(np.clip(probs, 1e-8, 1.0)).reshape(k, -1)
    unary = np.ascontiguousarray(unary, dtype=np.float32)
    crf = dcrf.DenseCRF2D(w, h, k)
    crf.setUnaryEnergy(unary)
    if cfg.compatibility == "ordinal":
        # label compatibility w |i - j|: confusing low with high costs twice low with medium
        distance = np.abs(np.subtract.outer(np.arange(k), np.arange(k))).astype(np.float32)
        spatial_compat = np.ascontiguousarray(cfg.compat_spatial * distance, dtype=np.float32)
        bilateral_compat = np.ascontiguousarray(cfg.compat_bilateral * distance, dtype=np.float32)
    else:  # Potts: every label change costs the same
        spatial_compat, bilateral_compat = cfg.compat_spatial, cfg.compat_bilateral
    if cfg.compat_spatial > 0:
        crf.addPairwiseGaussian(sxy=cfg.spatial_weight, compat=spatial_compat)
    if cfg.compat_bilateral > 0:
        crf.addPairwiseBilateral(
            sxy=cfg.bilateral_sxy,
            srgb=cfg.bilateral_srgb,
            rgbim=np.ascontiguousarray(image),
            compat=bilateral_compat,
        )
    q = crf.inference(cfg.iterations)
    return np.asarray(q, dtype=np.float32).reshape(k, h, w)


@dataclass(frozen=True)
class CoreTile:
    """A CRF tile: the window it reads and the core it owns (both in raster pixels)."""

    read: Window
    core: Window

    @property
    def core_in_tile(self) -> tuple[slice, slice]:
        r = int(self.core.row_off - self.read.row_off)
        c = int(self.core.col_off - self.read.col_off)
        return slice(r, r + int(self.core.height)), slice(c, c + int(self.core.width))


def balanced_offsets(length: int, tile: int, overlap: int) -> tuple[list[int], int]:
    """Tile starts and the common tile side along one axis: as few tiles as the layout of
    :func:`eo_common.raster.tile_offsets` uses, spread evenly, each as small as the overlap allows.

    ``tile_offsets`` keeps every tile at ``tile`` pixels and shifts the last one inwards, so the last
    overlap can be almost a whole tile (at 2048 px, tiles of 1024 with 128 overlap start at 0, 896,
    1024: the CRF computes 2.25x the pixels of the raster). Here the same number of tiles ``n``
    shrinks to the side ``s = ceil((length + (n - 1) * overlap) / n) <= tile`` and the starts are
    spread evenly, so neighbours overlap by at least ``overlap`` (and by less than ``overlap + n``)
    and the CRF computes ``(n * s / length)**2`` of the pixels (1.27x at 2048 and at 4096 px).

    Example:
        >>> balanced_offsets(2048, 1024, 128)
        ([0, 640, 1280], 768)
    """
    n = len(tile_offsets(length, tile, overlap))
    if n == 1:
        return [0], min(tile, length)
    side = -(-(length + (n - 1) * overlap) // n)
    return [round(i * (length - side) / (n - 1)) for i in range(n)], side


def _cores_1d(length: int, tile: int, overlap: int) -> list[tuple[int, int, int, int]]:
    """``(tile start, tile length, core start, core end)`` along one axis; cores partition the axis."""
    offsets, size = balanced_offsets(length, tile, overlap)
    cuts = (
        [0]
        + [(offsets[i + 1] + offsets[i] + size) // 2 for i in range(len(offsets) - 1)]
        + [length]
    )
    return [(o, size, cuts[i], cuts[i + 1]) for i, o in enumerate(offsets)]


def core_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[CoreTile]:
    """Tiles of :func:`balanced_offsets` in both directions, with cores that cut each overlap in the
    middle (so the cores partition the raster).

    Example:
        >>> [(t.read.col_off, t.core.col_off, t.core.width) for t in core_tiles(8, 20, 8, 4)]
        [(0, 0, 6), (4, 6, 4), (8, 10, 4), (12, 14, 6)]
    """
    rows, cols = _cores_1d(height, tile_size, overlap), _cores_1d(width, tile_size, overlap)
    return [
        CoreTile(Window(c0, r0, cw, rh), Window(cc0, rc0, cc1 - cc0, rc1 - rc0))
        for r0, rh, rc0, rc1 in rows
        for c0, cw, cc0, cc1 in cols
    ]


@dataclass(frozen=True)
class ImageStretch:
    """Per-band ``low``/``high`` values mapped to 0 and 255."""

    low: tuple[float, ...]
    high: tuple[float, ...]


def stretch_to_uint8(bands: np.ndarray, stretch: ImageStretch) -> np.ndarray:
    """``(3, H, W)`` values -> ``(H, W, 3)`` C-contiguous uint8 with a fixed linear stretch."""
    low = np.asarray(stretch.low, np.float32).reshape(-1, 1, 1)
    high = np.asarray(stretch.high, np.float32).reshape(-1, 1, 1)
    scaled = (bands.astype(np.float32) - low) / np.maximum(high - low, 1e-12) * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8).transpose(1, 2, 0))


def image_stretch(
    path: str | os.PathLike, bands: Sequence[int], max_side: int = 1024
) -> ImageStretch:
    """2-98 % percentiles of the 0-based ``bands`` of ``path`` from a decimated read (nodata ignored)."""
    with rasterio.open(path) as src:
        bad = [b for b in bands if not 0 <= b < src.count]
        if bad:
            raise RasterError(
                f"inference.crf.image_bands {list(bands)}: band(s) {bad} not in the file ({src.count} bands)",
                path,
            )
        scale = max(1.0, max(src.height, src.width) / max_side)
        shape = (len(bands), max(1, int(src.height / scale)), max(1, int(src.width / scale)))
        data = src.read(
            [b + 1 for b in bands], out_shape=shape, resampling=Resampling.nearest
        ).astype(np.float64)
        missing = missing_mask(data, src.nodata, "any")
    low, high = [], []
    for band in data:
        values = band[~missing]
        if values.size == 0:
            values = np.zeros(1)
        lo, hi = np.percentile(values, [2, 98])
        low.append(float(lo))
        high.append(float(hi if hi > lo else lo + 1.0))
    return ImageStretch(tuple(low), tuple(high))


# -------------------------------------------------------------------------------- worker processes
_worker_state: dict = {}


def _worker_init(
    probs_path: str,
    stack_path: str,
    bands: tuple[int, ...],
    stretch: ImageStretch,
    cfg: CRFConfig,
    own_env: bool = True,
) -> None:
    """Open the inputs once per worker process (``own_env``: a GDAL environment for the process)."""
    if own_env:  # a pool worker: its GDAL environment lives as long as the process
        rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES).__enter__()
    _worker_state["probs"] = rasterio.open(probs_path)
    _worker_state["stack"] = rasterio.open(stack_path)
    _worker_state["bands"] = [b + 1 for b in bands]
    _worker_state["stretch"] = stretch
    _worker_state["cfg"] = cfg


def _refine_core(tile: CoreTile) -> tuple[CoreTile, np.ndarray, np.ndarray]:
    """Worker: read the tile, run the CRF, return (tile, core class map uint8, core expected rank)."""
    probs_src = _worker_state["probs"]
    raw = probs_src.read(window=tile.read).astype(np.float32)
    missing = missing_mask(raw, probs_src.nodata, "any")
    k = raw.shape[0]
    probs = np.where(missing[None], 1.0 / k, raw)
    probs = probs / np.maximum(probs.sum(0, keepdims=True), 1e-12)
    image = stretch_to_uint8(
        _worker_state["stack"].read(_worker_state["bands"], window=tile.read),
        _worker_state["stretch"],
    )
    q = dense_crf(probs, image, _worker_state["cfg"])
    rs, cs = tile.core_in_tile
    q_core, miss_core = q[:, rs, cs], missing[rs, cs]
    labels = np.argmax(q_core, axis=0).astype(np.uint8)
    labels[miss_core] = IGNORE_INDEX
    rank = (q_core * np.arange(k, dtype=np.float32).reshape(-1, 1, 1)).sum(0)
    rank[miss_core] = RANK_NODATA
    return tile, labels, rank.astype(np.float32)


def _serial_map(tiles: Sequence[CoreTile]) -> Iterator[tuple[CoreTile, np.ndarray, np.ndarray]]:
    for t in tiles:
        yield _refine_core(t)


def crf_raster(
    probs_path: str | os.PathLike,
    stack_path: str | os.PathLike,
    out_class_path: str | os.PathLike,
    out_rank_path: str | os.PathLike | None,
    cfg: CRFConfig,
    *,
    progress: bool = True,
) -> Path:
    """Tiled dense CRF over a probability GeoTIFF; writes the refined class map (and expected rank).

    Args:
        probs_path: ``(K, H, W)`` float probabilities GeoTIFF (nodata/NaN pixels are left out).
        stack_path: the input stack on the same grid; ``cfg.image_bands`` (0-based) guide the CRF.
        out_class_path: uint8 class map, 255 = nodata; same CRS/transform as ``probs_path``.
        out_rank_path: float32 expected rank ``sum_k k Q_k`` (nodata -1), or None.
        cfg: CRF parameters, ``tile_size``, ``overlap`` and ``workers`` (processes).

    Returns:
        ``Path(out_class_path)``.
    """
    from tqdm.auto import tqdm

    probs_path, stack_path = Path(probs_path), Path(stack_path)
    check_same_grid([probs_path, stack_path])
    stretch = image_stretch(stack_path, cfg.image_bands)
    with rasterio.open(probs_path) as src:
        height, width, crs, transform = src.height, src.width, src.crs, src.transform
    tiles = core_tiles(height, width, cfg.tile_size, cfg.overlap)
    outputs = [(Path(out_class_path), "uint8", IGNORE_INDEX)]
    if out_rank_path is not None:
        outputs.append((Path(out_rank_path), "float32", RANK_NODATA))
    temps = [atomic_temp_path(p) for p, _, _ in outputs]
    block = 256 if height >= 256 and width >= 256 else None
    init_args = (str(probs_path), str(stack_path), tuple(cfg.image_bands), stretch, cfg)
    pool = None
    try:
        with rasterio.Env(GDAL_CACHEMAX=_GDAL_CACHE_BYTES):
            dsts = []
            for tmp, (_, dtype, nodata) in zip(temps, outputs):
                profile = dict(
                    driver="GTiff",
                    height=height,
                    width=width,
                    count=1,
                    dtype=dtype,
                    crs=crs,
                    transform=transform,
                    nodata=nodata,
                    BIGTIFF="IF_SAFER",
                )
                if block:
                    profile.update(tiled=True, blockxsize=block, blockysize=block)
                dsts.append(rasterio.open(tmp, "w", **profile))
            try:
                if cfg.workers > 1 and len(tiles) > 1:
                    ctx = mp.get_context(
                        "fork" if "fork" in mp.get_all_start_methods() else "spawn"
                    )
                    pool = ctx.Pool(
                        min(cfg.workers, len(tiles)), initializer=_worker_init, initargs=init_args
                    )
                    results = pool.imap(_refine_core, tiles, chunksize=1)
                else:
                    _worker_init(*init_args, own_env=False)
                    results = _serial_map(tiles)
                for tile, labels, rank in tqdm(
                    results, total=len(tiles), desc="dense CRF", unit="tile", disable=not progress
                ):
                    dsts[0].write(labels[None], window=tile.core)
                    if len(dsts) > 1:
                        dsts[1].write(rank[None], window=tile.core)
            finally:
                for d in dsts:
                    d.close()
        for tmp, (final, _, _) in zip(temps, outputs):
            os.replace(tmp, final)
    except BaseException:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        _close_worker_state()
    return Path(out_class_path)


def _close_worker_state() -> None:
    for key in ("probs", "stack"):
        ds = _worker_state.pop(key, None)
        if ds is not None:
            ds.close()
    _worker_state.clear()


def crf_array_tiled(probs: np.ndarray, image: np.ndarray, cfg: CRFConfig) -> np.ndarray:
    """In-memory version of the tiled CRF (same cores, serial): ``(K, H, W)`` -> refined ``(K, H, W)``.

    Used by tests to compare tiled and untiled results on small arrays.
    """
    k, h, w = probs.shape
    out = np.empty_like(probs, dtype=np.float32)
    for tile in core_tiles(h, w, cfg.tile_size, cfg.overlap):
        r0, c0 = int(tile.read.row_off), int(tile.read.col_off)
        rh, cw = int(tile.read.height), int(tile.read.width)
        q = dense_crf(
            np.ascontiguousarray(probs[:, r0 : r0 + rh, c0 : c0 + cw]),
            np.ascontiguousarray(image[r0 : r0 + rh, c0 : c0 + cw]),
            cfg,
        )
        rs, cs = tile.core_in_tile
        co_r, co_c = int(tile.core.row_off), int(tile.core.col_off)
        out[:, co_r : co_r + int(tile.core.height), co_c : co_c + int(tile.core.width)] = q[
            :, rs, cs
        ]
    return out
