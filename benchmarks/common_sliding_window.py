"""Sliding-window inference with a real network: naive whole-image forward vs one tile vs N tiles per call.

Side by side in one run, each case in a fresh subprocess (peak resident memory = ``VmHWM`` minus the
resident memory once the model is built, via ``_memory.proc_status_mib``), 1 torch thread each; both
wall time and the process's CPU time are reported (on a shared machine the CPU time is the stable
figure: with 1 thread it is the work done, whatever the other jobs take):

* **naive**: read the whole 4-band raster, one forward of the whole image, write the output;
* **one-tile**: :func:`eo_common.raster.sliding_window_predict` with a per-tile ``predict_fn`` (the
  path every package used before batching);
* **batched**: the same call with :func:`eo_common.raster.torch_batch_predictor` and
  ``batch_size`` (``--batch``, default ``auto``: 2 tiles on the CPU, from free memory on a GPU).

Model: ``smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=2)`` (random weights;
speed does not depend on them), 256 px tiles, 32 px overlap, cosine blending. A second table sweeps
the batched path from 1024^2 to ``--sweep`` (default 8192^2) to show that its memory stays flat
(the naive path would need the whole image's activations: it is run only up to ``--naive_max``).

On a GPU (``--device cuda``) the batched rows also report tiles/s.

Run:  uv run python benchmarks/common_sliding_window.py [--sizes 1024 2048] [--sweep 1024 4096 8192]
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
import rasterio
from _memory import proc_status_mib
from affine import Affine
from rasterio.windows import Window

BANDS, OUT, TILE, OVERLAP = 4, 2, 256, 32


def make_source(path: Path, size: int, seed: int = 0) -> Path:
    """A smooth 4-band uint16 raster written block row by block row (never whole in memory)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.002, 0.02, size=(BANDS, 2))
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": BANDS, "dtype": "uint16",
        "crs": "EPSG:32633", "transform": Affine(10, 0, 399960, 0, -10, 5300040),
        "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256, "nodata": 0,
    }  # fmt: skip
    cols = np.arange(size)
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, 256):
            rows = np.arange(r0, min(r0 + 256, size))[:, None]
            block = np.stack(
                [2000 + 1500 * np.sin(fy * rows) * np.cos(fx * cols) for fy, fx in freqs]
            ) + rng.normal(0, 30, (BANDS, len(rows), size))
            dst.write(block.clip(1, 65535).astype(np.uint16), window=Window(0, r0, size, len(rows)))
    return path


def child(mode: str, src: str, out: str, batch: str, device: str) -> None:
    import segmentation_models_pytorch as smp
    import torch
    from eo_common.raster import (
        read_raster,
        sliding_window_predict,
        torch_batch_predictor,
        write_raster,
    )

    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=BANDS, classes=OUT)
    net = net.eval().to(device)
    scale = 1.0 / 4000.0
    with torch.inference_mode():  # warm-up outside the measured part
        net(torch.zeros(1, BANDS, TILE, TILE, device=device))
    base = proc_status_mib("VmRSS")
    n_tiles = None
    cpu0 = time.process_time()
    start = time.perf_counter()
    if mode == "naive":
        r = read_raster(src)
        x = torch.from_numpy(r.array.astype(np.float32) * scale)[None].to(device)
        with torch.inference_mode():
            y = net(x)[0].float().cpu().numpy()
        write_raster(out, y, crs=r.crs, transform=r.transform, dtype="float32")
    else:
        batched = torch_batch_predictor(net, device)
        if mode == "one-tile":

            def fn(tile: np.ndarray) -> np.ndarray:
                return batched(tile[None] * scale)[0]

            kw = {}
        else:

            def fn(tiles: np.ndarray) -> np.ndarray:
                return batched(tiles * scale)

            fn.batched = True
            kw = {"batch_size": "auto" if batch == "auto" else int(batch), "device": device}
        sliding_window_predict(
            src, out, fn, out_bands=OUT, tile_size=TILE, overlap=OVERLAP, progress=False, **kw
        )
        from eo_common.raster import tile_offsets

        with rasterio.open(src) as ds:
            n_tiles = len(tile_offsets(ds.height, TILE, OVERLAP)) * len(
                tile_offsets(ds.width, TILE, OVERLAP)
            )
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": time.process_time() - cpu0,
                "peak_mb": proc_status_mib("VmHWM") - base,
                "tiles": n_tiles,
            }
        )
    )


def run(mode: str, src: Path, out: Path, batch: str, device: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(src), str(out), batch, device],
        capture_output=True,
        text=True,
        env=env,
    )
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr else "failed"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--sweep", type=int, nargs="*", default=[1024, 4096, 8192])
    parser.add_argument("--naive_max", type=int, default=2048)
    parser.add_argument("--batch", default="auto", help="tiles per call: an integer or auto")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case (best time kept)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    print(f"{os.cpu_count()} CPU cores visible, device {args.device}, load average {loadavg()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="sliding_bench_") as tmp:
        tmp = Path(tmp)
        for size in sorted(set(args.sizes) | set(args.sweep)):
            src = make_source(tmp / f"src_{size}.tif", size)
            modes = ["batched"]
            if size in args.sizes:
                modes = (["naive"] if size <= args.naive_max else []) + ["one-tile", "batched"]
            for mode in modes:
                best = None
                for _ in range(args.repeats):
                    rec = run(mode, src, tmp / "out.tif", args.batch, args.device)
                    if best is None or rec.get("cpu_seconds", 1e9) < best.get("cpu_seconds", 1e9):
                        best = rec
                best.update(size=size, mode=mode)
                rows.append(best)
                print(json.dumps(best), f"load {loadavg()}", flush=True)
            src.unlink()
    print(f"\nload average at end {loadavg()}")
    print(f"\nU-Net resnet18, {BANDS} bands in, {OUT} out, tile {TILE}, overlap {OVERLAP}, "
          f"batch {args.batch}, 1 torch thread, {args.device}\n")  # fmt: skip
    print("| raster | path | wall s | CPU s | CPU Mpx/s | tiles/s (CPU) | wall / naive | CPU / naive"
          " | peak MiB above model |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['size']}^2 | {r['mode']} | failed: {r['error']} | | | | |")
            continue
        naive = next(
            (q for q in rows if q["size"] == r["size"] and q["mode"] == "naive" and "seconds" in q),
            None,
        )
        wall = f"{r['seconds'] / naive['seconds']:.2f}x" if naive else "-"
        cpu = f"{r['cpu_seconds'] / naive['cpu_seconds']:.2f}x" if naive else "-"
        tps = f"{r['tiles'] / r['cpu_seconds']:.2f}" if r.get("tiles") else "-"
        print(
            f"| {r['size']}^2 | {r['mode']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['size'] ** 2 / 1e6 / r['cpu_seconds']:.3f} | {tps} | {wall} | {cpu} | "
            f"{r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
