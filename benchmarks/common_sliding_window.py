"""Sliding-window inference with a real network: naive whole-image forward vs one tile vs N tiles per call.

Side by side in one run, each case in a fresh subprocess (peak resident memory = ``VmHWM`` minus the
resident memory once the model is built, via ``_memory.proc_status_mib``), 1 torch thread each; both
wall time and the process's CPU time are reported (on a shared machine the CPU time is the stable
figure: with 1 thread it is the work done, whatever the other jobs take):

* **naive**: read the whole 4-band raster, one forward of the whole image, write the output;
* **naive-cl**: the same with the network and the image in channels-last memory format (the
  like-for-like reference for the batched path, which converts both);
* **one-tile**: :func:`eo_common.raster.sliding_window_predict` with a per-tile ``predict_fn`` in
  the default memory format (the path every package used before batching);
* **batched-square**: the same call with :func:`eo_common.raster.torch_batch_predictor`
  (channels-last, its default) and ``batch_size`` (``--batch``, default ``auto``: 2 tiles on the
  CPU, from free memory on a GPU), square tiles (``stretch=0``, ``--last_tile shift``);
* **batched**: the same with the last tile of each row and column stretched to the border
  (``stretch=32``): what cr-predict, glacier-predict and risk-pipeline run by default.

Model: ``smp.Unet("resnet18", encoder_weights=None, in_channels=4, classes=2)`` (random weights;
speed does not depend on them), ``--tile`` px tiles (256), ``--overlap`` px overlap (32), cosine
blending. The tiled paths compute every overlap twice: at 1024^2, 256 px square tiles with 32 px
overlap need 5 x 5 tiles, 1.56x the raster's pixels; stretched, 4 x 4 tiles, 1.20x (the table's "px
computed" column: the pixels the network sees over the raster's). A second table sweeps
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

BANDS, OUT = 4, 2


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


def child(mode: str, src: str, out: str, batch: str, device: str, tile: str, overlap: str) -> None:
    import segmentation_models_pytorch as smp
    import torch
    from eo_common.raster import (
        read_raster,
        sliding_window_predict,
        torch_batch_predictor,
        write_raster,
    )

    tile, overlap = int(tile), int(overlap)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=BANDS, classes=OUT)
    net = net.eval().to(device)
    fmt = torch.contiguous_format if mode in ("naive", "one-tile") else torch.channels_last
    net = net.to(memory_format=fmt)
    scale = 1.0 / 4000.0
    with torch.inference_mode():  # warm-up outside the measured part
        net(torch.zeros(1, BANDS, tile, tile, device=device).contiguous(memory_format=fmt))
    base = proc_status_mib("VmRSS")
    n_tiles = px_computed = None
    stretch = 32 if mode == "batched" else 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    if mode.startswith("naive"):
        r = read_raster(src)
        x = torch.from_numpy(r.array.astype(np.float32) * scale)[None].to(device)
        x = x.contiguous(memory_format=fmt)
        with torch.inference_mode():
            y = net(x)[0].float().cpu().numpy()
        write_raster(out, y, crs=r.crs, transform=r.transform, dtype="float32")
    else:
        batched = torch_batch_predictor(net, device, channels_last=mode != "one-tile")
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
            src, out, fn, out_bands=OUT, tile_size=tile, overlap=overlap, progress=False,
            stretch=stretch, **kw,
        )  # fmt: skip
        from eo_common.raster import padded_tile_size, tile_windows

        with rasterio.open(src) as ds:
            windows = tile_windows(ds.height, ds.width, tile, overlap, stretch)
            n_tiles = len(windows)
            px_computed = sum(
                padded_tile_size(w.height, tile, stretch) * padded_tile_size(w.width, tile, stretch)
                for w in windows
            ) / (ds.height * ds.width)
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
                "px_computed": px_computed,
            }
        )
    )


def run(mode: str, src: Path, out: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    child_args = [mode, str(src), str(out), args.batch, args.device, args.tile, args.overlap]
    res = subprocess.run(
        [sys.executable, __file__, "--child", *map(str, child_args)],
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
    parser.add_argument("--tile", type=int, default=256, help="tile side, px")
    parser.add_argument("--overlap", type=int, default=32, help="overlap of neighbouring tiles, px")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
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
                naive = ["naive", "naive-cl"] if size <= args.naive_max else []
                modes = [*naive, "one-tile", "batched-square", "batched"]
            for mode in modes:
                best = None
                for _ in range(args.repeats):
                    rec = run(mode, src, tmp / "out.tif", args)
                    if best is None or rec.get("cpu_seconds", 1e9) < best.get("cpu_seconds", 1e9):
                        best = rec
                best.update(size=size, mode=mode)
                rows.append(best)
                print(json.dumps(best), f"load {loadavg()}", flush=True)
            src.unlink()
    print(f"\nload average at end {loadavg()}")
    print(f"\nU-Net resnet18, {BANDS} bands in, {OUT} out, tile {args.tile}, overlap {args.overlap}, "
          f"batch {args.batch}, 1 torch thread, {args.device}\n")  # fmt: skip
    print("| raster | path | px computed | wall s | CPU s | CPU Mpx/s | tiles/s (CPU) | wall / naive"
          " | CPU / naive | CPU / naive-cl | peak MiB above model |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")

    def ref(size: int, mode: str) -> dict | None:
        return next(
            (q for q in rows if q["size"] == size and q["mode"] == mode and "seconds" in q), None
        )

    for r in rows:
        if "error" in r:
            print(f"| {r['size']}^2 | {r['mode']} | failed: {r['error']} | | | | | | | | |")
            continue
        naive, naive_cl = ref(r["size"], "naive"), ref(r["size"], "naive-cl")
        wall = f"{r['seconds'] / naive['seconds']:.2f}x" if naive else "-"
        cpu = f"{r['cpu_seconds'] / naive['cpu_seconds']:.2f}x" if naive else "-"
        cpu_cl = f"{r['cpu_seconds'] / naive_cl['cpu_seconds']:.2f}x" if naive_cl else "-"
        tps = f"{r['tiles'] / r['cpu_seconds']:.2f}" if r.get("tiles") else "-"
        px = f"{r['px_computed']:.2f}x" if r.get("px_computed") else "1x"
        print(
            f"| {r['size']}^2 | {r['mode']} | {px} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
            f"{r['size'] ** 2 / 1e6 / r['cpu_seconds']:.3f} | {tps} | {wall} | {cpu} | {cpu_cl} | "
            f"{r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
