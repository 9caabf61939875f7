"""Fake risk stack in the layout risk_mapping reads: ``stack.tif`` + ``labels.tif`` on one grid.

``stack.tif``: float32 terrain and environment features (elevation m, slope deg, aspect deg,
curvature, NDVI, rainfall mm; further bands are smooth noise ``feature<k>``), nodata -9999 on a
border and a small interior hole. ``labels.tif``: uint8 ordinal risk 0 = low, 1 = medium, 2 = high
(about 50 / 33 / 17 %) from a score that grows with slope and rainfall and falls with NDVI; 255 =
ignore on the stack's nodata and on a few unlabelled patches. UTM 32N, 30 m pixels.

Run ``python risk_stack.py OUT [--size 128] [--bands 6]`` to write one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from affine import Affine
from eo_common.raster import write_raster
from scipy import ndimage

BAND_NAMES = ("elevation", "slope", "aspect", "curvature", "ndvi", "rainfall")


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Spatially correlated noise scaled to [0, 1] (Gaussian-filtered white noise)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    lo, hi = field.min(), field.max()
    return (field - lo) / (hi - lo + 1e-12)


def make_risk_stack(
    root: str | Path, size: int = 128, bands: int = 6, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``root/stack.tif`` and ``root/labels.tif``; return their paths.

    Identical, value for value, to ``eo_common.testing.make_fake_risk_stack`` (the generator the
    release-0.1.0 checkpoint in ``tests/data/release_0_1_0`` was trained on).
    """
    if size < 16 or bands < 1:
        raise ValueError(f"size >= 16 and bands >= 1 needed, got {size}, {bands}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    shape = (size, size)
    elevation = 300.0 + 2200.0 * smooth_field(rng, shape, size / 8)
    dz_dy, dz_dx = np.gradient(elevation, 30.0)
    slope = np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))
    aspect = (np.degrees(np.arctan2(-dz_dx, dz_dy)) + 360.0) % 360.0
    curvature = ndimage.laplace(elevation) / 30.0**2
    ndvi = -0.1 + 1.0 * smooth_field(rng, shape, size / 12)
    rainfall = 600.0 + 1800.0 * smooth_field(rng, shape, size / 4)
    features = [elevation, slope, aspect, curvature, ndvi, rainfall]
    names = list(BAND_NAMES)
    for k in range(len(features), bands):
        features.append(smooth_field(rng, shape, size / 16))
        names.append(f"feature{k + 1}")
    stack = np.stack(features[:bands]).astype(np.float32)
    names = names[:bands]

    def z(x: np.ndarray) -> np.ndarray:
        return (x - x.mean()) / (x.std() + 1e-12)

    score = z(slope) + 0.7 * z(rainfall) - 0.8 * z(ndvi) + 0.3 * rng.standard_normal(shape)
    low, high = np.quantile(score, [0.5, 0.83])
    labels = np.digitize(score, [low, high]).astype(np.uint8)

    nodata = np.zeros(shape, dtype=bool)
    border = max(2, size // 32)
    nodata[:border] = nodata[-border:] = True
    nodata[:, :border] = nodata[:, -border:] = True
    cy, cx = int(size * 0.6), int(size * 0.3)
    yy, xx = np.mgrid[:size, :size]
    nodata |= (yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 20) ** 2
    stack[:, nodata] = -9999.0
    unlabelled = smooth_field(rng, shape, size / 16) > 0.9
    labels[nodata | unlabelled] = 255

    transform = Affine(30.0, 0.0, 450000.0, 0.0, -30.0, 5250000.0)
    stack_path = write_raster(
        root / "stack.tif", stack, crs="EPSG:32632", transform=transform, nodata=-9999.0,
        band_names=names,
    )  # fmt: skip
    labels_path = write_raster(
        root / "labels.tif", labels[None], crs="EPSG:32632", transform=transform, nodata=255,
        band_names=["risk"],
    )  # fmt: skip
    return stack_path, labels_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bands", type=int, default=6)
    args = parser.parse_args()
    print(*make_risk_stack(args.out, args.size, args.bands))
