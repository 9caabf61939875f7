"""Stacking rasters of different resolutions and grids onto one grid."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import rasterio.errors
import rasterio.warp
from affine import Affine
from rasterio.enums import Resampling

from .io import _NO_CRS, PathLike, Raster, RasterError, _open, _transforms_equal

#: resampling names accepted by :func:`stack_bands` (rasterio/GDAL names)
RESAMPLING_METHODS: tuple[str, ...] = (
    "nearest",
    "bilinear",
    "cubic",
    "cubic_spline",
    "lanczos",
    "average",
    "mode",
    "max",
    "min",
    "med",
    "q1",
    "q3",
    "sum",
    "rms",
)


def _resampling(name: str) -> Resampling:
    if name not in RESAMPLING_METHODS:
        raise ValueError(
            f"unknown resampling {name!r}; choose one of {', '.join(RESAMPLING_METHODS)}"
        )
    return Resampling[name]


def stack_bands(
    paths: Sequence[PathLike],
    *,
    reference: int | tuple[int, int] = 0,
    resampling: str = "bilinear",
    reproject: bool = False,
) -> Raster:
    """Stack the bands of several files (e.g. Sentinel-2 10/20/60 m bands) onto one grid.

    Every band of every file is resampled onto the reference grid with
    :func:`rasterio.warp.reproject` (GDAL's warper); files already on that grid are read as is.

    Args:
        paths: files in the order their bands should appear.
        reference: index into ``paths`` of the file whose grid (CRS, transform, shape) is used, or an
            explicit ``(height, width)``: the extent and CRS of ``paths[0]`` divided into that many pixels.
        resampling: a name from :data:`RESAMPLING_METHODS` (``"nearest"``, ``"bilinear"``,
            ``"cubic"``, ``"average"``, ...). Use ``"average"`` when going to a coarser grid.
        reproject: allow files in a different CRS to be reprojected onto the reference CRS. Without it a
            CRS mismatch raises :class:`RasterError` (reprojection is never done silently).

    Returns:
        :class:`Raster` of shape ``(total bands, H, W)`` in the common dtype of the inputs; band names
        are the band descriptions, or the file stem (with ``:<band>`` for multi-band files). Pixels of
        the reference grid that a file does not cover get the nodata value (0 when there is none).
        Files without a CRS are resampled by their transforms alone (the result has no CRS).

    Raises:
        RasterError: a file is missing/unreadable, CRSs differ without ``reproject=True``, or the files
            disagree on their nodata value.

    Example:
        >>> s2 = stack_bands([b02, b05, b01], reference=0, resampling="nearest")  # doctest: +SKIP
        >>> s2.array.shape  # 10 m grid of B02  # doctest: +SKIP
        (3, 120, 120)
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("stack_bands needs at least one path")
    method = _resampling(resampling)
    metas = []
    for path in paths:
        with _open(path) as src:
            metas.append(
                {
                    "crs": src.crs,
                    "transform": src.transform,
                    "shape": (src.height, src.width),
                    "count": src.count,
                    "dtype": np.dtype(src.dtypes[0]),
                    "nodata": src.nodata,
                    "descriptions": src.descriptions,
                }
            )
    if isinstance(reference, tuple | list):
        if len(reference) != 2 or min(int(reference[0]), int(reference[1])) <= 0:
            raise ValueError(f"reference shape must be (height, width) > 0, got {reference}")
        dst_h, dst_w = int(reference[0]), int(reference[1])
        base = metas[0]
        left, top = base["transform"].c, base["transform"].f
        h0, w0 = base["shape"]
        dst_transform = base["transform"] @ Affine.scale(w0 / dst_w, h0 / dst_h)
        dst_transform = Affine(
            dst_transform.a, dst_transform.b, left, dst_transform.d, dst_transform.e, top
        )
        dst_crs = base["crs"]
        ref_path = paths[0]
    else:
        if not 0 <= int(reference) < len(paths):
            raise ValueError(f"reference index {reference} out of range for {len(paths)} paths")
        ref_meta = metas[int(reference)]
        dst_h, dst_w = ref_meta["shape"]
        dst_transform, dst_crs = ref_meta["transform"], ref_meta["crs"]
        ref_path = paths[int(reference)]

    nodatas = {m["nodata"] for m in metas}
    nodata_values = [m["nodata"] for m in metas]
    if len(nodatas) > 1 and not all(v is not None and math.isnan(v) for v in nodata_values):
        detail = ", ".join(f"{p.name}={m['nodata']}" for p, m in zip(paths, metas))
        raise RasterError(f"files disagree on nodata ({detail})", paths[0])
    nodata = nodata_values[0]
    out_dtype = np.result_type(*[m["dtype"] for m in metas])
    fill = 0 if nodata is None else nodata

    out = np.empty((sum(m["count"] for m in metas), dst_h, dst_w), dtype=out_dtype)
    names: list[str] = []
    i = 0
    for path, meta in zip(paths, metas):
        if meta["crs"] != dst_crs and not reproject:
            raise RasterError(
                f"CRS {meta['crs']} differs from the reference {ref_path} ({dst_crs}); "
                "pass reproject=True to reproject it",
                path,
            )
        count = meta["count"]
        with _open(path) as src:
            data = src.read()
        if (
            meta["crs"] == dst_crs
            and meta["shape"] == (dst_h, dst_w)
            and _transforms_equal(meta["transform"], dst_transform)
        ):
            out[i : i + count] = data
        else:
            dest = np.full((count, dst_h, dst_w), fill, dtype=data.dtype)
            # files without a CRS (both sides, else the CRS check above fails) are resampled on their
            # pixel grids alone: GDAL's warper needs a CRS, so both get the same stand-in
            src_crs = meta["crs"] if meta["crs"] is not None else _NO_CRS
            rasterio.warp.reproject(
                source=data,
                destination=dest,
                src_transform=meta["transform"],
                src_crs=src_crs,
                src_nodata=meta["nodata"],
                dst_transform=dst_transform,
                dst_crs=dst_crs if dst_crs is not None else _NO_CRS,
                dst_nodata=nodata,
                resampling=method,
            )
            out[i : i + count] = dest
        for b in range(1, count + 1):
            desc = meta["descriptions"][b - 1]
            if desc == f"band_{b}":  # write_raster's default description names nothing
                desc = None
            names.append(desc if desc else (path.stem if count == 1 else f"{path.stem}:{b}"))
        i += count
    return Raster(out, dst_crs, dst_transform, nodata, names)


# --------------------------------------------------------------------------------------------------
# tiling and blending
