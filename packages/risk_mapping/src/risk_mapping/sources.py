"""Input rasters as researchers have them: checked up front, then stacked on one grid.

A risk stack is often assembled from different sources: a 30 m int16 DEM (nodata -32768), a float
slope (nodata -9999), a 10 m land-cover map in another CRS, labels digitised at 10 m. This module

* **checks** every input before any work (:func:`check_inputs`, also what ``risk-validate-config``
  runs): each file opens, band counts, band names, CRS and grid against the reference grid (with the
  config key that allows resampling or reprojection named in the message), per-file nodata that fits
  the file's dtype, label values, the number of blocks of each split, and the encoder name;
* **builds** the stack on the reference grid (:func:`build_inputs`): each file with its own nodata and
  its own resampling, by kind. *Continuous* rasters use ``dataset.resampling`` (bilinear, average,
  ...); *categorical* rasters (land-cover codes) and the labels use ``nearest`` or ``mode`` only, so
  they never get a value that is not in the input. GDAL's warper (:class:`rasterio.vrt.WarpedVRT`)
  does the resampling, strip by strip, so memory stays bounded by the raster width. The built stack is
  float32 with NaN as the one nodata value (every file's own nodata becomes NaN); the labels are uint8
  with 255 = ignore, mapped through ``dataset.label_map`` when given.

When nothing needs building (one multi-band stack and labels on its grid, no overrides) the input
files are used as they are. A Landslide4Sense folder (``dataset.layout: landslide4sense``) is turned
into the same two rasters by :mod:`risk_mapping.landslide4sense`.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.warp
from affine import Affine
from eo_common.errors import InputError
from eo_common.io import atomic_temp_path
from eo_common.raster import RasterError
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from risk_mapping.config import (
    IGNORE_INDEX,
    RiskConfig,
    stack_files,
)

__all__ = [
    "RasterInfo",
    "PreparedInputs",
    "check_inputs",
    "encoder_problems",
    "build_inputs",
    "label_lookup",
]

_STRIP_ROWS = 256


@dataclass
class RasterInfo:
    """What :func:`check_inputs` learned about one input raster."""

    path: Path
    count: int
    dtype: np.dtype
    crs: Any
    transform: Affine
    height: int
    width: int
    nodata: float | None  # the effective nodata (config override or the file's)
    descriptions: tuple[str | None, ...] = ()
    kind: str = "continuous"
    resampling: str = "nearest"

    def on_grid(self, ref: RasterInfo) -> bool:
        return (
            self.crs == ref.crs
            and (self.height, self.width) == (ref.height, ref.width)
            and _same_transform(self.transform, ref.transform)
        )


@dataclass
class PreparedInputs:
    """The stack and labels on one grid, as the prepare stage uses them.

    Attributes:
        stack: multi-band GeoTIFF on the reference grid.
        labels: uint8 labels (0/1/2, 255 ignore) on the same grid.
        band_names: one per stack band.
        band_kinds: ``"continuous"`` or ``"categorical"`` per stack band.
        blocks: for layouts with their own split (Landslide4Sense): the patch windows.
        block_splits: the split (``train``/``val``/``test``) of each of ``blocks``.
    """

    stack: Path
    labels: Path
    band_names: list[str]
    band_kinds: list[str]
    blocks: list[Window] | None = None
    block_splits: list[str] | None = None
    built: list[str] = field(default_factory=list)


def _same_transform(a: Affine, b: Affine) -> bool:
    scale = max(abs(a.a), abs(a.e), abs(a.b), abs(a.d), 1e-300)
    return all(abs(x - y) <= 1e-6 * scale for x, y in zip(a[:6], b[:6]))


def _fits(value: float, dtype: np.dtype) -> bool:
    if math.isnan(value):
        return dtype.kind == "f"
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return float(value).is_integer() and info.min <= value <= info.max
    return True


def _open_info(path: Path, key: str, problems: list[str]) -> RasterInfo | None:
    try:
        src = rasterio.open(os.fspath(path)) if _is_gdal(path) else _open_local(path)
    except (RasterError, rasterio.errors.RasterioIOError) as exc:
        problems.append(f"{key}: {exc}")
        return None
    with src:
        return RasterInfo(
            path=path,
            count=src.count,
            dtype=np.dtype(src.dtypes[0]),
            crs=src.crs,
            transform=src.transform,
            height=src.height,
            width=src.width,
            nodata=src.nodata,
            descriptions=tuple(src.descriptions),
        )


def _is_gdal(path: Path) -> bool:
    text = os.fspath(path)
    return text.startswith("/vsi") or "://" in text


def _open_local(path: Path) -> rasterio.io.DatasetReader:
    if not path.exists():
        raise RasterError("input file not found", path)
    if path.is_dir():
        raise RasterError("is a folder, not a raster file", path)
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterError(f"not a readable raster ({str(exc).splitlines()[0]})", path) from None


def _stack_infos(cfg: RiskConfig, problems: list[str]) -> list[RasterInfo | None]:
    ds = cfg.dataset
    files = stack_files(ds)
    kinds = ds.kinds or ["continuous"] * len(files)
    infos: list[RasterInfo | None] = []
    for i, path in enumerate(files):
        info = _open_info(path, "dataset.stack", problems)
        if info is not None:
            info.kind = kinds[i] if i < len(kinds) else "continuous"
            if isinstance(ds.resampling, list):
                info.resampling = ds.resampling[i] if i < len(ds.resampling) else "nearest"
            else:
                info.resampling = (
                    ds.categorical_resampling if info.kind == "categorical" else ds.resampling
                )
            override = ds.nodata[i] if i < len(ds.nodata) else None
            if override is not None:
                if not _fits(float(override), info.dtype):
                    problems.append(
                        f"dataset.nodata: {override} does not fit {path.name} ({info.dtype})"
                    )
                info.nodata = float(override)
        infos.append(info)
    return infos


def _bounds(info: RasterInfo, crs: Any) -> tuple[float, float, float, float]:
    west, south, east, north = rasterio.transform.array_bounds(
        info.height, info.width, info.transform
    )
    if info.crs is not None and crs is not None and info.crs != crs:
        return rasterio.warp.transform_bounds(info.crs, crs, west, south, east, north)
    return west, south, east, north


def _grid_problems(info: RasterInfo, ref: RasterInfo, key: str, cfg: RiskConfig) -> list[str]:
    ds = cfg.dataset
    if info is ref or info.on_grid(ref):
        return []
    if info.crs != ref.crs and not (ds.align_rasters and ds.reproject):
        return [
            f"{key}: {info.path}: CRS {info.crs} differs from the reference grid of {ref.path} "
            f"({ref.crs}); set dataset.align_rasters: true and dataset.reproject: true to "
            "reproject it onto that grid"
        ]
    if not ds.align_rasters:
        what = []
        if (info.height, info.width) != (ref.height, ref.width):
            what.append(f"shape {info.height}x{info.width} vs {ref.height}x{ref.width}")
        if not _same_transform(info.transform, ref.transform):
            what.append(f"pixel {abs(info.transform.a):g} vs {abs(ref.transform.a):g}")
            what.append(
                f"origin ({info.transform.c:g}, {info.transform.f:g}) vs "
                f"({ref.transform.c:g}, {ref.transform.f:g})"
            )
        return [
            f"{key}: {info.path}: grid differs from {ref.path} ({'; '.join(what)}); set "
            "dataset.align_rasters: true to resample it onto the reference grid"
        ]
    w, s, e, n = _bounds(info, ref.crs)
    rw, rs, re_, rn = _bounds(ref, ref.crs)
    if e <= rw or w >= re_ or n <= rs or s >= rn:
        return [f"{key}: {info.path}: does not overlap the reference grid of {ref.path}"]
    return []


def label_lookup(label_map: list[int]) -> np.ndarray:
    """``(256,)`` uint8 table from source label values to risk classes (255 stays ignore).

    Example:
        >>> label_lookup([0, 2])[[0, 1, 7, 255]].tolist()
        [0, 2, 255, 255]
    """
    lut = np.full(256, IGNORE_INDEX, np.uint8)
    if label_map:
        lut[: len(label_map)] = label_map
    else:
        lut[:3] = [0, 1, 2]
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def _label_value_problems(info: RasterInfo, label_map: list[int]) -> list[str]:
    """Label values outside the allowed set, read strip by strip."""
    allowed = set(range(len(label_map))) if label_map else {0, 1, 2}
    allowed.add(IGNORE_INDEX)
    found: set[int] = set()
    if info.dtype.kind == "f":
        return [
            f"dataset.labels: {info.path}: labels must be integers (0 low, 1 medium, 2 high, "
            f"255 ignore), found {info.dtype}"
        ]
    with rasterio.open(os.fspath(info.path)) as src:
        for r0 in range(0, src.height, _STRIP_ROWS):
            window = Window(0, r0, src.width, min(_STRIP_ROWS, src.height - r0))
            values = np.unique(src.read(1, window=window))
            found.update(int(v) for v in values if int(v) not in allowed)
            if len(found) > 5:
                break
    if not found:
        return []
    what = (
        f"values with an entry in dataset.label_map (0..{len(label_map) - 1}) or 255"
        if label_map
        else "0 (low), 1 (medium), 2 (high) or 255 (ignore); map other codes with dataset.label_map"
    )
    return [f"dataset.labels: {info.path}: label values must be {what}; found {sorted(found)[:5]}"]


def encoder_problems(encoder: str) -> list[str]:
    """The encoder name is one smp knows (imports segmentation_models_pytorch: a few seconds)."""
    if encoder.startswith("tu-"):
        return []
    from segmentation_models_pytorch.encoders import get_encoder_names

    names = list(get_encoder_names())
    if encoder in names:
        return []
    close = difflib.get_close_matches(encoder, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return [
        f"model.encoder: {encoder!r} is not an encoder known to segmentation_models_pytorch{hint}"
    ]


def _split_problems(cfg: RiskConfig, ref: RasterInfo) -> list[str]:
    from risk_mapping.tiles import assign_blocks, block_layout

    ds = cfg.dataset
    if ref.height < ds.tile_size or ref.width < ds.tile_size:
        return [
            f"dataset.tile_size: {ds.tile_size} px is larger than the raster "
            f"({ref.height}x{ref.width} px, {ref.path.name})"
        ]
    blocks = block_layout(ref.height, ref.width, ds.block_size, ds.tile_size)
    names = assign_blocks(len(blocks), ds.val_fraction, ds.test_fraction, cfg.seed)
    out = []
    if "val" not in names:
        out.append(
            f"dataset.val_fraction: the raster has {len(blocks)} block(s) of "
            f"dataset.block_size={ds.block_size} px and none goes to validation; lower block_size"
        )
    if cfg.evaluation.split == "test" and "test" not in names:
        out.append(
            f"dataset.test_fraction: the raster has {len(blocks)} block(s) of "
            f"dataset.block_size={ds.block_size} px and none goes to the test split that "
            "evaluation.split scores; lower block_size"
        )
    if names.count("train") == 0:
        out.append(f"dataset.block_size: no training block among {len(blocks)}; lower it")
    return out


def check_inputs(cfg: RiskConfig, *, rasters: bool = True, encoder: bool = True) -> list[str]:
    """Every problem of the inputs, found by opening them (nothing is written).

    Args:
        cfg: the pipeline config (its own field checks have passed).
        rasters: open the rasters (grids, CRS, nodata, bands, label values, blocks per split).
        encoder: check the encoder name against segmentation_models_pytorch.

    Returns:
        ``"field: message"`` lines naming the file; empty when everything is usable.
    """
    problems: list[str] = []
    if encoder:
        problems += encoder_problems(cfg.model.encoder)
    if not rasters:
        return problems
    ds = cfg.dataset
    if ds.layout == "landslide4sense":
        from risk_mapping.landslide4sense import check_landslide4sense

        return problems + check_landslide4sense(cfg)
    infos = _stack_infos(cfg, problems)
    labels = _open_info(ds.labels, "dataset.labels", problems) if ds.labels else None
    if any(i is None for i in infos) or labels is None:
        return problems
    if labels.count != 1:
        problems.append(f"dataset.labels: {labels.path}: expected 1 band, found {labels.count}")
    ref = labels if ds.reference_grid == "labels" else infos[0]
    for info in infos:
        problems += _grid_problems(info, ref, "dataset.stack", cfg)
    problems += _grid_problems(labels, ref, "dataset.labels", cfg)
    n_bands = sum(i.count for i in infos)
    if ds.band_names is not None and len(ds.band_names) != n_bands:
        problems.append(
            f"dataset.band_names: {len(ds.band_names)} name(s) for {n_bands} stack band(s)"
        )
    bad = [b for b in ds.optical_bands if b >= n_bands]
    if bad:
        problems.append(f"dataset.optical_bands: band(s) {bad} do not exist ({n_bands} bands)")
    bad = [b for b in cfg.inference.crf.image_bands if b >= n_bands]
    if bad and cfg.inference.crf.enabled:
        problems.append(f"inference.crf.image_bands: band(s) {bad} do not exist ({n_bands} bands)")
    problems += _label_value_problems(labels, ds.label_map)
    problems += _split_problems(cfg, ref)
    return problems


# --------------------------------------------------------------------------------------------------
# building the stack and labels on the reference grid
# --------------------------------------------------------------------------------------------------
def _profile(ref: RasterInfo, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    profile: dict[str, Any] = dict(
        driver="GTiff",
        height=ref.height,
        width=ref.width,
        count=count,
        dtype=dtype,
        crs=ref.crs,
        transform=ref.transform,
        nodata=nodata,
        compress="deflate",
        BIGTIFF="IF_SAFER",
    )
    if ref.height >= 256 and ref.width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    if count > 1:
        profile["interleave"] = "pixel"
    return profile


def _read_on_grid(
    src: rasterio.io.DatasetReader, info: RasterInfo, ref: RasterInfo, window: Window
) -> np.ndarray:
    """``(count, h, w)`` float32 of one strip on the reference grid; missing pixels are NaN."""
    data = src.read(window=window)
    out = data.astype(np.float32)
    missing = ~np.isfinite(out)
    if info.nodata is not None and not math.isnan(info.nodata):
        missing |= data == info.nodata
    out[missing] = np.nan
    return out


def _vrt(src: rasterio.io.DatasetReader, info: RasterInfo, ref: RasterInfo, resampling: str):
    kwargs: dict[str, Any] = dict(
        crs=ref.crs if ref.crs is not None else src.crs,
        transform=ref.transform,
        width=ref.width,
        height=ref.height,
        resampling=Resampling[resampling],
    )
    if info.nodata is not None:
        kwargs.update(src_nodata=info.nodata, nodata=info.nodata)
    else:
        kwargs["add_alpha"] = True
    return WarpedVRT(src, **kwargs)


def _warped_strip(vrt: WarpedVRT, info: RasterInfo, window: Window) -> np.ndarray:
    bands = list(range(1, info.count + 1))
    data = vrt.read(bands, window=window)
    out = data.astype(np.float32)
    if info.nodata is None:
        outside = vrt.read(vrt.count, window=window) == 0
        out[:, outside] = np.nan
    else:
        if not math.isnan(info.nodata):
            out[data == info.nodata] = np.nan
    out[~np.isfinite(out)] = np.nan
    return out


def _write_stack(infos: list[RasterInfo], ref: RasterInfo, names: list[str], path: Path) -> None:
    """Every file onto the reference grid into one float32 GeoTIFF (NaN = missing), strip by strip."""
    total = sum(i.count for i in infos)
    tmp = atomic_temp_path(path)
    try:
        with rasterio.open(tmp, "w", **_profile(ref, total, "float32", float("nan"))) as dst:
            for b, name in enumerate(names, start=1):
                dst.set_band_description(b, name)
            band = 1
            for info in infos:
                with rasterio.open(os.fspath(info.path)) as src:
                    vrt = None if info.on_grid(ref) else _vrt(src, info, ref, info.resampling)
                    try:
                        for r0 in range(0, ref.height, _STRIP_ROWS):
                            window = Window(0, r0, ref.width, min(_STRIP_ROWS, ref.height - r0))
                            strip = (
                                _read_on_grid(src, info, ref, window)
                                if vrt is None
                                else _warped_strip(vrt, info, window)
                            )
                            dst.write(strip, list(range(band, band + info.count)), window=window)
                    finally:
                        if vrt is not None:
                            vrt.close()
                band += info.count
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_labels(info: RasterInfo, ref: RasterInfo, resampling: str, lut: np.ndarray, path: Path):
    """Labels onto the reference grid (nearest/mode only), mapped to risk classes, uint8 255=ignore."""
    tmp = atomic_temp_path(path)
    label_info = RasterInfo(**{**info.__dict__, "nodata": float(IGNORE_INDEX)})
    try:
        with (
            rasterio.open(os.fspath(info.path)) as src,
            rasterio.open(tmp, "w", **_profile(ref, 1, "uint8", IGNORE_INDEX)) as dst,
        ):
            dst.set_band_description(1, "risk")
            vrt = None if info.on_grid(ref) else _vrt(src, label_info, ref, resampling)
            try:
                for r0 in range(0, ref.height, _STRIP_ROWS):
                    window = Window(0, r0, ref.width, min(_STRIP_ROWS, ref.height - r0))
                    raw = (vrt or src).read(1, window=window).astype(np.int64)
                    raw = np.where((raw < 0) | (raw > 255), IGNORE_INDEX, raw)
                    dst.write(lut[raw][None], window=window)
            finally:
                if vrt is not None:
                    vrt.close()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def build_inputs(cfg: RiskConfig, out_dir: str | os.PathLike) -> PreparedInputs:
    """The stack and labels on the reference grid (written into ``out_dir`` only when needed).

    Raises:
        InputError: any problem :func:`check_inputs` finds (all of them in one message).
    """
    out_dir = Path(out_dir)
    ds = cfg.dataset
    if ds.layout == "landslide4sense":
        from risk_mapping.landslide4sense import build_landslide4sense

        return build_landslide4sense(cfg, out_dir)
    problems: list[str] = []
    infos = _stack_infos(cfg, problems)
    labels = _open_info(ds.labels, "dataset.labels", problems)
    if problems or labels is None or any(i is None for i in infos):
        raise InputError("; ".join(problems))
    ref = labels if ds.reference_grid == "labels" else infos[0]
    for info in infos:
        problems += _grid_problems(info, ref, "dataset.stack", cfg)
    problems += _grid_problems(labels, ref, "dataset.labels", cfg)
    if problems:
        raise InputError("; ".join(problems))
    names = list(ds.band_names or [])
    kinds: list[str] = []
    for info in infos:
        kinds += [info.kind] * info.count
        if not ds.band_names:
            for b in range(info.count):
                desc = info.descriptions[b] if b < len(info.descriptions) else None
                generic = desc in (None, "", f"band_{b + 1}")
                stem = Path(info.path).stem
                names.append(stem if info.count == 1 else (f"{stem}:{b + 1}" if generic else desc))
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    single = infos[0]
    overrides = any(v is not None for v in ds.nodata)
    if len(infos) == 1 and single is ref and not overrides and not ds.band_names:
        stack_path = single.path
    else:
        stack_path = out_dir / "stack.tif"
        _write_stack(infos, ref, names, stack_path)
        built.append("stack")
    if labels.on_grid(ref) and not ds.label_map and labels.dtype == np.uint8:
        labels_path = labels.path
    else:
        labels_path = out_dir / "labels.tif"
        _write_labels(labels, ref, ds.labels_resampling, label_lookup(ds.label_map), labels_path)
        built.append("labels")
    return PreparedInputs(stack_path, labels_path, names, kinds, built=built)
