"""``cr-predict``: cloud-free GeoTIFF from a cloudy S2 GeoTIFF + S1 GeoTIFF of any size.

The two inputs must share one grid (CRS, transform, size; checked, errors name the files): a 13-band
Sentinel-2 L1C GeoTIFF in DN (reflectance x 10000, band order B01..B12 with B8A after B08 and B10
included) and a 2-band Sentinel-1 GeoTIFF (VV, VH in dB). They are stacked into a 15-band virtual
raster (a GDAL VRT file in a temporary folder, nothing copied) and run through
:func:`eo_common.raster.sliding_window_predict`: tiles of ``--tile_size`` with ``--overlap`` (the
last of each row and column stretched to the border, ``--last_tile``; each
padded by ``--pad`` reflected pixels of context that are cropped off again), blended with cosine
ramps, read and written one tile row at a time, so memory stays flat however large the scene is.
Each tile is normalised with the run's convention, predicted, and mapped back to DN;
``--batch_size`` tiles go through the network per forward pass (``auto``: as many as fit in the free
GPU memory, 2 on the CPU), on the GPU when ``--accelerator`` allows one; the output does not depend
on the batch size beyond float32 rounding.

Missing values: a NaN (or inf) in any band of either input marks the pixel as missing. For the network
the tile is filled with each band's mean over its valid pixels (as in training and GLF-CR); in the
output the pixel is nodata: 0 in the uint16 output (the L1C no-data value; predicted DN are kept >= 1
so that 0 means nodata only), NaN in float32 output. Tiles with no valid pixel are not predicted.

The run folder (``--output_dir``; the rerun rule of every eolab command) receives the GeoTIFF
(``--output_name``, default ``<s2 stem>_cloudfree.tif``), ``config.yaml`` and ``summary.json``. The
GeoTIFF keeps the input's CRS and transform: 13 bands uint16 DN (``--out_dtype float32`` for unrounded
values), plus the cloud confidence as a 14th band with ``--with_confidence`` (then float32). It is
GIS-ready: band descriptions (B01 ... B12, cloud confidence), nodata set, DEFLATE, average overviews,
and by default a Cloud-Optimised GeoTIFF with 256 px tiles (``--no_cog``: the streamed 16-row strips
with overviews added in place, which saves one copy of a large scene).

Example::

    cr-predict --checkpoint runs/cloud_removal/checkpoints/best.ckpt \\
        --s2 scene_s2_cloudy.tif --s1 scene_s1.tif --output_dir runs/scene --tile_size 256 --overlap 32
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import torch
from eo_common.normalize import denormalize_s2, fill_nan, normalize_s1, normalize_s2
from eo_common.raster import (
    RasterError,
    check_same_grid,
    finalize_geotiff,
    sliding_window_predict,
)
from eo_common.raster.batching import BatchSize
from eo_common.runs import RunFolder

from .clouds import S2_BANDS
from .config import CRPredictConfig
from .evaluate import load_task
from .task import CloudRemovalTask

__all__ = [
    "predict",
    "predict_scene",
    "make_predict_fn",
    "write_stack_vrt",
    "inference_device",
    "BAND_NAMES",
]


def write_stack_vrt(s2: Path, s1: Path, vrt_path: Path) -> Path:
    """A GDAL VRT stacking the 13 S2 bands and the 2 S1 bands (float32) of two same-grid files."""
    with rasterio.open(s2) as a, rasterio.open(s1) as b:
        if a.count != 13:
            raise RasterError(
                f"expected 13 Sentinel-2 bands (B01..B12 with B8A and B10), found {a.count}", s2
            )
        if b.count != 2:
            raise RasterError(f"expected 2 Sentinel-1 bands (VV, VH), found {b.count}", s1)
        width, height = a.width, a.height
        srs = a.crs.to_wkt() if a.crs else ""
        gt = a.transform.to_gdal()
    bands = [(s2, i) for i in range(1, 14)] + [(s1, i) for i in range(1, 3)]
    parts = [f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">']
    if srs:
        parts.append(f"  <SRS>{escape(srs)}</SRS>")
    parts.append("  <GeoTransform>" + ", ".join(repr(float(v)) for v in gt) + "</GeoTransform>")
    for k, (path, band) in enumerate(bands, start=1):
        parts.append(
            f'  <VRTRasterBand dataType="Float32" band="{k}"><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{escape(str(Path(path).resolve()))}</SourceFilename>'
            f"<SourceBand>{band}</SourceBand></SimpleSource></VRTRasterBand>"
        )
    parts.append("</VRTDataset>")
    vrt_path.write_text("\n".join(parts) + "\n")
    return vrt_path


def make_predict_fn(
    task: CloudRemovalTask, with_confidence: bool = False, pad: int = 0, device: Any = None
):
    """A batched tile predictor: ``(B, 15, t, t)`` float32 (13 S2 DN + 2 S1 dB) -> ``(B, 13 or 14, t,
    t)`` float32 DN (+ confidence); one tile ``(15, t, t)`` -> ``(13 or 14, t, t)`` as well.

    NaN/inf values are filled, tile by tile, with the band mean of the tile's valid pixels before the
    network (a band without any valid pixel in a tile is set to 0 first;
    :func:`sliding_window_predict` does not pass tiles whose every pixel is missing), so a tile's
    prediction does not depend on the other tiles of its batch. ``pad`` pixels of reflected context
    are added around each tile before the network and cropped afterwards, so zero padding inside the
    network does not darken the scene's outer edges. The network runs on ``device`` (None: where
    its weights are), in channels-last memory format (the network's weights are converted in place;
    1.1x faster on the CPU, see :func:`~eo_common.raster.torch_batch_predictor`). The function's
    ``batched`` attribute is True, so :func:`~eo_common.raster.sliding_window_predict` passes it
    ``batch_size`` tiles per call.
    """
    convention = task.hparams.get("convention", "glf-cr")
    device = torch.device(device) if device is not None else next(task.parameters()).device
    task.model.to(memory_format=torch.channels_last)

    def fill(x: np.ndarray) -> np.ndarray:  # (B, C, t, t)
        x = x.astype(np.float32)
        bad = ~np.isfinite(x).reshape(*x.shape[:2], -1).any(axis=2)  # (B, C)
        if bad.any():  # a band without a valid pixel in this tile: a neutral constant
            x[bad] = 0.0
        return fill_nan(x)

    @torch.inference_mode()
    def predict_fn(tiles: np.ndarray) -> np.ndarray:
        tiles = np.asarray(tiles)
        single = tiles.ndim == 3
        if single:
            tiles = tiles[None]
        if pad:
            tiles = np.pad(tiles, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        optical = torch.from_numpy(normalize_s2(fill(tiles[:, :13]), convention)).to(device)
        sar = torch.from_numpy(normalize_s1(fill(tiles[:, 13:15]), convention)).to(device)
        out = task(
            optical.contiguous(memory_format=torch.channels_last),
            sar.contiguous(memory_format=torch.channels_last),
        )
        r = task.data_range
        dn = denormalize_s2(out.prediction.clamp(0, r).float().cpu().numpy(), convention)
        if with_confidence:
            conf = (
                out.confidence.float().cpu().numpy()
                if out.confidence is not None
                else np.full_like(dn[:, :1], np.nan)
            )
            dn = np.concatenate([dn, conf], axis=1)
        if pad:
            dn = dn[..., pad:-pad, pad:-pad]
        return dn[0] if single else dn

    predict_fn.batched = True  # type: ignore[attr-defined]
    return predict_fn


#: band descriptions of the cr-predict GeoTIFF (13 S2 bands in file order, then the confidence)
BAND_NAMES: tuple[str, ...] = (*S2_BANDS, "cloud confidence")


def predict_scene(
    task: CloudRemovalTask,
    s2: Path,
    s1: Path,
    out: Path,
    *,
    tile_size: int = 256,
    overlap: int = 32,
    pad: int = 16,
    blend: str = "cosine",
    last_tile: str = "stretch",
    out_dtype: str = "uint16",
    with_confidence: bool = False,
    progress: bool = True,
    batch_size: BatchSize = "auto",
    cog: bool = True,
    device: Any = None,
) -> Path:
    """Sliding-window prediction of a scene into ``out`` (written atomically); see the module docstring.

    ``batch_size`` tiles go through the network per call (``"auto"``:
    :func:`eo_common.raster.resolve_batch_size`); the blended output does not depend on it beyond
    float32 rounding. The GeoTIFF names its bands (B01 ... B12, cloud confidence) and is finished by
    :func:`eo_common.raster.finalize_geotiff`: a Cloud-Optimised GeoTIFF with ``cog``, else the
    streamed strips with overviews added in place. ``last_tile="stretch"`` stretches the last tile
    of each row and column to the border (padded to the network stride), ``"shift"`` keeps square
    tiles (:data:`eo_common.config.LastTile`).
    """
    stride = task.model_config.stride
    if tile_size % stride or (tile_size + 2 * pad) % stride:
        raise ValueError(
            f"tile_size {tile_size} and tile_size + 2 x pad ({tile_size + 2 * pad}) must be "
            f"multiples of the network stride {stride} (e.g. --tile_size {max(stride, tile_size // stride * stride)} "
            f"--pad {stride})"
        )
    dtype = "float32" if with_confidence else out_dtype
    device = torch.device(device) if device is not None else next(task.parameters()).device
    out_bands = 14 if with_confidence else 13
    with tempfile.TemporaryDirectory(prefix="cr_predict_") as tmp:
        vrt = write_stack_vrt(Path(s2), Path(s1), Path(tmp) / "stack.vrt")
        fn = make_predict_fn(task, with_confidence, pad, device)
        if dtype == "uint16":
            base = fn

            def fn(tiles: np.ndarray) -> np.ndarray:  # 0 is nodata only
                return np.maximum(base(tiles), 1.0)

            fn.batched = True  # type: ignore[attr-defined]

        sliding_window_predict(
            vrt,
            out,
            fn,
            out_bands=out_bands,
            tile_size=tile_size,
            overlap=overlap,
            blend=blend,
            out_dtype=dtype,
            nodata=0 if dtype == "uint16" else float("nan"),
            progress=progress,
            batch_size=batch_size,
            device=device,
            band_names=BAND_NAMES[:out_bands],
            stretch=stride if last_tile == "stretch" else 0,  # see eo_common.config.LastTile
        )
    return finalize_geotiff(out, cog=cog, overview_resampling="average")


def inference_device(accelerator: str) -> torch.device:
    """CUDA when ``run.accelerator`` allows it (auto, gpu, cuda) and a GPU is visible, else the CPU."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def predict(cfg: CRPredictConfig) -> dict[str, Any]:
    """``cr-predict``: check the inputs, open the run folder, predict the scene, write summary.json."""
    folder = RunFolder.plan(cfg, "cr-predict")
    s2, s1 = Path(cfg.s2), Path(cfg.s1)  # type: ignore[arg-type]
    check_same_grid([s2, s1])
    with rasterio.open(s2) as a, rasterio.open(s1) as b:
        if a.count != 13:
            raise RasterError(
                f"expected 13 Sentinel-2 bands (B01..B12 with B8A and B10), found {a.count}", s2
            )
        if b.count != 2:
            raise RasterError(f"expected 2 Sentinel-1 bands (VV, VH), found {b.count}", s1)
        mpix = a.width * a.height / 1e6
    device = inference_device(cfg.run.accelerator)
    task = load_task(cfg.checkpoint).to(device)  # type: ignore[arg-type]
    stride = task.model_config.stride
    if cfg.tile_size % stride or (cfg.tile_size + 2 * cfg.pad) % stride:
        raise ValueError(
            f"tile_size: {cfg.tile_size} and tile_size + 2 x pad must be multiples of the network "
            f"stride {stride} (e.g. --tile_size {max(stride, cfg.tile_size // stride * stride)} --pad {stride})"
        )
    run_dir = folder.open()
    out = run_dir / (cfg.output_name or f"{s2.stem}_cloudfree.tif")
    t0 = time.perf_counter()
    predict_scene(
        task,
        s2,
        s1,
        out,
        tile_size=cfg.tile_size,
        overlap=cfg.overlap,
        pad=cfg.pad,
        blend=cfg.blend,
        last_tile=cfg.last_tile,
        out_dtype=cfg.out_dtype,
        with_confidence=cfg.with_confidence,
        progress=cfg.run.progress,
        batch_size=cfg.batch_size,
        cog=cfg.cog,
        device=device,
    )
    seconds = time.perf_counter() - t0
    return folder.finish(
        paths={"prediction": out, "checkpoint": cfg.checkpoint, "s2": s2, "s1": s1},
        device=str(device),
        extra={"megapixels": mpix, "mpx_per_s": mpix / max(seconds, 1e-9)},
    )
