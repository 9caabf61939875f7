"""The raster layer's errors and how it opens files (local paths, GDAL virtual paths and URLs)."""

from __future__ import annotations

import os
from pathlib import Path

import rasterio
import rasterio.errors

__all__ = ["PathLike", "RasterError", "RasterNotFoundError", "is_gdal_path"]

PathLike = str | os.PathLike


# --------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------
class RasterError(ValueError):
    """A raster file is missing, unreadable, or not what the caller needs.

    The message always starts with the file path. ``RasterError(message, path)`` prefixes the message
    with the path; the path is kept in ``.path``.

    Example:
        >>> str(RasterError("expected 13 bands, found 12", "s2.tif"))
        's2.tif: expected 13 bands, found 12'
    """

    def __init__(self, message: str, path: PathLike | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(message if path is None else f"{path}: {message}")


class RasterNotFoundError(RasterError, FileNotFoundError):
    """The raster file does not exist (both a :class:`RasterError` and a :class:`FileNotFoundError`)."""


def is_gdal_path(path: PathLike) -> bool:
    """True for GDAL virtual paths and URLs (``/vsizip/...``, ``/vsimem/...``, ``s3://...``).

    Example:
        >>> is_gdal_path("/vsizip/scene.zip/B04.tif"), is_gdal_path("s3://bucket/x.tif")
        (True, True)
        >>> is_gdal_path("data/B04.tif")
        False
    """
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def _open(path: PathLike) -> rasterio.io.DatasetReader:
    """Open ``path`` for reading, turning GDAL's errors into :class:`RasterError`.

    Local paths are checked first (a clear "no such file"); GDAL virtual paths and URLs
    (:func:`is_gdal_path`) go straight to GDAL.
    """
    if is_gdal_path(path):
        try:
            return rasterio.open(os.fspath(path))
        except rasterio.errors.RasterioIOError as exc:
            raise RasterNotFoundError(f"GDAL cannot open it ({exc})", os.fspath(path)) from exc
    path = Path(path)
    if not path.exists():
        raise RasterNotFoundError("no such file", path)
    if path.is_dir():
        raise RasterError("is a folder, not a raster file", path)
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"not a readable raster ({exc})", path) from exc
