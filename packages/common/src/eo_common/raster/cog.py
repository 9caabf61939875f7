"""Overviews and Cloud-Optimised GeoTIFFs (GDAL's COG driver): what makes a GeoTIFF open fast in GIS.

:func:`finalize_geotiff` gives an already written GeoTIFF (a streamed prediction) overviews or turns
it into a valid COG in place (atomically; GDAL streams the copy, so memory stays flat).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling

from eo_common.io import atomic_temp_path

from .files import PathLike, RasterError, _open

__all__ = ["finalize_geotiff"]


def _resampling_enum(name: str, path: PathLike) -> Resampling:
    try:
        return Resampling[name]
    except KeyError:
        raise RasterError(f"unknown overview resampling {name!r}", path) from None


def _overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """Halvings until the overview fits in one tile: [2, 4, 8, ...]."""
    factors, factor = [], 2
    while max(height, width) / (factor // 2) > blocksize:
        factors.append(factor)
        factor *= 2
    return factors


def _build_overviews(dst: Any, resampling: str, blocksize: int) -> None:
    factors = _overview_factors(dst.height, dst.width, blocksize)
    if factors:
        dst.build_overviews(factors, _resampling_enum(resampling, dst.name))
        dst.update_tags(ns="rio_overview", resampling=resampling)


def _to_cog(
    src_path: Path, path: Path, resampling: str, blocksize: int, compress: str | None, dtype: Any
) -> Path:
    """Copy a GeoTIFF into a COG beside ``path`` with GDAL's COG driver; return the new temp."""
    import rasterio.shutil

    options: dict[str, Any] = {
        "BLOCKSIZE": blocksize,
        "OVERVIEW_RESAMPLING": resampling.upper(),
        "BIGTIFF": "IF_SAFER",
        "COMPRESS": (compress or "NONE").upper(),
    }
    if compress and compress.lower() in ("deflate", "lzw", "zstd"):
        kind = np.dtype(dtype).kind
        options["PREDICTOR"] = "FLOATING_POINT" if kind == "f" else "STANDARD"
    out = atomic_temp_path(path)
    try:
        rasterio.shutil.copy(src_path, out, driver="COG", **options)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    finally:
        src_path.unlink(missing_ok=True)
    return out


def finalize_geotiff(
    path: PathLike, *, cog: bool = True, overview_resampling: str = "average", blocksize: int = 256
) -> Path:
    """Give an already written GeoTIFF (e.g. a streamed prediction) overviews, or make it a COG.

    The file is replaced atomically; GDAL streams the copy, so memory stays flat with the scene size.

    Example:
        >>> finalize_geotiff("class_map.tif", overview_resampling="nearest")  # doctest: +SKIP
    """
    path = Path(path)
    if cog:
        import shutil

        work = atomic_temp_path(path)
        shutil.copyfile(path, work)
        try:
            out = _to_cog(work, path, overview_resampling, blocksize, "deflate", _dtype_of(path))
            os.replace(out, path)
        except BaseException:
            work.unlink(missing_ok=True)
            raise
        return path
    with rasterio.open(path, "r+") as dst:
        _build_overviews(dst, overview_resampling, blocksize)
    return path


def _dtype_of(path: PathLike) -> np.dtype:
    with _open(path) as src:
        return np.dtype(src.dtypes[0])
