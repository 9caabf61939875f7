"""Benchmark: tiled dense CRF (risk_mapping.crf.crf_raster) on 3-class rasters of growing size.

Shows, side by side in one run:

* peak memory stays flat from 2048^2 to 8192^2 pixels (bounded by the CRF tile size, not the raster):
  each size runs in a fresh subprocess that reports its own peak RSS (``VmHWM``) and, with workers,
  the largest worker's (``RUSAGE_CHILDREN``; forked workers count pages shared with their parent);
* time grows linearly with the number of pixels (seconds per megapixel per size);
* worker processes speed it up (1 vs 2 workers on the same raster);
* against one whole-image ``dense_crf`` call (read everything, one CRF, argmax; up to
  ``--whole_max``): time ratio tiled / whole, peak memory of each, and the share of pixels whose label
  agrees. The tiles are :func:`risk_mapping.crf.balanced_offsets` (at most ``--tile`` px, at least
  ``--overlap`` px overlap, spread evenly).

Inputs are synthetic but structured (smooth class regions with noise, an image whose edges follow the
regions), written strip by strip so the generator itself never holds a whole raster.

Run:  .venv/bin/python benchmarks/risk_crf.py [--sizes 2048 4096 8192] [--tile 1024] [--workers 2]
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


def make_inputs(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """probs.tif (3 x size x size float32) and stack.tif (3 x size x size uint8), written in strips."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    transform = Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0)
    common = dict(
        driver="GTiff",
        width=size,
        height=size,
        crs="EPSG:32633",
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        BIGTIFF="IF_SAFER",
    )
    probs_path, stack_path = folder / f"probs_{size}.tif", folder / f"stack_{size}.tif"
    cols = np.arange(size, dtype=np.float32)
    with (
        rasterio.open(probs_path, "w", count=3, dtype="float32", nodata=-9999.0, **common) as p,
        rasterio.open(stack_path, "w", count=3, dtype="uint8", **common) as s,
    ):
        for r0 in range(0, size, 256):
            rows = np.arange(r0, r0 + 256, dtype=np.float32)[:, None]
            field = (
                np.sin(rows / 97.0)
                + np.cos(cols[None] / 131.0)
                + 0.5 * np.sin((rows + cols[None]) / 53.0)
            )
            truth = np.digitize(field, [-0.5, 0.6])
            logits = np.eye(3, dtype=np.float32)[truth].transpose(2, 0, 1) * 1.5
            logits += rng.normal(0, 0.8, logits.shape).astype(np.float32)
            probs = np.exp(logits) / np.exp(logits).sum(0)
            image = np.clip(truth * 80 + 40 + rng.normal(0, 10, truth.shape), 0, 255).astype(
                np.uint8
            )
            window = Window(0, r0, size, 256)
            p.write(probs.astype(np.float32), window=window)
            s.write(np.repeat(image[None], 3, 0), window=window)
    return probs_path, stack_path


def whole_child(size: int, folder: str) -> None:
    """One dense_crf call on the whole raster in this (fresh) process; labels saved for comparison."""
    import resource

    import rasterio
    from risk_mapping.config import CRFConfig
    from risk_mapping.crf import dense_crf, image_stretch, stretch_to_uint8

    folder_p = Path(folder)
    probs_path, stack_path = folder_p / f"probs_{size}.tif", folder_p / f"stack_{size}.tif"
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = own.ru_utime + own.ru_stime
    start = time.perf_counter()
    with rasterio.open(probs_path) as src:
        probs = src.read().astype(np.float32)
    with rasterio.open(stack_path) as src:
        image = stretch_to_uint8(src.read([1, 2, 3]), image_stretch(stack_path, [0, 1, 2]))
    q = dense_crf(probs, image, CRFConfig(iterations=5))
    labels = np.argmax(q, axis=0).astype(np.uint8)
    seconds = time.perf_counter() - start
    np.save(folder_p / f"whole_{size}.npy", labels)
    own = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = own.ru_utime + own.ru_stime - cpu0
    print(
        json.dumps(
            {"seconds": seconds, "cpu_seconds": cpu_s, "peak_rss_mb": proc_status_mib("VmHWM")}
        )
    )


def child(size: int, folder: str, tile: int, overlap: int, workers: int) -> None:
    """Run one CRF in this (fresh) process and print a JSON line with time and peak memory."""
    import resource

    from risk_mapping.config import CRFConfig
    from risk_mapping.crf import crf_raster

    folder_p = Path(folder)
    probs, stack = folder_p / f"probs_{size}.tif", folder_p / f"stack_{size}.tif"
    base_rss = proc_status_mib("VmHWM")
    cfg = CRFConfig(iterations=5, tile_size=tile, overlap=overlap, workers=workers)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = r0.ru_utime + r0.ru_stime
    start = time.perf_counter()
    crf_raster(
        probs,
        stack,
        folder_p / f"crf_{size}_{workers}.tif",
        folder_p / f"rank_{size}_{workers}.tif",
        cfg,
        progress=False,
    )
    seconds = time.perf_counter() - start
    self_mb = proc_status_mib("VmHWM")
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    child_mb = kids.ru_maxrss / 1024
    cpu_s = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime - cpu0
    print(
        json.dumps(
            {
                "size": size,
                "workers": workers,
                "seconds": seconds,
                "peak_rss_parent_mb": self_mb,
                "rss_after_imports_mb": base_rss,
                "peak_rss_largest_worker_mb": child_mb if workers > 1 else None,
                "cpu_seconds": cpu_s,
                "cores_used": cpu_s / seconds,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192])
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--overlap", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--speedup_size", type=int, default=4096, help="size for the 1-vs-N worker comparison"
    )
    parser.add_argument("--whole_max", type=int, default=4096,
                        help="largest size for the whole-image comparison (0: none)")  # fmt: skip
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--whole_child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.whole_child:
        whole_child(int(args.whole_child[0]), args.whole_child[1])
        return
    if args.child:
        size, folder, tile, overlap, workers = args.child
        child(int(size), folder, int(tile), int(overlap), int(workers))
        return
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open("/proc/loadavg") as f:
        print("load average at start", " ".join(f.read().split()[:3]), flush=True)
    results, whole = [], {}
    with tempfile.TemporaryDirectory(prefix="risk_crf_bench_") as tmp:
        runs = [(s, 1) for s in args.sizes]
        if args.speedup_size and args.workers > 1:
            runs.append((args.speedup_size, args.workers))
        made = set()
        for size, workers in runs:
            if size not in made:
                t0 = time.perf_counter()
                make_inputs(Path(tmp), size)
                made.add(size)
                print(f"inputs {size}x{size}: {time.perf_counter() - t0:.1f} s", flush=True)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(size),
                    tmp,
                    str(args.tile),
                    str(args.overlap),
                    str(workers),
                ],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            rec["megapixels"] = size * size / 1e6
            rec["s_per_mp"] = rec["seconds"] / rec["megapixels"]
            results.append(rec)
            print(json.dumps(rec), flush=True)
            if workers == 1 and size <= args.whole_max:
                out = subprocess.run(
                    [sys.executable, __file__, "--whole_child", str(size), tmp],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=True,
                )
                w = json.loads(out.stdout.strip().splitlines()[-1])
                import rasterio

                with rasterio.open(Path(tmp) / f"crf_{size}_1.tif") as src:
                    tiled_labels = src.read(1)
                w["agree"] = float(
                    (tiled_labels == np.load(Path(tmp) / f"whole_{size}.npy")).mean()
                )
                whole[size] = w
                print(json.dumps({"whole": size, **w}), flush=True)
    with open("/proc/loadavg") as f:
        print("load average at end", " ".join(f.read().split()[:3]))
    print()
    print(f"dense CRF, 3 classes, 5 iterations, tile {args.tile} px, overlap {args.overlap} px")
    print(
        f"{'size':>6} {'MP':>6} {'workers':>7} {'seconds':>8} {'s/MP':>6} {'cores used':>10} {'peak RSS parent MB':>18} {'largest worker MB':>17}"
    )
    for r in results:
        worker = (
            "-"
            if r["peak_rss_largest_worker_mb"] is None
            else f"{r['peak_rss_largest_worker_mb']:.0f}"
        )
        print(
            f"{r['size']:>6} {r['megapixels']:>6.1f} {r['workers']:>7} {r['seconds']:>8.1f} {r['s_per_mp']:>6.2f} {r['cores_used']:>10.2f} "
            f"{r['peak_rss_parent_mb']:>18.0f} {worker:>17}"
        )
    serial = {r["size"]: r for r in results if r["workers"] == 1}
    small, big = min(serial), max(serial)
    print(
        f"\npeak memory ratio {big}^2 / {small}^2 (pixels x{big * big / small / small:.0f}): "
        f"{serial[big]['peak_rss_parent_mb'] / serial[small]['peak_rss_parent_mb']:.2f}"
    )
    print(
        f"time ratio {big}^2 / {small}^2: {serial[big]['seconds'] / serial[small]['seconds']:.1f} "
        f"(linear would be {big * big / small / small:.0f})"
    )
    for par in [r for r in results if r["workers"] > 1]:
        print(
            f"speed-up with {par['workers']} workers at {par['size']}^2: "
            f"{serial[par['size']]['seconds'] / par['seconds']:.2f}x"
        )
    if whole:
        print("\n| size | tiled s (CPU s) | whole-image s (CPU s) | tiled / whole, wall | tiled / whole,"
              " CPU | tiled peak RSS MB | whole peak RSS MB | labels equal |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for size, w in whole.items():
            t = serial[size]
            print(
                f"| {size}^2 | {t['seconds']:.1f} ({t['cpu_seconds']:.1f}) | {w['seconds']:.1f} "
                f"({w['cpu_seconds']:.1f}) | {t['seconds'] / w['seconds']:.2f}x | "
                f"{t['cpu_seconds'] / w['cpu_seconds']:.2f}x | {t['peak_rss_parent_mb']:.0f} | "
                f"{w['peak_rss_mb']:.0f} | {100 * w['agree']:.4f} % |"
            )


if __name__ == "__main__":
    main()
