"""Benchmark: sliding-window inference (risk_mapping.predict.predict_raster) throughput and memory.

Measures megapixels per second of the whole inference stage (tiles -> U-Net -> blended probabilities ->
susceptibility / class map / uncertainty GeoTIFFs) for a small U-Net (resnet18 encoder, random
weights: speed does not depend on the weights), on two raster sizes, with and without 4-flip TTA.
Each configuration runs in a fresh subprocess that reports its peak RSS, so one can see that memory
follows the tile size and the raster width, not the raster area.

Run:  .venv/bin/python benchmarks/risk_inference.py [--sizes 1024 2048] [--tile 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _memory import proc_status_mib


def make_stack(path: Path, size: int, bands: int = 6) -> None:
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="float32",
        nodata=-9999.0,
        crs="EPSG:32633",
        transform=Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0),
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 256):
            dst.write(
                rng.standard_normal((bands, 256, size)).astype(np.float32),
                window=Window(0, r0, size, 256),
            )


def child(stack: str, out: str, tile: int, overlap: int, tta: bool, last_tile: str) -> None:
    import torch

    torch.set_num_threads(1)
    from eo_common.normalize import BandStats
    from risk_mapping.config import InferenceConfig
    from risk_mapping.model import RiskNet
    from risk_mapping.predict import LoadedModel, predict_raster

    net = RiskNet(6, "resnet18", None, decoder_channels=(64, 32, 16, 16, 8)).eval()
    model = LoadedModel(net, BandStats(mean=np.zeros(6), std=np.ones(6)), {"in_channels": 6})
    cfg = InferenceConfig(tile_size=tile, overlap=overlap, tta=tta, last_tile=last_tile)
    start = time.perf_counter()
    predict_raster([model], stack, out, cfg, progress=False)
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": proc_status_mib("VmHWM"),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument(
        "--last_tile",
        nargs="+",
        default=["shift", "stretch"],
        choices=["shift", "stretch"],
        help="tile layouts to compare (inference.last_tile)",
    )
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        stack, out, tile, overlap, tta, last_tile = args.child
        child(stack, out, int(tile), int(overlap), tta == "1", last_tile)
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="risk_infer_bench_") as tmp:
        for size in args.sizes:
            stack = Path(tmp) / f"stack_{size}.tif"
            make_stack(stack, size)
            for tta in (False, True):
                for last_tile in args.last_tile:
                    res = subprocess.run(
                        [
                            sys.executable,
                            __file__,
                            "--child",
                            str(stack),
                            str(Path(tmp) / f"out_{size}_{int(tta)}_{last_tile}"),
                            str(args.tile),
                            str(args.overlap),
                            str(int(tta)),
                            last_tile,
                        ],
                        capture_output=True,
                        text=True,
                        env=env,
                        check=True,
                    )
                    rec = json.loads(res.stdout.strip().splitlines()[-1])
                    rec.update(size=size, tta=tta, last_tile=last_tile, mp=size * size / 1e6)
                    rec["mp_per_s"] = rec["mp"] / rec["seconds"]
                    rows.append(rec)
                    print(json.dumps(rec), flush=True)
    print(
        f"\nsliding-window inference, U-Net resnet18 (decoder 64-8), tile {args.tile}, overlap {args.overlap}, 1 torch thread"
    )
    print(f"{'size':>6} {'TTA':>5} {'last_tile':>9} {'seconds':>8} {'MP/s':>6} {'peak RSS MB':>11}")
    for r in rows:
        print(
            f"{r['size']:>6} {str(r['tta']):>5} {r['last_tile']:>9} {r['seconds']:>8.1f} "
            f"{r['mp_per_s']:>6.3f} {r['peak_rss_mb']:>11.0f}"
        )
    plain = [r for r in rows if not r["tta"] and r["last_tile"] == args.last_tile[-1]]
    if len(plain) > 1:
        a, b = plain[0], plain[-1]
        print(
            f"\narea x{b['mp'] / a['mp']:.0f}: time x{b['seconds'] / a['seconds']:.1f}, peak RSS x{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}"
        )
    for size in args.sizes:
        on = [r for r in rows if r["size"] == size and r["tta"]][0]
        off = [r for r in rows if r["size"] == size and not r["tta"]][0]
        print(f"TTA cost at {size}^2: x{on['seconds'] / off['seconds']:.2f} time")


if __name__ == "__main__":
    main()
