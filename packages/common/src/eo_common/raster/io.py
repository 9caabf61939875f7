"""GeoTIFF reading and writing with the georeference kept next to the pixels.

:func:`read_raster` reads all or chosen 1-based bands, optionally a window (the returned transform is
then the window's own transform). :func:`write_raster` writes atomically (a temporary file beside the
target, renamed when complete), DEFLATE-compressed, tiled 256 x 256 when the raster is at least one
block in each direction, with band descriptions as band names.

Every problem with a file raises :class:`RasterError` (a :class:`ValueError`) whose message starts with
the file path: a missing file (:class:`RasterNotFoundError`, also a :class:`FileNotFoundError`), a file
GDAL cannot open, a wrong band count, a window outside the raster, grids that differ
(:func:`check_same_grid` names both files and what differs), and an all-nodata tile
(:func:`check_not_all_nodata`). NaN is read and written as is; wherever a pixel is judged *missing*
(:func:`missing_mask`), NaN and +-inf count as missing exactly like the nodata value does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from eo_common.io import atomic_temp_path

from .cog import _build_overviews, _resampling_enum, _to_cog
from .files import PathLike, RasterError, _open

_NO_CRS = CRS.from_epsg(3857)


# --------------------------------------------------------------------------------------------------
# the Raster container
# --------------------------------------------------------------------------------------------------
@dataclass
class Raster:
    """Pixels plus georeference.

    Attributes:
        array: ``(C, H, W)`` pixel values in the file's dtype (or the dtype asked for).
        crs: coordinate reference system, or None for a file without one.
        transform: affine pixel-to-map transform of ``array[:, 0, 0]``'s upper-left corner.
        nodata: the nodata value (may be NaN), or None.
        band_names: one name per band (the GeoTIFF band descriptions), or None when none are set.

    Example:
        >>> r = read_raster("stack.tif")  # doctest: +SKIP
        >>> write_raster("copy.tif", r.array, **r.profile)  # doctest: +SKIP
    """

    array: np.ndarray
    crs: CRS | None
    transform: Affine
    nodata: float | None = None
    band_names: list[str] | None = None

    @property
    def count(self) -> int:
        return int(self.array.shape[0])

    @property
    def height(self) -> int:
        return int(self.array.shape[1])

    @property
    def width(self) -> int:
        return int(self.array.shape[2])

    @property
    def profile(self) -> dict[str, Any]:
        """Keyword arguments for :func:`write_raster` that reproduce this raster's metadata."""
        return {
            "crs": self.crs,
            "transform": self.transform,
            "nodata": self.nodata,
            "dtype": self.array.dtype,
            "band_names": None if self.band_names is None else list(self.band_names),
        }

    @property
    def bounds(self) -> rasterio.coords.BoundingBox:
        """(left, bottom, right, top) in CRS units."""
        west, south, east, north = rasterio.transform.array_bounds(
            self.height, self.width, self.transform
        )
        return rasterio.coords.BoundingBox(west, south, east, north)


# --------------------------------------------------------------------------------------------------
# reading and writing
# --------------------------------------------------------------------------------------------------
def _check_bands(bands: Sequence[int] | None, count: int, path: PathLike) -> list[int]:
    if bands is None:
        return list(range(1, count + 1))
    if isinstance(bands, int | np.integer):
        bands = [int(bands)]
    bands = [int(b) for b in bands]
    if not bands:
        raise RasterError("empty band selection", path)
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise RasterError(
            f"band index {bad[0]} out of range: the file has {count} band(s), "
            "indices are 1-based like rasterio",
            path,
        )
    return bands


def _check_window(window: Window, height: int, width: int, path: PathLike) -> Window:
    window = Window(*window) if not isinstance(window, Window) else window
    r0, c0 = int(window.row_off), int(window.col_off)
    h, w = int(window.height), int(window.width)
    if (r0, c0, h, w) != (window.row_off, window.col_off, window.height, window.width):
        raise RasterError(f"window {window} has non-integer offsets or size", path)
    if h <= 0 or w <= 0 or r0 < 0 or c0 < 0 or r0 + h > height or c0 + w > width:
        raise RasterError(
            f"window (rows {r0}:{r0 + h}, cols {c0}:{c0 + w}) is not inside the raster "
            f"of {height} x {width} pixels",
            path,
        )
    return Window(c0, r0, w, h)


def _band_names(descriptions: Sequence[str | None], bands: Sequence[int]) -> list[str] | None:
    names = [descriptions[b - 1] for b in bands]
    if all(n is None or n == "" for n in names):
        return None
    return [n if n else f"band{b}" for n, b in zip(names, bands)]


def read_raster(
    path: PathLike,
    bands: Sequence[int] | int | None = None,
    window: Window | None = None,
    expected_bands: int | None = None,
    dtype: Any = None,
) -> Raster:
    """Read a raster (all or chosen bands, optionally a window) with its georeference.

    Args:
        path: GeoTIFF (or any GDAL-readable raster).
        bands: 1-based band indices like rasterio (``[4, 3, 2]``); None reads all bands.
        window: a :class:`rasterio.windows.Window` inside the raster; the returned transform is the
            window's own transform, so the result can be written as a georeferenced file.
        expected_bands: raise :class:`RasterError` unless the *file* has exactly this many bands.
        dtype: cast the pixels to this dtype (None keeps the file's dtype).

    Returns:
        :class:`Raster` with ``array`` of shape ``(len(bands), H, W)``.

    Raises:
        RasterNotFoundError: the file does not exist.
        RasterError: not a readable raster, wrong band count, band index or window out of range.

    Example:
        >>> r = read_raster("s2.tif", bands=[4, 3, 2], window=Window(0, 0, 64, 64))  # doctest: +SKIP
        >>> r.array.shape  # doctest: +SKIP
        (3, 64, 64)
    """
    with _open(path) as src:
        if expected_bands is not None and src.count != expected_bands:
            raise RasterError(f"expected {expected_bands} band(s), found {src.count}", path)
        band_list = _check_bands(bands, src.count, path)
        transform = src.transform
        if window is not None:
            window = _check_window(window, src.height, src.width, path)
            transform = src.transform @ Affine.translation(window.col_off, window.row_off)
        try:
            array = src.read(band_list, window=window)
        except rasterio.errors.RasterioError as exc:
            raise RasterError(f"could not read pixels ({exc})", path) from exc
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return Raster(
            array=array,
            crs=src.crs,
            transform=transform,
            nodata=src.nodata,
            band_names=_band_names(src.descriptions, band_list),
        )


def _fits_dtype(value: float, dtype: np.dtype) -> bool:
    """Whether ``value`` is exactly representable in ``dtype`` (NaN only in float dtypes)."""
    dtype = np.dtype(dtype)
    if math.isnan(value):
        return dtype.kind == "f"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    if dtype.kind == "f":
        return math.isinf(value) or abs(value) <= np.finfo(dtype).max
    return True


def _gdal_dtype(array: np.ndarray, dtype: Any, path: PathLike) -> np.ndarray:
    if dtype is not None:
        array = array.astype(dtype, copy=False)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    if array.dtype.name not in rasterio.dtypes.dtype_rev:
        raise RasterError(f"dtype {array.dtype} cannot be stored in a GeoTIFF", path)
    return array


def write_raster(
    path: PathLike,
    array: np.ndarray,
    *,
    crs: CRS | str | None,
    transform: Affine,
    nodata: float | None = None,
    dtype: Any = None,
    band_names: Sequence[str] | None = None,
    compress: str | None = "deflate",
    tiled: bool = True,
    blocksize: int = 256,
    overviews: bool | None = None,
    overview_resampling: str = "average",
    cog: bool = False,
    colormap: Mapping[int, Sequence[int]] | None = None,
    tags: Mapping[str, str] | None = None,
) -> Path:
    """Write a GeoTIFF atomically, keeping CRS, transform, nodata and dtype exactly.

    The file is written to a temporary name beside ``path`` and renamed over ``path`` only when
    complete, so a crash never leaves a truncated GeoTIFF. DEFLATE uses the horizontal-differencing
    predictor for integers and the floating-point predictor for floats (both lossless). The file is
    what GIS software expects: internally tiled, compressed, with overviews when it is larger than one
    tile, nodata set and a description on every band; with ``cog`` a valid Cloud-Optimised GeoTIFF.

    Args:
        path: destination ``.tif``; parent folders are created.
        array: ``(C, H, W)`` or ``(H, W)`` (written as one band). ``bool`` is stored as uint8 and
            ``float16`` as float32 (GeoTIFF has neither).
        crs: CRS (or anything :class:`rasterio.crs.CRS` accepts, e.g. ``"EPSG:32633"``), or None.
        transform: affine transform of the upper-left pixel corner.
        nodata: nodata value (NaN allowed for float data); must fit the dtype.
        dtype: cast to this dtype before writing (None keeps ``array.dtype``).
        band_names: one description per band (shown by QGIS and returned by :func:`read_raster`);
            default ``band_1``, ``band_2``, ...
        compress: GDAL compression name, or None for none.
        tiled: write ``blocksize`` x ``blocksize`` tiles when the raster is at least one block in
            both directions (smaller rasters are written as strips).
        blocksize: tile size, a multiple of 16 (a TIFF requirement).
        overviews: build internal overviews (halvings down to one tile); None = when the raster is
            larger than one tile in either direction.
        overview_resampling: ``"average"`` for continuous values, ``"nearest"`` or ``"mode"`` for
            classes (an overview never holds a class code that does not exist).
        cog: write a Cloud-Optimised GeoTIFF (GDAL's COG driver; overviews always, tiles in order).
        colormap: ``{value: (r, g, b[, a])}`` colour table of band 1 (uint8/uint16 data).
        tags: dataset metadata items.

    Returns:
        ``Path(path)``.

    Example:
        >>> write_raster("labels.tif", labels[None], crs="EPSG:32633",
        ...              transform=Affine(10, 0, 500000, 0, -10, 5200000), nodata=255)  # doctest: +SKIP
    """
    path = Path(path)
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise RasterError(f"array must have shape (C, H, W) or (H, W), got {array.shape}", path)
    array = _gdal_dtype(array, dtype, path)
    count, height, width = array.shape
    if nodata is not None and not _fits_dtype(float(nodata), array.dtype):
        raise RasterError(f"nodata {nodata} does not fit dtype {array.dtype}", path)
    if band_names is None:
        band_names = [f"band_{i}" for i in range(1, count + 1)]
    band_names = [str(n) for n in band_names]
    if len(band_names) != count:
        raise RasterError(f"{len(band_names)} band names for {count} band(s)", path)
    if blocksize <= 0 or blocksize % 16:
        raise RasterError(f"blocksize must be a positive multiple of 16, got {blocksize}", path)
    if colormap is not None and array.dtype not in (np.uint8, np.uint16):
        raise RasterError(f"a colour table needs uint8 or uint16 data, got {array.dtype}", path)
    _resampling_enum(overview_resampling, path)
    profile = _geotiff_profile(
        count, height, width, array.dtype, crs, transform, nodata, compress, tiled, blocksize
    )
    if overviews is None:
        overviews = max(height, width) > blocksize
    tmp = atomic_temp_path(path)
    try:
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(array)
            for i, name in enumerate(band_names, start=1):
                dst.set_band_description(i, name)
            if colormap is not None:
                dst.write_colormap(1, {int(k): tuple(v) for k, v in colormap.items()})
            if tags:
                dst.update_tags(**{k: str(v) for k, v in tags.items()})
            if overviews and not cog:
                _build_overviews(dst, overview_resampling, blocksize)
        if cog:
            tmp = _to_cog(tmp, path, overview_resampling, blocksize, compress, array.dtype)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _geotiff_profile(
    count: int,
    height: int,
    width: int,
    dtype: np.dtype,
    crs: Any,
    transform: Affine,
    nodata: float | None,
    compress: str | None,
    tiled: bool,
    blocksize: int,
    rows_per_strip: int | None = None,
    zlevel: int | None = None,
) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "count": count,
        "height": height,
        "width": width,
        "dtype": np.dtype(dtype).name,
        "crs": CRS.from_user_input(crs) if crs is not None else None,
        "transform": transform,
        "nodata": nodata,
        "BIGTIFF": "IF_SAFER",
    }
    if compress:
        profile["compress"] = compress
        if compress.lower() in ("deflate", "lzw", "zstd"):
            # lossless: horizontal differencing for integers, the floating-point predictor for floats
            kind = np.dtype(dtype).kind
            if kind in "iu":
                profile["predictor"] = 2
            elif kind == "f":
                profile["predictor"] = 3
            if zlevel is not None and compress.lower() == "deflate":
                profile["zlevel"] = zlevel
    if tiled and height >= blocksize and width >= blocksize:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    else:
        profile["tiled"] = False
        if rows_per_strip is not None:
            profile["blockysize"] = max(1, min(rows_per_strip, height))
    if count > 1:
        profile["interleave"] = "pixel"
    return profile


# --------------------------------------------------------------------------------------------------
# grid checks and nodata
# --------------------------------------------------------------------------------------------------
def _transforms_equal(a: Affine, b: Affine) -> bool:
    """Equal up to a millionth of a pixel (exact for transforms copied from the same file)."""
    scale = max(abs(a.a), abs(a.e), abs(a.b), abs(a.d), 1e-300)
    return all(abs(x - y) <= 1e-6 * scale for x, y in zip(a[:6], b[:6]))


def check_same_grid(paths: Sequence[PathLike]) -> None:
    """Raise :class:`RasterError` unless all rasters share CRS, transform and shape.

    The message names the first file and the first file that differs from it, and says what differs.

    Example:
        >>> check_same_grid(["stack.tif", "labels.tif"])  # doctest: +SKIP
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("check_same_grid needs at least one path")
    with _open(paths[0]) as ref:
        ref_crs, ref_transform, ref_shape = ref.crs, ref.transform, (ref.height, ref.width)
    for path in paths[1:]:
        with _open(path) as src:
            problems = []
            if src.crs != ref_crs:
                problems.append(f"CRS {src.crs} vs {ref_crs}")
            if (src.height, src.width) != ref_shape:
                problems.append(
                    f"shape {src.height}x{src.width} vs {ref_shape[0]}x{ref_shape[1]} (rows x cols)"
                )
            if not _transforms_equal(src.transform, ref_transform):
                problems.append(
                    f"transform {tuple(src.transform)[:6]} vs {tuple(ref_transform)[:6]}"
                )
        if problems:
            raise RasterError(f"grid differs from {paths[0]}: " + "; ".join(problems), path)


def missing_mask(array: np.ndarray, nodata: float | None, rule: Literal["any", "all"] = "any"):
    """``(H, W)`` bool mask of missing pixels of a ``(C, H, W)`` array.

    A band value is missing when it equals ``nodata`` or is not finite (NaN, +inf, -inf: no sensor
    measures infinity; GDAL writes it for failed computations). With ``rule="any"`` a pixel is missing
    when any of its bands is (the input of a model is then incomplete); with ``"all"`` only when every
    band is (GDAL's dataset-mask convention).

    Example:
        >>> x = np.array([[[1.0, -9999.0]], [[2.0, 3.0]]])
        >>> missing_mask(x, -9999).tolist(), missing_mask(x, -9999, "all").tolist()
        ([[False, True]], [[False, False]])
        >>> missing_mask(np.array([[np.inf, -np.inf, np.nan, 0.0]]), None).tolist()
        [[True, True, True, False]]
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[None]
    per_band = np.zeros(array.shape, dtype=bool)
    if array.dtype.kind in "fc":
        per_band |= ~np.isfinite(array)
    if nodata is not None and not math.isnan(nodata):
        per_band |= array == nodata
    return per_band.any(axis=0) if rule == "any" else per_band.all(axis=0)


def check_not_all_nodata(array: np.ndarray, nodata: float | None, where: str) -> None:
    """Raise :class:`RasterError` when every value of ``array`` is nodata, NaN or +-inf.

    Args:
        array: any shape, e.g. a ``(C, t, t)`` tile.
        nodata: the nodata value (None: only NaN and +-inf count as missing).
        where: names the file (and window) in the message, e.g. ``"stack.tif window (0, 256)"``.

    Example:
        >>> check_not_all_nodata(np.full((1, 2, 2), 255), 255, "labels.tif")
        Traceback (most recent call last):
        ...
        eo_common.raster.files.RasterError: labels.tif: tile is entirely nodata (nodata=255)
    """
    array = np.asarray(array)
    missing = np.zeros(array.shape, dtype=bool)
    if array.dtype.kind in "fc":
        missing |= ~np.isfinite(array)
    if nodata is not None and not math.isnan(nodata):
        missing |= array == nodata
    if missing.all():
        raise RasterError(f"tile is entirely nodata (nodata={nodata})", where)


# --------------------------------------------------------------------------------------------------
# stacking bands of different resolutions
# --------------------------------------------------------------------------------------------------
