"""GLCM texture: vectorised glacier_seg.texture vs scikit-image's per-window loop, side by side.

Same settings for both: a 512 x 512 band (B4 of the real Landsat-8 sample scene when
``eolab samples fetch`` has run, else seeded noise), quantised to 32 grey levels, 7 x 7 window,
distance 1, angles 0/45/90/135 degrees, symmetric normed GLCM, all six properties.

scikit-image needs ~1 ms per window here, so by default its loop runs on a random sample of
windows and its full-image time is extrapolated (per-window cost x 262144); ``--full`` runs the
whole loop (minutes). Accuracy: the maximum absolute difference per property over the sampled
(or, with ``--full``, all) interior pixels, i.e. pixels whose window lies inside the image.

    python benchmarks/glacier_glcm.py [--sample 3000] [--full] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from glacier_seg.texture import GLCM_PROPERTIES, glcm_features, glcm_features_skimage_loop, quantize


def load_band(size: int) -> tuple[np.ndarray, str]:
    try:
        from eo_common.raster import read_raster
        from eo_common.samples import have_samples, sample_path

        if have_samples("landsat8_scene"):
            band = read_raster(sample_path("landsat8_scene") / "l8_B4.tif", bands=[1]).array[0]
            if min(band.shape) >= size:
                return band[:size, :size].astype(np.float32), "Landsat-8 B4 (real sample scene)"
    except ImportError:
        pass
    return np.random.default_rng(0).normal(size=(size, size)).astype(np.float32), "seeded noise"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--window", type=int, default=7)
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--sample", type=int, default=3000, help="windows timed with scikit-image")
    parser.add_argument("--full", action="store_true", help="run scikit-image on every pixel")
    parser.add_argument(
        "--repeats", type=int, default=3, help="repeats of the vectorised run (best taken)"
    )
    args = parser.parse_args()

    band, source = load_band(args.size)
    q = quantize(band, args.levels)
    angles = np.deg2rad([0, 45, 90, 135])
    kw = dict(
        window=args.window,
        levels=args.levels,
        distances=(1,),
        angles=angles,
        properties=GLCM_PROPERTIES,
    )

    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        fast = glcm_features(q, **kw)
        times.append(time.perf_counter() - t0)
    t_fast = min(times)

    half = args.window // 2
    n_pix = args.size * args.size
    if args.full:
        t0 = time.perf_counter()
        slow = glcm_features_skimage_loop(q, **kw)
        t_slow = time.perf_counter() - t0
        inner = (slice(None),) * 3 + (slice(half, -half), slice(half, -half))
        diff = np.abs(fast[inner] - slow[inner]).reshape(len(GLCM_PROPERTIES), -1).max(1)
        n_cmp, mode = (args.size - 2 * half) ** 2, "full loop"
    else:
        rng = np.random.default_rng(0)
        rows = rng.integers(half, args.size - half, args.sample)
        cols = rng.integers(half, args.size - half, args.sample)
        pixels = list(zip(rows.tolist(), cols.tolist()))
        t0 = time.perf_counter()
        slow = glcm_features_skimage_loop(q, pixels=pixels, **kw)
        t_sample = time.perf_counter() - t0
        t_slow = t_sample / args.sample * n_pix
        diff = np.abs(fast[:, :, :, rows, cols] - slow).reshape(len(GLCM_PROPERTIES), -1).max(1)
        n_cmp, mode = args.sample, f"extrapolated from {args.sample} windows ({t_sample:.1f} s)"

    print(
        f"machine: {platform.processor() or platform.machine()}, shared CPU; band: {source}, {args.size}x{args.size}"
    )
    print(
        f"settings: window {args.window}, {args.levels} levels, distance 1, angles 0/45/90/135, 6 properties"
    )
    print(f"vectorised (glacier_seg.texture): {t_fast:.3f} s (best of {args.repeats})")
    print(f"scikit-image per-window loop:     {t_slow:.1f} s ({mode})")
    print(f"speed-up: {t_slow / t_fast:.0f}x")
    print(f"max |difference| over {n_cmp} interior pixels x 4 angles:")
    for name, d in zip(GLCM_PROPERTIES, diff):
        print(f"  {name:14s} {d:.2e}")
    print("within 1e-6:", bool((diff <= 1e-6).all()))


if __name__ == "__main__":
    main()
