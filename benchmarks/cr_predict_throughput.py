"""cr-predict inference speed (megapixels/s) and memory as the scene grows, measured side by side.

A checkpoint of the default network (6.14 M parameters; random weights, speed does not depend on
them) is run through :func:`cloud_removal.predict.predict_scene` (VRT stack + eo_common sliding
window, 256 px tiles, 32 px overlap, cosine blending) on synthetic georeferenced scenes:

* a 2048 x 2048 scene (the issue's size): megapixels/s;
* scenes of one width and growing height: peak resident memory stays flat because rows are streamed.

Each scene runs in its own subprocess; peak memory = VmHWM minus the resident memory just before the
prediction started (model loaded).

Usage::

    python benchmarks/cr_predict_throughput.py --threads 1 --out runs/bench/cr_predict.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _memory import proc_status_mib


def _make_inputs(folder: Path, h: int, w: int) -> tuple[Path, Path, Path]:
    import lightning
    import numpy as np
    import torch
    from affine import Affine
    from cloud_removal.task import CloudRemovalTask
    from eo_common.raster import write_raster

    rng = np.random.default_rng(0)
    t = Affine(10.0, 0, 500000.0, 0, -10.0, 4400000.0)
    s2 = write_raster(
        folder / "s2.tif",
        rng.integers(0, 6000, (13, h, w), dtype=np.uint16),
        crs="EPSG:32633",
        transform=t,
    )
    s1 = write_raster(
        folder / "s1.tif",
        rng.uniform(-25, 0, (2, h, w)).astype(np.float32),
        crs="EPSG:32633",
        transform=t,
    )
    ckpt = folder / "model.ckpt"
    if not ckpt.exists():
        task = CloudRemovalTask()
        torch.save(
            {
                "state_dict": task.state_dict(),
                "hyper_parameters": dict(task.hparams),
                "pytorch-lightning_version": lightning.__version__,
            },
            ckpt,
        )
    return s2, s1, ckpt


def worker(h: int, w: int, tile: int, overlap: int, threads: int, folder: Path) -> dict:
    import torch
    from cloud_removal.evaluate import load_task
    from cloud_removal.predict import predict_scene

    torch.set_num_threads(threads)
    s2, s1, ckpt = _make_inputs(folder, h, w)
    task = load_task(ckpt)  # imports and model build outside the measured part
    base = proc_status_mib("VmRSS")
    t0 = time.perf_counter()
    predict_scene(task, s2, s1, folder / "out.tif", tile_size=tile, overlap=overlap, progress=False)
    seconds = time.perf_counter() - t0
    return {
        "height": h,
        "width": w,
        "seconds": seconds,
        "mpx_per_s": h * w / 1e6 / seconds,
        "peak_mem_mib": proc_status_mib("VmHWM") - base,
        "threads": threads,
        "tile": tile,
        "overlap": overlap,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--scenes",
        default="512x512,1024x512,2048x512,2048x2048",
        help="HxW list; the first ones share a width to show flat memory",
    )
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--overlap", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/cr_predict_throughput.json"))
    ap.add_argument("--worker", nargs=3, metavar=("H", "W", "DIR"), help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.worker:
        res = worker(
            int(ns.worker[0]),
            int(ns.worker[1]),
            ns.tile,
            ns.overlap,
            ns.threads,
            Path(ns.worker[2]),
        )
        print("RESULT " + json.dumps(res))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="cr_bench_") as tmp:
        for spec in ns.scenes.split(","):
            h, w = (int(v) for v in spec.lower().split("x"))
            folder = Path(tmp) / spec
            folder.mkdir()
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                str(h),
                str(w),
                str(folder),
                "--tile",
                str(ns.tile),
                "--overlap",
                str(ns.overlap),
                "--threads",
                str(ns.threads),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(
                    f"{spec}: FAILED {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True
                )
                continue
            r = json.loads(line[0][7:])
            results.append(r)
            print(
                f"{h}x{w}: {r['mpx_per_s']:.4f} Mpx/s ({r['seconds']:.1f} s), peak +{r['peak_mem_mib']:.0f} MiB",
                flush=True,
            )
    print(
        "\n| scene (H x W) | Mpx/s | seconds | peak memory (MiB above model loaded) |\n|---|---:|---:|---:|"
    )
    for r in results:
        print(
            f"| {r['height']} x {r['width']} | {r['mpx_per_s']:.4f} | {r['seconds']:.1f} | {r['peak_mem_mib']:.0f} |"
        )
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(
        json.dumps(
            {"results": results, "args": {k: v for k, v in vars(ns).items() if k != "out"}},
            indent=2,
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
