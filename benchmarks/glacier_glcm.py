"""GLCM texture: glacier_seg.texture (row blocks) vs scikit-image's per-window loop, as the scene grows.

For each size (default 512^2, 1024^2, 2048^2), side by side in one run (all times are the process's
CPU seconds, ``time.process_time``: numpy and scikit-image run on one thread here, and on a shared
machine the CPU time is the stable figure):

* time of every property alone (4 angles, distance 1, 7 x 7 window, 32 grey levels, symmetric), best
  of ``--repeats`` rounds over all six (so a slow spell of a shared machine hits every property
  alike), and the ratio of the slowest property to the cheapest one;
* time of all six properties together, and scikit-image's ``graycomatrix``/``graycoprops`` loop timed
  on ``--sample`` random windows and **scaled** to every pixel (a full loop is ~1 ms per window, i.e.
  over an hour at 2048^2; ``--full_max`` runs the whole loop up to that side instead);
* peak memory above the start of ``texture_channels`` (tracemalloc: numpy buffers), for all six
  properties and for the training default (contrast + homogeneity, angle-averaged), next to the size
  of the float32 output it must return;
* the largest absolute difference to scikit-image on the sampled interior windows.

Band: B4 of the real Landsat-8 sample scene (603 x 627) reflected to the size when
``eolab samples fetch`` has run, else seeded noise.

    python benchmarks/glacier_glcm.py [--sizes 512 1024 2048] [--sample 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import time
import tracemalloc

import numpy as np
from glacier_seg.texture import (
    GLCM_PROPERTIES,
    GLCMConfig,
    glcm_features,
    glcm_features_skimage_loop,
    quantize,
    texture_channels,
)

ANGLES = np.deg2rad([0, 45, 90, 135])


def load_band(size: int) -> tuple[np.ndarray, str]:
    try:
        from eo_common.raster import read_raster
        from eo_common.samples import have_samples, sample_path

        if have_samples("landsat8_scene"):
            band = read_raster(sample_path("landsat8_scene") / "l8_B4.tif", bands=[1]).array[0]
            band = band.astype(np.float32)
            pad = [(0, max(0, size - n)) for n in band.shape]
            band = np.pad(band, pad, mode="reflect")  # numpy reflects repeatedly if needed
            return band[:size, :size], "Landsat-8 B4 (real sample scene, reflected to size)"
    except ImportError:
        pass
    return np.random.default_rng(0).normal(size=(size, size)).astype(np.float32), "seeded noise"


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def peak_mib(fn) -> float:
    gc.collect()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--sample", type=int, default=1000, help="windows timed with scikit-image")
    parser.add_argument("--full_max", type=int, default=0,
                        help="run the whole scikit-image loop up to this side (0: never)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="repeats per timing (best taken)")
    args = parser.parse_args()
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"{os.cpu_count()} CPU cores visible, load average at start {' '.join(load)}")
    kw = dict(window=args.window, levels=args.levels, distances=(1,), angles=ANGLES)
    six = GLCMConfig(window=args.window, levels=args.levels, properties=GLCM_PROPERTIES)
    default = GLCMConfig(window=args.window, levels=args.levels)
    rows = []
    for size in args.sizes:
        band, source = load_band(size)
        q = quantize(band, args.levels)
        per_prop = dict.fromkeys(GLCM_PROPERTIES, float("inf"))
        for _ in range(args.repeats):  # rounds over all properties: a slow spell hits them alike
            for p in GLCM_PROPERTIES:
                t = best_time(lambda p=p, q=q: glcm_features(q, properties=(p,), **kw), 1)
                per_prop[p] = min(per_prop[p], t)
        fast = None

        def run_all(q: np.ndarray = q) -> None:
            nonlocal fast
            fast = glcm_features(q, properties=GLCM_PROPERTIES, **kw)

        t_all = best_time(run_all, args.repeats)
        half = args.window // 2
        glcm_features_skimage_loop(q, properties=GLCM_PROPERTIES, pixels=[(half, half)], **kw)
        if size <= args.full_max:
            t0 = time.process_time()
            slow = glcm_features_skimage_loop(q, properties=GLCM_PROPERTIES, **kw)
            t_skimage = time.process_time() - t0
            inner = (slice(None),) * 3 + (slice(half, -half), slice(half, -half))
            diff = np.abs(fast[inner] - slow[inner]).max()
            how = "full loop"
        else:
            rng = np.random.default_rng(size)
            r = rng.integers(half, size - half, args.sample)
            c = rng.integers(half, size - half, args.sample)
            t0 = time.process_time()
            slow = glcm_features_skimage_loop(
                q, properties=GLCM_PROPERTIES, pixels=list(zip(r.tolist(), c.tolist())), **kw
            )
            t_skimage = (time.process_time() - t0) / args.sample * size * size
            diff = np.abs(fast[:, :, :, r, c] - slow).max()
            how = f"{args.sample} windows timed, scaled to {size * size}"
        del fast
        mem_six = peak_mib(lambda band=band: texture_channels(band, six))
        mem_default = peak_mib(lambda band=band: texture_channels(band, default))
        rows.append((size, per_prop, t_all, t_skimage, how, diff, mem_six, mem_default))
        cheapest = min(per_prop.values())
        print(
            f"  {size}: all six {t_all:.2f} s, scikit-image {t_skimage:.0f} s ({how}), "
            f"ASM/cheapest {per_prop['ASM'] / cheapest:.1f}x, peak {mem_six:.0f} MiB ({source})",
            flush=True,
        )
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average at end {' '.join(load)}\n")
    print(f"window {args.window}, {args.levels} levels, distance 1, angles 0/45/90/135, symmetric")
    print("\nper-property CPU time, s (best of repeats):\n")
    print("| size | " + " | ".join(GLCM_PROPERTIES) + " | slowest / cheapest |")
    print("|---|" + "---|" * (len(GLCM_PROPERTIES) + 1))
    for size, per_prop, *_ in rows:
        vals = " | ".join(f"{per_prop[p]:.3f}" for p in GLCM_PROPERTIES)
        ratio = max(per_prop.values()) / min(per_prop.values())
        print(f"| {size}^2 | {vals} | {ratio:.1f}x |")
    print("\nall six properties vs scikit-image, and memory of texture_channels:\n")
    print(
        "| size | vectorised CPU s | CPU s / Mpx | scikit-image CPU s | speed-up | max abs diff | "
        "peak MiB, six props (output MiB) | peak MiB, default 2 props (output MiB) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for size, _, t_all, t_sk, how, diff, m6, m2 in rows:
        mpx = size * size / 1e6
        out6, out2 = 6 * size * size * 4 / 2**20, 2 * size * size * 4 / 2**20
        print(
            f"| {size}^2 | {t_all:.2f} | {t_all / mpx:.2f} | {t_sk:.0f} ({how}) | "
            f"{t_sk / t_all:.0f}x | {diff:.1e} | {m6:.0f} ({out6:.0f}) | {m2:.0f} ({out2:.0f}) |"
        )


if __name__ == "__main__":
    main()
