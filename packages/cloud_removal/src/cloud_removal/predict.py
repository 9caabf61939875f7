"""``cr-predict``: cloud-free GeoTIFF from a cloudy S2 GeoTIFF + S1 GeoTIFF of any size.

The two inputs must share one grid (CRS, transform, size; checked, errors name the files): a 13-band
Sentinel-2 L1C GeoTIFF in DN (reflectance x 10000, band order B01..B12 with B8A after B08 and B10
included) and a 2-band Sentinel-1 GeoTIFF (VV, VH in dB). They are stacked into a 15-band virtual
raster (a GDAL VRT file, nothing copied) and run through :func:`eo_common.raster.sliding_window_predict`:
tiles of ``--tile_size`` with ``--overlap`` (each padded by ``--pad`` reflected pixels of context that
are cropped off again), blended with cosine ramps, read and written one tile row
at a time, so memory stays flat however large the scene is. Each tile is normalised with the run's
convention, predicted, and mapped back to DN. The output keeps the input's CRS and transform:
13 bands uint16 DN (``--out_dtype float32`` for unrounded values), plus the cloud confidence as a
14th band with ``--with_confidence`` (then float32).

Example::

    cr-predict --checkpoint runs/cloud_removal/checkpoints/best.ckpt \\
        --s2 scene_s2_cloudy.tif --s1 scene_s1.tif --out scene_cloudfree.tif --tile_size 256 --overlap 32
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import rasterio
import torch
from eo_common.normalize import denormalize_s2, fill_nan, normalize_s1, normalize_s2
from eo_common.raster import RasterError, check_same_grid, sliding_window_predict

from .evaluate import load_task
from .task import CloudRemovalTask

__all__ = ["PredictConfig", "predict_scene", "make_predict_fn", "write_stack_vrt", "main"]


@dataclass
class PredictConfig:
    """``cr-predict`` settings (one field per flag)."""

    checkpoint: Path
    s2: Path
    s1: Path
    out: Path
    tile_size: int = 256
    overlap: int = 32
    blend: str = "cosine"
    out_dtype: str = "uint16"
    with_confidence: bool = False
    pad: int = 16
    progress: bool = True


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


def make_predict_fn(task: CloudRemovalTask, with_confidence: bool = False, pad: int = 0):
    """``(15, t, t)`` float32 tile (13 S2 DN + 2 S1 dB) -> ``(13 or 14, t, t)`` float32 DN (+ confidence).

    ``pad`` pixels of reflected context are added around each tile before the network and cropped
    afterwards, so zero padding inside the network does not darken the scene's outer edges.
    """
    convention = task.hparams.get("convention", "glf-cr")

    def predict_fn(tile: np.ndarray) -> np.ndarray:
        if pad:
            tile = np.pad(tile, ((0, 0), (pad, pad), (pad, pad)), mode="reflect")
        s2 = fill_nan(tile[:13].astype(np.float32))
        s1 = fill_nan(tile[13:15].astype(np.float32))
        optical = torch.from_numpy(normalize_s2(s2, convention))[None]
        sar = torch.from_numpy(normalize_s1(s1, convention))[None]
        with torch.no_grad():
            out = task(optical, sar)
        r = task.data_range
        dn = denormalize_s2(out.prediction[0].clamp(0, r).numpy(), convention)
        if with_confidence:
            conf = (
                out.confidence[0].numpy()
                if out.confidence is not None
                else np.full_like(dn[:1], np.nan)
            )
            dn = np.concatenate([dn, conf], axis=0)
        if pad:
            dn = dn[:, pad:-pad, pad:-pad]
        return dn

    return predict_fn


def predict_scene(cfg: PredictConfig) -> Path:
    """Run sliding-window prediction; returns the output path (written atomically)."""
    for p in (cfg.s2, cfg.s1):
        if not Path(p).is_file():
            raise FileNotFoundError(f"{p}: input GeoTIFF not found")
    check_same_grid([cfg.s2, cfg.s1])
    task = load_task(cfg.checkpoint)
    stride = task.model_config.stride
    if cfg.tile_size % stride:
        raise ValueError(
            f"--tile_size {cfg.tile_size} must be divisible by the network stride {stride}"
        )
    if cfg.pad < 0 or (cfg.tile_size + 2 * cfg.pad) % stride or cfg.pad >= cfg.tile_size:
        raise ValueError(
            f"--pad {cfg.pad}: tile_size + 2 x pad must be divisible by the network stride {stride} "
            f"and pad smaller than the tile (e.g. --pad {stride})"
        )
    if not 0 <= cfg.overlap < cfg.tile_size:
        raise ValueError(f"--overlap must be in [0, tile_size), got {cfg.overlap}")
    out_dtype = "float32" if cfg.with_confidence else cfg.out_dtype
    with tempfile.TemporaryDirectory(prefix="cr_predict_") as tmp:
        vrt = write_stack_vrt(Path(cfg.s2), Path(cfg.s1), Path(tmp) / "stack.vrt")
        return sliding_window_predict(
            vrt,
            cfg.out,
            make_predict_fn(task, cfg.with_confidence, cfg.pad),
            out_bands=14 if cfg.with_confidence else 13,
            tile_size=cfg.tile_size,
            overlap=cfg.overlap,
            blend=cfg.blend,
            out_dtype=out_dtype,
            progress=cfg.progress,
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cr-predict",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--s2", type=Path, required=True, help="cloudy 13-band Sentinel-2 GeoTIFF (DN)")
    p.add_argument(
        "--s1", type=Path, required=True, help="2-band Sentinel-1 GeoTIFF (VV, VH dB), same grid"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tile_size", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--blend", default="cosine", choices=("cosine", "linear", "none"))
    p.add_argument("--out_dtype", default="uint16", choices=("uint16", "float32"))
    p.add_argument(
        "--with_confidence", action="store_true", help="append the confidence map as band 14"
    )
    p.add_argument(
        "--pad", type=int, default=16, help="reflected context pixels around each tile (default 16)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.threads:
        torch.set_num_threads(ns.threads)
    values = {k: v for k, v in vars(ns).items() if k != "threads"}
    try:
        out = predict_scene(PredictConfig(**values))
    except (ValueError, FileNotFoundError) as exc:
        print(f"cr-predict: error: {exc}", file=sys.stderr)
        return 2
    print(os.fspath(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
