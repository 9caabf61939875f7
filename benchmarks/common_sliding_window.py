"""Throughput and peak memory of eo_common.raster.sliding_window_predict as the raster grows.

Measures, side by side in one run, on synthetic 4-band uint16 GeoTIFFs (smooth fields, DEFLATE):

* square rasters 1024^2, 2048^2, 4096^2: megapixels per second and the tracemalloc peak (Python
  objects and numpy buffers; GDAL's own block cache is C memory and not included);
* tall rasters of a fixed width (1024 x 1024, 4096, 16384 rows), where the memory bound says the peak
  must stay flat, since the predictor only holds one tile row band of the width;
* for reference, the size of the whole input raster as float32 (what reading it at once would take)
  and the peak of the in-memory path (read_raster + predict_array_tiled) on the smaller sizes.

The predict_fn is cheap on purpose (an NDVI-like normalised difference plus the band mean, 2 output
bands), so the numbers show the cost of the tiling machinery, reads, blending and writes.

Run:  .venv/bin/python benchmarks/common_sliding_window.py [--sizes 1024 2048 4096] [--tile 256]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import tempfile
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from eo_common.raster import predict_array_tiled, read_raster, sliding_window_predict
from rasterio.windows import Window

BANDS = 4


def make_source(path: Path, height: int, width: int, seed: int = 0) -> Path:
    """Write a smooth 4-band uint16 raster block-row by block-row (never whole in memory)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.002, 0.02, size=(BANDS, 2))
    profile = {
        "driver": "GTiff", "height": height, "width": width, "count": BANDS, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10, 0, 399960, 0, -10, 5300040),
        "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256, "nodata": 0,
    }  # fmt: skip
    cols = np.arange(width)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, height, 256):
            rows = np.arange(r0, min(r0 + 256, height))[:, None]
            block = np.stack(
                [
                    2000 + 1500 * np.sin(fy * rows) * np.cos(fx * cols)
                    + rng.normal(0, 30, (len(rows), width))
                    for fy, fx in freqs
                ]
            )  # fmt: skip
            dst.write(
                block.clip(1, 65535).astype(np.uint16), window=Window(0, r0, width, len(rows))
            )
    return path


def cheap_predict(tile: np.ndarray) -> np.ndarray:
    """(4, t, t) -> (2, t, t): normalised difference of bands 4 and 3, and the band mean."""
    nd = (tile[3] - tile[2]) / (tile[3] + tile[2] + 1e-6)
    return np.stack([nd, tile.mean(axis=0)])


@dataclass
class Row:
    height: int
    width: int
    seconds: float
    peak_mb: float
    whole_mb: float
    in_memory_peak_mb: float | None = None

    @property
    def megapixels(self) -> float:
        return self.height * self.width / 1e6


def run_one(
    src: Path, out: Path, tile: int, overlap: int, in_memory: bool
) -> tuple[float, float, float | None]:
    kwargs = dict(out_bands=2, tile_size=tile, overlap=overlap, blend="cosine", progress=False)
    gc.collect()
    t0 = time.perf_counter()
    sliding_window_predict(src, out, cheap_predict, **kwargs)
    seconds = time.perf_counter() - t0
    gc.collect()
    tracemalloc.start()
    sliding_window_predict(src, out, cheap_predict, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    in_memory_peak = None
    if in_memory:
        gc.collect()
        tracemalloc.start()
        array = read_raster(src).array
        predict_array_tiled(array, cheap_predict, **kwargs)
        in_memory_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
        del array
    return seconds, peak, in_memory_peak


def table(title: str, rows: list[Row], tile: int) -> str:
    base = rows[0]
    lines = [
        f"### {title}",
        "",
        "| raster (rows x cols) | Mpx | time s | Mpx/s | peak MB (streaming) | peak / smallest | "
        "whole input as float32 MB | pixels / smallest | in-memory path peak MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        in_mem = f"{r.in_memory_peak_mb:.1f}" if r.in_memory_peak_mb is not None else "not run"
        lines.append(
            f"| {r.height} x {r.width} | {r.megapixels:.1f} | {r.seconds:.2f} | "
            f"{r.megapixels / r.seconds:.2f} | {r.peak_mb:.1f} | {r.peak_mb / base.peak_mb:.2f}x | "
            f"{r.whole_mb:.0f} | {r.megapixels / base.megapixels:.0f}x | {in_mem} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--tall", type=int, nargs="+", default=[1024, 4096, 16384],
                        help="heights of the fixed-width (1024) rasters")  # fmt: skip
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--in_memory_max", type=int, default=2048,
                        help="run the in-memory reference only up to this side")  # fmt: skip
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, shared with other jobs"
    )
    print(
        f"tile {args.tile}, overlap {args.overlap}, cosine blend, 4 uint16 bands in, 2 float32 bands out\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        square, tall = [], []
        for side in args.sizes:
            src = make_source(tmp / f"sq{side}.tif", side, side)
            s, peak, mem = run_one(
                src, tmp / "out.tif", args.tile, args.overlap, side <= args.in_memory_max
            )
            square.append(Row(side, side, s, peak, BANDS * side * side * 4 / 2**20, mem))
            src.unlink()
            print(f"  square {side}: {s:.2f} s, peak {peak:.1f} MB", flush=True)
        for height in args.tall:
            src = make_source(tmp / f"tall{height}.tif", height, 1024)
            s, peak, mem = run_one(
                src, tmp / "out.tif", args.tile, args.overlap, height <= args.in_memory_max
            )
            tall.append(Row(height, 1024, s, peak, BANDS * height * 1024 * 4 / 2**20, mem))
            src.unlink()
            print(f"  tall {height}: {s:.2f} s, peak {peak:.1f} MB", flush=True)
    print()
    print(table("Square rasters: memory grows with the width only", square, args.tile))
    print()
    print(table("Fixed width 1024, growing height: memory flat", tall, args.tile))


if __name__ == "__main__":
    main()
