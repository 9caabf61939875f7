"""Benchmark: oversampling + SMOTE preparation time on 1,000 training tiles.

1,000 tiles of 64 x 64 px with 6 standardised bands and ordinal label maps (smooth fields cut into
low/medium/high, a minority of the tiles medium-rich). Times, side by side:
duplication up to the target fraction (``oversample_by_duplication``), SMOTE with k = 5 and 0.5
synthetic tiles per medium-rich tile (``smote_tiles``, imbalanced-learn underneath), and writing the
result (``TileSet.save``). Peak traced Python/NumPy memory with tracemalloc.

Run:  .venv/bin/python benchmarks/risk_smote.py [--tiles 1000] [--tile 64] [--bands 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from scipy import ndimage


def make_tiles(n: int, tile: int, bands: int, seed: int = 0):
    from risk_mapping.tiles import TileSet

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((n, tile, tile)), sigma=(0, 6, 6))
    field = (field - field.mean(axis=(1, 2), keepdims=True)) / field.std(axis=(1, 2), keepdims=True)
    shift = rng.normal(0, 0.8, (n, 1, 1))
    y = np.digitize(field + shift, [0.1, 0.9]).astype(np.uint8)
    y[rng.random(y.shape) < 0.01] = 255
    x = (rng.standard_normal((n, bands, tile, tile)) * 0.5 + y[:, None]).astype(np.float32)
    return TileSet(x, y, [f"t{i:05d}" for i in range(n)], np.zeros((n, 4), np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--bands", type=int, default=6)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.5)
    args = parser.parse_args()
    from risk_mapping.oversample import (
        class_fractions,
        oversample_by_duplication,
        rich_mask,
        smote_tiles,
    )

    t0 = time.perf_counter()
    import imblearn.over_sampling  # noqa: F401  (import time is reported separately)

    import_s = time.perf_counter() - t0
    tiles = make_tiles(args.tiles, args.tile, args.bands)
    n_rich = int(rich_mask(tiles.y, 1, 0.3).sum())
    before = class_fractions(tiles.y)["fractions"][1]
    tracemalloc.start()
    t0 = time.perf_counter()
    dup, info = oversample_by_duplication(tiles, 1, max(0.3, before + 0.03), 0.3)
    dup_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = smote_tiles(tiles, cls=1, threshold=0.3, k_neighbors=args.k, ratio=args.ratio, seed=0)
    smote_s = time.perf_counter() - t0
    out = dup.concat(result.tiles)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out.save(Path(tmp) / "tiles_train.npz")
        save_s = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    mb = tiles.x.nbytes / 2**20
    print(
        f"{args.tiles} tiles of {args.tile} px x {args.bands} bands ({mb:.0f} MB), {n_rich} medium-rich (>= 30 % class 1)"
    )
    print(result.message)
    print(f"{'step':<34} {'seconds':>8}")
    print(f"{'import imbalanced-learn (once)':<34} {import_s:>8.2f}")
    steps = [
        (f"duplication (+{info['n_duplicated']} tiles)", dup_s),
        (f"SMOTE k={args.k} (+{len(result.tiles)} tiles)", smote_s),
        (f"save {len(out)} tiles (.npz)", save_s),
    ]
    for name, seconds in steps:
        print(f"{name:<34} {seconds:>8.2f}")
    print(
        f"total without import: {dup_s + smote_s + save_s:.2f} s; peak traced memory {peak / 2**20:.0f} MB "
        f"({peak / 2**20 / mb:.1f}x the input tiles)"
    )
    print(
        f"class-1 fraction {before:.3f} -> {info['fraction_after']:.3f} (duplication) -> "
        f"{class_fractions(out.y)['fractions'][1]:.3f} (with SMOTE)"
    )


if __name__ == "__main__":
    main()
